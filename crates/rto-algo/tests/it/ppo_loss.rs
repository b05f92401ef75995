//! PPO policy and value losses, explained variance and the KL controllers (DESIGN.md §4
//! "PPO"), with clipping active on both sides.

use crate::common::*;
use rto_algo::{explained_variance, policy_loss, value_loss, AdaptiveKl, ClipRange, KlController, LossAggregation};
use tch::Tensor;

const TOL: f64 = 1e-5;

/// ρ = exp(logp_new − logp_old) per token, ε = 0.2 (range [0.8, 1.2]):
///   row 0: ρ = [1.5, 0.5, 1.1],  A = [1.0, −2.0, 0.5]
///   row 1: ρ = [0.7, 1.0, pad],  A = [1.0, −1.0, 5.0 (garbage)]
fn policy_fixture() -> (Tensor, Tensor, Tensor, Tensor) {
    let old = t2(&[[-1.0, -2.0, -0.5], [-0.3, -1.0, -9.0]]);
    let log_ratio = t2(&[[1.5f64.ln(), 0.5f64.ln(), 1.1f64.ln()], [0.7f64.ln(), 0.0, 3.0]]);
    let new = &old + log_ratio;
    let adv = t2(&[[1.0, -2.0, 0.5], [1.0, -1.0, 5.0]]);
    let mask = t2(&[[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]);
    (new, old, adv, mask)
}

#[test]
fn policy_loss_clips_on_both_sides() {
    let (new, old, adv, mask) = policy_fixture();
    let new = new.set_requires_grad(true);
    let out =
        policy_loss(&new, &old, &adv, &mask, ClipRange::symmetric(0.2), LossAggregation::SeqMeanTokenMean).unwrap();
    // per token −min(ρA, clip(ρ)A):
    //   r0t0 ρ=1.5 A=1:  ρA = 1.5,  clip 1.2·1 = 1.2    → min 1.2  → −1.2  (clipped, upper side)
    //   r0t1 ρ=0.5 A=−2: ρA = −1.0, clip 0.8·−2 = −1.6  → min −1.6 →  1.6  (clipped, lower side)
    //   r0t2 ρ=1.1 A=0.5: 0.55 both                     →          → −0.55
    //   r1t0 ρ=0.7 A=1:  ρA = 0.7,  clip 0.8            → min 0.7  → −0.7  (outside, not binding)
    //   r1t1 ρ=1.0 A=−1: −1 both                        →          →  1.0
    // per sequence: row 0 (−1.2 + 1.6 − 0.55)/3 = −0.05; row 1 (−0.7 + 1.0)/2 = 0.15
    // batch: (−0.05 + 0.15)/2 = 0.05
    assert_close(scalar(&out.loss), 0.05, TOL, "policy loss");
    // clipped term strictly smaller on 2 of 5 real tokens
    assert_close(out.clipfrac, 0.4, 1e-6, "clipfrac");
    // k3 = (ρ−1) − ln ρ: 0.094535, 0.193147, 0.004690, 0.056675, 0 → sum 0.349047, /5
    assert_close(out.approx_kl, 0.0698094, 1e-6, "approx_kl");
    // gradient: where the clipped branch binds it is 0; elsewhere d(−ρA)/dlogp = −ρA, divided
    // by the row's token count and by B = 2:
    //   r0t2: −0.55/(3·2) = −0.0916667; r1t0: −0.7/(2·2) = −0.175; r1t1: 1.0/(2·2) = 0.25
    out.loss.backward();
    assert_rows_close(&new.grad(), &[[0.0, 0.0, -0.0916667], [-0.175, 0.25, 0.0]], 1e-6, "dL/dlogp_new");
}

#[test]
fn policy_loss_rejects_bad_clip_and_shapes() {
    let (new, old, adv, mask) = policy_fixture();
    let agg = LossAggregation::SeqMeanTokenMean;
    let e = policy_loss(&new, &old, &adv, &mask, ClipRange::symmetric(0.0), agg).unwrap_err();
    assert!(err_text(e).contains("eps_clip"));
    let e = policy_loss(&new, &old, &adv, &mask, ClipRange { low: 0.2, high: -0.1 }, agg).unwrap_err();
    assert!(err_text(e).contains("clip_high"));
    let e = policy_loss(&new, &old, &t2(&[[1.0, 1.0, 1.0]]), &mask, ClipRange::symmetric(0.2), agg).unwrap_err();
    assert!(err_text(e).contains("advantages"));
    let zero = LossAggregation::SeqMeanTokenSumNorm { constant: 0.0 };
    assert!(err_text(policy_loss(&new, &old, &adv, &mask, ClipRange::symmetric(0.2), zero).unwrap_err())
        .contains("loss constant"));
}

#[test]
fn clip_higher_lets_a_rising_token_with_positive_advantage_through() {
    let (new, old, adv, mask) = policy_fixture();
    // DAPO's range [1 − 0.2, 1 + 0.6] = [0.8, 1.6]:
    //   r0t0 ρ=1.5 A=1: 1.5 < 1.6, no longer clipped → −1.5; r0t1 still clipped below → 1.6;
    //   r0t2 −0.55; r1t0 −0.7; r1t1 1.0
    // per sequence: row 0 (−1.5 + 1.6 − 0.55)/3 = −0.15; row 1 0.15 → batch 0
    let clip = ClipRange { low: 0.2, high: 0.6 };
    let out = policy_loss(&new, &old, &adv, &mask, clip, LossAggregation::SeqMeanTokenMean).unwrap();
    assert_close(scalar(&out.loss), 0.0, TOL, "clip-higher loss");
    assert_close(out.clipfrac, 0.2, 1e-6, "only the lower clip binds (1 of 5)");
}

#[test]
fn loss_aggregations_and_their_micro_batch_weights() {
    let (new, old, adv, mask) = policy_fixture();
    // per-token losses at ε = 0.2 (see policy_loss_clips_on_both_sides):
    //   row 0 [−1.2, 1.6, −0.55] (Σ −0.15), row 1 [−0.7, 1.0] (Σ 0.3); all: Σ 0.15 over 5 tokens
    let clip = ClipRange::symmetric(0.2);
    let loss = |agg: LossAggregation, rows: &[i64]| {
        let pick = |t: &Tensor| t.index_select(0, &Tensor::from_slice(rows));
        scalar(&policy_loss(&pick(&new), &pick(&old), &pick(&adv), &pick(&mask), clip, agg).unwrap().loss)
    };
    let sum_norm = LossAggregation::SeqMeanTokenSumNorm { constant: 4.0 };
    // token mean 0.15/5 = 0.03; Dr. GRPO's Σ/(B·C) = 0.15/(2·4) = 0.01875
    assert_close(loss(LossAggregation::TokenMean, &[0, 1]), 0.03, TOL, "token mean");
    assert_close(loss(sum_norm, &[0, 1]), 0.01875, TOL, "constant normalizer");
    // micro batches of one row each, weighted, add up to the train batch's loss
    for (agg, whole) in
        [(LossAggregation::SeqMeanTokenMean, 0.05), (LossAggregation::TokenMean, 0.03), (sum_norm, 0.01875)]
    {
        let (w0, w1) = (agg.micro_weight((1, 3), (2, 5)), agg.micro_weight((1, 2), (2, 5)));
        assert_close(w0 * loss(agg, &[0]) + w1 * loss(agg, &[1]), whole, TOL, &format!("{agg:?} over micro batches"));
    }
    assert_eq!(LossAggregation::TokenMean.micro_weight((1, 3), (2, 5)), 0.6);
    assert_eq!(LossAggregation::SeqMeanTokenMean.micro_weight((1, 3), (2, 5)), 0.5);
}

#[test]
fn value_loss_with_clipping() {
    //   token   V_old  V_new   R    (V−R)²   clip(V, V_old±0.2)  (Vc−R)²   max   clipped larger?
    //   r0t0    1.0    1.5    2.0   0.25     1.2                 0.64      0.64  yes
    //   r0t1    1.0    1.5    1.0   0.25     1.2                 0.04      0.25  no
    //   r0t2    0.0   −0.5    0.5   1.0     −0.2                 0.49      1.0   no
    //   r1t0    2.0    1.0    0.0   1.0      1.8                 3.24      3.24  yes
    //   r1t1,2  padding (garbage)
    let old = t2(&[[1.0, 1.0, 0.0], [2.0, 5.0, 5.0]]);
    let new = t2(&[[1.5, 1.5, -0.5], [1.0, -5.0, 8.0]]);
    let ret = t2(&[[2.0, 1.0, 0.5], [0.0, 9.0, 9.0]]);
    let mask = t2(&[[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]);
    let out = value_loss(&new, &old, &ret, &mask, Some(0.2)).unwrap();
    // per sequence: row 0 (0.64 + 0.25 + 1.0)/3 = 0.63; row 1 3.24; 0.5·(0.63 + 3.24)/2 = 0.9675
    assert_close(scalar(&out.loss), 0.9675, TOL, "clipped value loss");
    assert_close(out.clipfrac, 0.5, 1e-6, "value clipfrac (2 of 4)");
    // unclipped: row 0 (0.25 + 0.25 + 1.0)/3 = 0.5; row 1 1.0; 0.5·(0.5 + 1.0)/2 = 0.375
    let out = value_loss(&new, &old, &ret, &mask, None).unwrap();
    assert_close(scalar(&out.loss), 0.375, TOL, "unclipped value loss");
    assert_eq!(out.clipfrac, 0.0);
    assert!(err_text(value_loss(&new, &old, &ret, &mask, Some(-1.0)).unwrap_err()).contains("clip"));
}

#[test]
fn explained_variance_over_unmasked_tokens() {
    let values = t2(&[[1.0, 2.0], [3.0, 50.0]]);
    let returns = t2(&[[1.0, 2.0], [4.0, -50.0]]);
    let mask = t2(&[[1.0, 1.0], [1.0, 0.0]]);
    // R = [1, 2, 4]: mean 7/3, Var = (16 + 1 + 25)/27 = 42/27
    // R − V = [0, 0, 1]: mean 1/3, Var = (1 + 1 + 4)/27 = 6/27
    // EV = 1 − 6/42 = 6/7 = 0.857143
    assert_close(explained_variance(&values, &returns, &mask), 6.0 / 7.0, 1e-5, "explained variance");
    let flat = t2(&[[1.0, 1.0]]);
    assert!(explained_variance(&flat, &flat, &t2(&[[1.0, 1.0]])).is_nan());
}

#[test]
fn adaptive_kl_controller_follows_ziegler() {
    let mut kl = AdaptiveKl { coef: 0.1, target: 6.0, horizon: 10_000.0 };
    // kl = 9: error 9/6 − 1 = 0.5 → clipped to 0.2; × (1 + 0.2·1000/10000) = ×1.02 → 0.102
    assert_close(kl.update(9.0, 1000).unwrap(), 0.102, 1e-12, "after high KL");
    // kl = 5.4: error 0.9 − 1 = −0.1; × (1 − 0.1·500/10000) = ×0.995 → 0.10149
    assert_close(kl.update(5.4, 500).unwrap(), 0.10149, 1e-12, "after low KL");
    assert!(kl.update(f64::NAN, 10).is_err());
    let mut fixed = KlController::default();
    assert_eq!(fixed.coef(), 0.01);
    assert_eq!(fixed.update(100.0, 1000).unwrap(), 0.01, "fixed never moves");
    let adaptive: KlController =
        serde_json::from_str(r#"{"type": "adaptive", "coef": 0.05, "target": 3.0, "horizon": 5000}"#).unwrap();
    assert_eq!(adaptive, KlController::Adaptive(AdaptiveKl { coef: 0.05, target: 3.0, horizon: 5000.0 }));
    let bad = KlController::Adaptive(AdaptiveKl { target: 0.0, ..AdaptiveKl::default() });
    assert!(err_text(bad.validate().unwrap_err()).contains("target"));
}
