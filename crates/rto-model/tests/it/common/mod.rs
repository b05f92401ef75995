//! Test helpers: the venv's transformers as the independent reference.
#![allow(dead_code)]

use std::path::Path;
use tch::Tensor;

/// Runs tests/python/hf_reference.py with the project venv; panics with its stderr on failure.
pub fn reference(args: &[&str]) {
    rto_test_support::python_script("hf_reference.py", args);
}

/// A tiny transformers model of the given kind in a fresh temp dir.
pub fn hf_model(kind: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    reference(&["make", kind, dir.path().to_str().unwrap()]);
    dir
}

pub fn read_tensor(path: &Path, name: &str) -> Tensor {
    Tensor::read_safetensors(path)
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t)
        .unwrap_or_else(|| panic!("{name} not in {}", path.display()))
}

pub fn write_batch(path: &Path, ids: &[Vec<i64>], mask: &[Vec<i64>]) {
    let json = serde_json::json!({"input_ids": ids, "attention_mask": mask});
    std::fs::write(path, json.to_string()).unwrap();
}

/// max |a-b| / max |b| over the positions where `mask` is 1 (padding outputs are unspecified).
pub fn masked_rel_error(ours: &Tensor, theirs: &Tensor, mask: &Tensor) -> f64 {
    let m = mask.to_kind(tch::Kind::Float).unsqueeze(-1);
    let diff = ((ours - theirs).abs() * &m).max().double_value(&[]);
    let scale = (theirs.abs() * &m).max().double_value(&[]);
    diff / scale
}
