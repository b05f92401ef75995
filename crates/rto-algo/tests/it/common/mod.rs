//! Small helpers shared by the test files: build f32 tensors from literals, read them back as
//! f64, and compare with a tolerance that names what differed.
#![allow(dead_code)]

use tch::{Kind, Tensor};

/// A [B] f32 tensor.
pub fn t1(values: &[f64]) -> Tensor {
    Tensor::from_slice(values).to_kind(Kind::Float)
}

/// A [B, R] f32 tensor from rows of equal width.
pub fn t2<const R: usize>(rows: &[[f64; R]]) -> Tensor {
    let flat: Vec<f64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_slice(&flat).view([rows.len() as i64, R as i64]).to_kind(Kind::Float)
}

pub fn scalar(t: &Tensor) -> f64 {
    t.to_kind(Kind::Double).double_value(&[])
}

pub fn v1(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
}

pub fn v2(t: &Tensor) -> Vec<Vec<f64>> {
    Vec::<Vec<f64>>::try_from(t.to_kind(Kind::Double)).unwrap()
}

pub fn assert_close(got: f64, want: f64, tol: f64, what: &str) {
    assert!((got - want).abs() <= tol, "{what}: got {got}, want {want} (tol {tol})");
}

pub fn assert_all_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol, "{what}[{i}]: got {g}, want {w} (tol {tol}); all: {got:?}");
    }
}

/// Compares a [B, R] tensor row by row.
pub fn assert_rows_close<const R: usize>(got: &Tensor, want: &[[f64; R]], tol: f64, what: &str) {
    let rows = v2(got);
    assert_eq!(rows.len(), want.len(), "{what}: rows");
    for (b, (g, w)) in rows.iter().zip(want).enumerate() {
        assert_all_close(g, w, tol, &format!("{what} row {b}"));
    }
}

/// The error's full message chain, for asserting on what it names.
pub fn err_text(e: anyhow::Error) -> String {
    format!("{e:#}")
}
