//! The masked reductions the losses are built on.

use crate::common::*;
use rto_algo::masked::{last_token_mask, masked_mean, masked_mean_per_row, masked_sum, masked_var};

#[test]
fn masked_reductions_ignore_padding_even_when_it_is_nan() {
    let x = t2(&[[1.0, 3.0, f64::NAN], [2.0, 100.0, f64::INFINITY]]);
    let m = t2(&[[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]);
    // unmasked: 1, 3, 2 → sum 6, mean 2, population variance (1 + 1 + 0)/3 = 2/3
    assert_close(scalar(&masked_sum(&x, &m)), 6.0, 1e-6, "sum");
    assert_close(scalar(&masked_mean(&x, &m)), 2.0, 1e-6, "mean");
    assert_close(scalar(&masked_var(&x, &m)), 2.0 / 3.0, 1e-6, "variance");
    // per row: (1 + 3)/2 = 2, 2/1 = 2
    assert_all_close(&v1(&masked_mean_per_row(&x, &m)), &[2.0, 2.0], 1e-6, "row means");
    // an empty mask gives 0, not NaN
    let empty = t2(&[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]);
    assert_eq!(scalar(&masked_mean(&x, &empty)), 0.0);
}

#[test]
fn last_token_mask_marks_the_rightmost_real_token() {
    let m = t2(&[[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]]);
    assert_rows_close(
        &last_token_mask(&m),
        &[[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
        0.0,
        "last token",
    );
}
