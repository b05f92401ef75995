//! GAE, whitening and REINFORCE++ returns (DESIGN.md §4 "PPO") on hand-computed examples.

use crate::common::*;
use rto_algo::{discounted_returns, gae, reinforce_plus_plus_returns, whiten, GaeSettings};
use tch::Tensor;

/// Three steps. Row 1 has two real tokens; its padded column holds garbage (99, 77).
///   rewards row 0: [1.0, 0.0, 2.0]   values row 0: [0.5, 1.0, 1.5]   mask [1, 1, 1]
///   rewards row 1: [0.5, 1.0, 99]    values row 1: [0.2, 0.4, 77]    mask [1, 1, 0]
fn fixture() -> (Tensor, Tensor, Tensor) {
    (
        t2(&[[1.0, 0.0, 2.0], [0.5, 1.0, 99.0]]),
        t2(&[[0.5, 1.0, 1.5], [0.2, 0.4, 77.0]]),
        t2(&[[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]),
    )
}

const TOL: f64 = 1e-5;

#[test]
fn gae_with_discount_and_lambda_below_one() {
    let (r, v, m) = fixture();
    let (adv, ret) = gae(&r, &v, &m, 0.9, 0.8).unwrap();
    // γ = 0.9, γλ = 0.72; δ_t = r_t + γV_{t+1} − V_t, V after the last real token = 0.
    // row 0: δ2 = 2 + 0 − 1.5 = 0.5                   A2 = 0.5
    //        δ1 = 0 + 0.9·1.5 − 1.0 = 0.35            A1 = 0.35 + 0.72·0.5  = 0.71
    //        δ0 = 1 + 0.9·1.0 − 0.5 = 1.4             A0 = 1.4 + 0.72·0.71  = 1.9112
    // row 1: column 2 is padding                      A2 = 0
    //        δ1 = 1.0 + 0.9·0 − 0.4 = 0.6             A1 = 0.6   (V_2 = 77 does not leak)
    //        δ0 = 0.5 + 0.9·0.4 − 0.2 = 0.66          A0 = 0.66 + 0.72·0.6 = 1.092
    assert_rows_close(&adv, &[[1.9112, 0.71, 0.5], [1.092, 0.6, 0.0]], TOL, "advantages");
    // returns = A + V: row 0 [2.4112, 1.71, 2.0]; row 1 [1.292, 1.0, 0 (padding)]
    assert_rows_close(&ret, &[[2.4112, 1.71, 2.0], [1.292, 1.0, 0.0]], TOL, "returns");
    assert_eq!(adv.double_value(&[1, 2]), 0.0);
    assert_eq!(ret.double_value(&[1, 2]), 0.0);
}

#[test]
fn gae_with_the_papers_gamma_one_lambda_095() {
    let (r, v, m) = fixture();
    let s = GaeSettings::default();
    assert_eq!((s.gamma, s.lambda), (1.0, 0.95));
    let (adv, ret) = gae(&r, &v, &m, s.gamma, s.lambda).unwrap();
    // γλ = 0.95
    // row 0: δ2 = 2 − 1.5 = 0.5              A2 = 0.5
    //        δ1 = 0 + 1.5 − 1.0 = 0.5        A1 = 0.5 + 0.95·0.5   = 0.975
    //        δ0 = 1 + 1.0 − 0.5 = 1.5        A0 = 1.5 + 0.95·0.975 = 2.42625
    // row 1: δ1 = 1.0 − 0.4 = 0.6            A1 = 0.6
    //        δ0 = 0.5 + 0.4 − 0.2 = 0.7      A0 = 0.7 + 0.95·0.6   = 1.27
    assert_rows_close(&adv, &[[2.42625, 0.975, 0.5], [1.27, 0.6, 0.0]], TOL, "advantages");
    assert_rows_close(&ret, &[[2.92625, 1.975, 2.0], [1.47, 1.0, 0.0]], TOL, "returns");
}

#[test]
fn gae_rejects_out_of_range_settings() {
    let (r, v, m) = fixture();
    assert!(err_text(gae(&r, &v, &m, 1.0, 1.5).unwrap_err()).contains("lambda"));
    assert!(err_text(gae(&r, &v, &m, -0.1, 0.9).unwrap_err()).contains("gamma"));
    assert!(err_text(GaeSettings { gamma: 1.0, lambda: -1.0 }.validate().unwrap_err()).contains("lambda"));
    let e = gae(&r, &t2(&[[0.0, 0.0]]), &m, 1.0, 0.95).unwrap_err();
    assert!(err_text(e).contains("values"));
}

#[test]
fn whitening_over_the_unmasked_buffer() {
    // unmasked entries 1, 2, 3, 4 (the 100s are padding)
    let x = t2(&[[1.0, 2.0, 3.0], [4.0, 100.0, 100.0]]);
    let m = t2(&[[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]);
    // mean 2.5; population variance (2.25 + 0.25 + 0.25 + 2.25)/4 = 1.25; std 1.118034
    // (x − 2.5)/1.118034 = [−1.341641, −0.447214, 0.447214, 1.341641]
    let w = whiten(&x, &m, true);
    assert_rows_close(&w, &[[-1.341641, -0.447214, 0.447214], [1.341641, 0.0, 0.0]], TOL, "whitened");
    let vals: Vec<f64> = [[0, 0], [0, 1], [0, 2], [1, 0]].iter().map(|i| w.double_value(i)).collect();
    let mean = vals.iter().sum::<f64>() / 4.0;
    let var = vals.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 4.0;
    assert_close(mean, 0.0, 1e-6, "mean after whitening");
    assert_close(var, 1.0, 1e-5, "variance after whitening");
    assert_eq!((w.double_value(&[1, 1]), w.double_value(&[1, 2])), (0.0, 0.0), "padding stays 0");
    // without shifting, the mean 2.5 is added back: [1.158359, 2.052786, 2.947214, 3.841641]
    let w = whiten(&x, &m, false);
    assert_rows_close(&w, &[[1.158359, 2.052786, 2.947214], [3.841641, 0.0, 0.0]], TOL, "unshifted");
}

#[test]
fn discounted_and_reinforce_plus_plus_returns() {
    let r = t2(&[[0.0, 0.0, 1.0], [0.5, -1.0, 7.0]]);
    let m = t2(&[[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]);
    // γ = 0.5: row 0 G2 = 1, G1 = 0 + 0.5·1 = 0.5, G0 = 0 + 0.5·0.5 = 0.25
    //          row 1 G2 = 0 (padding, the 7 is ignored), G1 = −1, G0 = 0.5 + 0.5·(−1) = 0
    let g = discounted_returns(&r, &m, 0.5).unwrap();
    assert_rows_close(&g, &[[0.25, 0.5, 1.0], [0.0, -1.0, 0.0]], TOL, "returns-to-go");
    // whitened over {0.25, 0.5, 1, 0, −1}: mean 0.75/5 = 0.15;
    // deviations [0.1, 0.35, 0.85, −0.15, −1.15], squares sum 2.2, variance 0.44, std 0.663325
    // → [0.150756, 0.527645, 1.281423, −0.226134, −1.733690]
    let a = reinforce_plus_plus_returns(&r, &m, 0.5).unwrap();
    assert_rows_close(&a, &[[0.150756, 0.527645, 1.281423], [-0.226134, -1.733690, 0.0]], TOL, "reinforce++");
    assert!(err_text(discounted_returns(&r, &m, 1.01).unwrap_err()).contains("gamma"));
}
