//! The group estimators (GRPO, Dr. GRPO, RLOO, REINFORCE++-baseline) on hand-computed
//! examples with dense token rewards, K = 2 and K = 3, and a group whose responses all earned
//! the same.

use crate::common::*;
use rto_algo::{centered_returns, group_baseline, GroupBaseline, GroupEstimator};
use tch::Tensor;

const TOL: f64 = 1e-5;

/// Two groups of K = 2 (rows 0–1, rows 2–3), dense part d and outcome o (on the last token):
///   row 0: H = 3, d = [0.1, −0.1, 0.3], o = 1.0 → rewards [0.1, −0.1, 1.3]
///   row 1: H = 2, d = [0.2, 0.2],       o = 0.0 → rewards [0.2, 0.2, NaN (padding)]
///   row 2: H = 2, d = 0,                o = 0.5 → rewards [0.0, 0.5, 7 (padding)]
///   row 3: H = 3, d = 0,                o = 0.5 → rewards [0.0, 0.0, 0.5]
/// Group 1 (rows 2, 3) has equal returns (0.5) and no dense reward: nothing to compare.
fn batch() -> (Tensor, Tensor, Tensor) {
    let rewards = t2(&[[0.1, -0.1, 1.3], [0.2, 0.2, f64::NAN], [0.0, 0.5, 7.0], [0.0, 0.0, 0.5]]);
    let outcome = t1(&[1.0, 0.0, 0.5, 0.5]);
    let mask = t2(&[[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]);
    (rewards, outcome, mask)
}

fn advantages(estimator: GroupEstimator, gamma: f64) -> Tensor {
    let (r, o, m) = batch();
    estimator.advantages(&r, &o, &m, 2, gamma).unwrap()
}

// Group 0, mean baseline: m_0 = (0.1 − 0.1 + 0.3)/3 = 0.1, m_1 = 0.4/2 = 0.2 → b^d = 0.15;
// b^o = (1 + 0)/2 = 0.5. Shifted rewards:
//   row 0: d − 0.15 = [−0.05, −0.25, 0.15], + (1 − 0.5) on the last token → [−0.05, −0.25, 0.65]
//   row 1: d − 0.15 = [0.05, 0.05],         + (0 − 0.5)                   → [0.05, −0.45]
// Returns-to-go (γ = 1): row 0 [0.35, 0.40, 0.65], row 1 [−0.40, −0.45].
// Check at t = 1: R_0 − 3·b^d − b^o = 1.3 − 0.45 − 0.5 = 0.35; R_1 − 2·b^d − b^o = 0.4 − 0.3 − 0.5 = −0.4.
// Group 1: m = 0 and o − b^o = 0 → N = 0 everywhere.
const N_MEAN: [[f64; 3]; 4] = [[0.35, 0.40, 0.65], [-0.40, -0.45, 0.0], [0.0; 3], [0.0; 3]];

#[test]
fn dr_grpo_is_the_mean_centered_return_to_go() {
    assert_rows_close(&advantages(GroupEstimator::DrGrpo, 1.0), &N_MEAN, TOL, "dr-grpo");
    // γ = 0.5 on the same shifted rewards:
    //   row 0: t3 0.65; t2 −0.25 + 0.5·0.65 = 0.075; t1 −0.05 + 0.5·0.075 = −0.0125
    //   row 1: t2 −0.45; t1 0.05 + 0.5·(−0.45) = −0.175
    let want = [[-0.0125, 0.075, 0.65], [-0.175, -0.45, 0.0], [0.0; 3], [0.0; 3]];
    assert_rows_close(&advantages(GroupEstimator::DrGrpo, 0.5), &want, TOL, "dr-grpo γ = 0.5");
}

#[test]
fn grpo_divides_by_the_group_scale_and_a_flat_group_gets_zero_not_nan() {
    // σ_0² = (1/(K−1))·[(0.35² + 0.40² + 0.65²)/3 + (0.40² + 0.45²)/2]
    //      = 0.705/3 + 0.3625/2 = 0.235 + 0.18125 = 0.41625 → σ_0 = 0.6451744
    // A = N/(σ_0 + 1e-6): row 0 [0.542488, 0.619986, 1.007478], row 1 [−0.619986, −0.697485]
    // Group 1: σ_1 = 0 and N = 0 → 0/(0 + ε) = 0.
    let want = [[0.542488, 0.619986, 1.007478], [-0.619986, -0.697485, 0.0], [0.0; 3], [0.0; 3]];
    let a = advantages(GroupEstimator::Grpo, 1.0);
    assert_rows_close(&a, &want, TOL, "grpo");
    assert!(bool::try_from(a.isfinite().all()).unwrap(), "no NaN from a zero std: {a}");
}

#[test]
fn rloo_compares_each_response_with_the_other_one() {
    // K = 2, leave-one-out: row 0's baselines are row 1's values and vice versa.
    //   row 0: b^d = m_1 = 0.2, b^o = 0 → [−0.1, −0.3, 0.1 + 1] = [−0.1, −0.3, 1.1] → rtg [0.7, 0.8, 1.1]
    //   row 1: b^d = m_0 = 0.1, b^o = 1 → [0.1, 0.1 − 1] = [0.1, −0.9]             → rtg [−0.8, −0.9]
    // At t = 1: R_0 − 3·m_1 − o_1 = 1.3 − 0.6 − 0 = 0.7; R_1 − 2·m_0 − o_0 = 0.4 − 0.2 − 1 = −0.8.
    let want = [[0.7, 0.8, 1.1], [-0.8, -0.9, 0.0], [0.0; 3], [0.0; 3]];
    assert_rows_close(&advantages(GroupEstimator::Rloo, 1.0), &want, TOL, "rloo");
}

#[test]
fn reinforce_plus_plus_baseline_whitens_the_centered_returns_over_the_batch() {
    // N (mean baseline) over the 10 real tokens: 0.35, 0.40, 0.65, −0.40, −0.45 and five 0s.
    // mean 0.55/10 = 0.055; population variance 0.103725 (Σ(x − 0.055)² = 1.03725);
    // A = (N − 0.055)/√(0.103725 + 1e-8): row 0 [0.915968, 1.071217, 1.847461],
    // row 1 [−1.412764, −1.568013]; the flat group's tokens −0.055/0.322063 = −0.170774.
    let flat = -0.170774;
    let want = [[0.915968, 1.071217, 1.847461], [-1.412764, -1.568013, 0.0], [flat, flat, 0.0], [flat; 3]];
    assert_rows_close(&advantages(GroupEstimator::ReinforcePlusPlusBaseline, 1.0), &want, TOL, "reinforce++-baseline");
}

#[test]
fn with_an_outcome_reward_only_grpo_and_rloo_are_the_published_sequence_forms() {
    // K = 3, no dense reward, lengths 1, 2, 3: o = [1, 2, 6].
    let rewards = t2(&[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 6.0]]);
    let outcome = t1(&[1.0, 2.0, 6.0]);
    let mask = t2(&[[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]);
    // GRPO: mean 3, unbiased std √((4 + 1 + 9)/2) = √7 = 2.645751 → (o − 3)/std on every token:
    // [−0.755929, −0.377964, 1.133893]
    let a = GroupEstimator::Grpo.advantages(&rewards, &outcome, &mask, 3, 1.0).unwrap();
    let (x, y, z) = (-0.755929, -0.377964, 1.133893);
    assert_rows_close(&a, &[[x, 0.0, 0.0], [y, y, 0.0], [z, z, z]], TOL, "grpo, outcome only");
    // RLOO: o_i − mean of the two others: 1 − 4 = −3, 2 − 3.5 = −1.5, 6 − 1.5 = 4.5
    let a = GroupEstimator::Rloo.advantages(&rewards, &outcome, &mask, 3, 1.0).unwrap();
    assert_rows_close(&a, &[[-3.0, 0.0, 0.0], [-1.5, -1.5, 0.0], [4.5, 4.5, 4.5]], TOL, "rloo, outcome only");
}

#[test]
fn baselines_and_their_errors() {
    let x = t1(&[1.0, 2.0, 6.0, 0.0, 0.0, 3.0]);
    // groups {1, 2, 6} and {0, 0, 3}: means 3 and 1; leave-one-out (Σ − x)/2
    assert_all_close(
        &v1(&group_baseline(&x, 3, GroupBaseline::Mean).unwrap()),
        &[3.0, 3.0, 3.0, 1.0, 1.0, 1.0],
        TOL,
        "mean",
    );
    let loo = group_baseline(&x, 3, GroupBaseline::LeaveOneOut).unwrap();
    assert_all_close(&v1(&loo), &[4.0, 3.5, 1.5, 1.5, 1.5, 0.0], TOL, "leave-one-out");
    let e = group_baseline(&x, 1, GroupBaseline::Mean).unwrap_err();
    assert!(err_text(e).contains("at least 2 responses per prompt"));
    let e = group_baseline(&x, 4, GroupBaseline::Mean).unwrap_err();
    assert!(err_text(e).contains("6 responses do not split into groups of 4"));
    let (r, _, m) = batch();
    let e = centered_returns(&r, &t1(&[1.0, 2.0]), &m, 2, GroupBaseline::Mean, 1.0).unwrap_err();
    assert!(err_text(e).contains("outcome"));
}
