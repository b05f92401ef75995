//! Preference losses (DESIGN.md §4 "DPO") and the Bradley-Terry loss on fixed log-probs, with
//! every expected number worked out in the comments. softplus(x) = ln(1 + eˣ) = −logσ(−x).

use crate::common::*;
use rto_algo::{bradley_terry_loss, PreferenceInputs, PreferenceLoss};
use tch::Tensor;

/// Two pairs.
///   row 0: πw = −10, πl = −12, refw = −11,  refl = −11.5, |yw| = 4, |yl| = 4
///   row 1: πw = −6,  πl = −4.5, refw = −6.5, refl = −5.5, |yw| = 2, |yl| = 5
/// chosen ratio  πw − refw = [1.0, 0.5]
/// rejected ratio πl − refl = [−0.5, 1.0]
/// Δ = [1.5, −0.5]
struct Fixture {
    pw: Tensor,
    pl: Tensor,
    rw: Tensor,
    rl: Tensor,
    lw: Tensor,
    ll: Tensor,
}

fn fixture() -> Fixture {
    Fixture {
        pw: t1(&[-10.0, -6.0]),
        pl: t1(&[-12.0, -4.5]),
        rw: t1(&[-11.0, -6.5]),
        rl: t1(&[-11.5, -5.5]),
        lw: Tensor::from_slice(&[4i64, 2]),
        ll: Tensor::from_slice(&[4i64, 5]),
    }
}

fn inputs(f: &Fixture) -> PreferenceInputs<'_> {
    PreferenceInputs {
        policy_chosen: &f.pw,
        policy_rejected: &f.pl,
        reference_chosen: Some(&f.rw),
        reference_rejected: Some(&f.rl),
        chosen_lengths: &f.lw,
        rejected_lengths: &f.ll,
    }
}

const TOL: f64 = 1e-5;

#[test]
fn dpo_sigmoid_loss_and_trl_metrics() {
    let f = fixture();
    let out = PreferenceLoss::Sigmoid { beta: 0.1, label_smoothing: 0.0 }.compute(&inputs(&f)).unwrap();
    // βΔ = [0.15, −0.05]; loss = −logσ(βΔ) = softplus(−βΔ)
    //   row 0: ln(1 + e^−0.15) = ln(1.860708) = 0.620957
    //   row 1: ln(1 + e^0.05)  = ln(2.051271) = 0.718460
    assert_all_close(&v1(&out.losses), &[0.620957, 0.718460], TOL, "losses");
    assert_close(scalar(&out.loss), (0.620957 + 0.718460) / 2.0, TOL, "mean loss");
    // rewards = β·(π − ref): chosen 0.1·[1.0, 0.5] = [0.1, 0.05]; rejected 0.1·[−0.5, 1.0]
    assert_all_close(&v1(&out.rewards_chosen), &[0.1, 0.05], TOL, "rewards/chosen");
    assert_all_close(&v1(&out.rewards_rejected), &[-0.05, 0.1], TOL, "rewards/rejected");
    // margins = [0.1 + 0.05, 0.05 − 0.1] = [0.15, −0.05]; accuracy = chosen > rejected
    assert_all_close(&v1(&out.margins), &[0.15, -0.05], TOL, "rewards/margins");
    assert_eq!(v1(&out.accuracies), vec![1.0, 0.0]);
    let m = out.metrics();
    assert_close(m.accuracies, 0.5, 1e-12, "mean accuracy");
    assert_close(m.margins, 0.05, TOL, "mean margin");
    assert_close(m.rewards_chosen, 0.075, TOL, "mean chosen reward");
    assert_close(m.loss, 0.669708, TOL, "metrics loss");
    let json = serde_json::to_value(m).unwrap();
    assert!(json.get("rewards/accuracies").is_some(), "TRL metric names: {json}");
}

#[test]
fn cdpo_label_smoothing() {
    let f = fixture();
    let out = PreferenceLoss::Sigmoid { beta: 0.1, label_smoothing: 0.1 }.compute(&inputs(&f)).unwrap();
    // −(1−ε)logσ(x) − ε·logσ(−x) = 0.9·softplus(−x) + 0.1·softplus(x), x = βΔ
    //   row 0: 0.9·0.620957 + 0.1·0.770957 = 0.558861 + 0.077096 = 0.635957
    //   row 1: 0.9·0.718460 + 0.1·0.668460 = 0.646614 + 0.066846 = 0.713460
    // (equivalently softplus(−x) + ε·x: 0.620957 + 0.015, 0.718460 − 0.005)
    assert_all_close(&v1(&out.losses), &[0.635957, 0.713460], TOL, "cDPO losses");
    // the rewards do not depend on ε
    assert_all_close(&v1(&out.rewards_chosen), &[0.1, 0.05], TOL, "rewards/chosen");
}

#[test]
fn ipo_uses_summed_logprob_delta() {
    let f = fixture();
    let out = PreferenceLoss::Ipo { beta: 0.1 }.compute(&inputs(&f)).unwrap();
    // 1/(2β) = 5: (1.5 − 5)² = 12.25, (−0.5 − 5)² = 30.25; mean 21.25
    assert_all_close(&v1(&out.losses), &[12.25, 30.25], TOL, "IPO losses");
    assert_close(scalar(&out.loss), 21.25, TOL, "IPO mean");
    assert_eq!(v1(&out.accuracies), vec![1.0, 0.0]);
}

#[test]
fn simpo_is_length_normalised_and_reference_free() {
    let f = fixture();
    let no_ref = PreferenceInputs { reference_chosen: None, reference_rejected: None, ..inputs(&f) };
    let out = PreferenceLoss::Simpo { beta: 2.5, gamma: 0.5 }.compute(&no_ref).unwrap();
    // avg_w = [−10/4, −6/2] = [−2.5, −3.0]; avg_l = [−12/4, −4.5/5] = [−3.0, −0.9]
    // logits = β(avg_w − avg_l) − γ = [2.5·0.5 − 0.5, 2.5·(−2.1) − 0.5] = [0.75, −5.75]
    //   row 0: softplus(−0.75) = ln(1.472367) = 0.386871
    //   row 1: softplus(5.75)  = 5.75 + ln(1 + e^−5.75) = 5.75 + 0.003178 = 5.753178
    assert_all_close(&v1(&out.losses), &[0.386871, 5.753178], TOL, "SimPO losses");
    // implicit rewards β·avg: chosen [−6.25, −7.5], rejected [−7.5, −2.25]
    assert_all_close(&v1(&out.rewards_chosen), &[-6.25, -7.5], TOL, "SimPO rewards/chosen");
    assert_all_close(&v1(&out.rewards_rejected), &[-7.5, -2.25], TOL, "SimPO rewards/rejected");
    assert_all_close(&v1(&out.margins), &[1.25, -5.25], TOL, "SimPO margins");
    assert_eq!(v1(&out.accuracies), vec![1.0, 0.0]);
}

#[test]
fn rdpo_length_term() {
    let f = fixture();
    let out = PreferenceLoss::Rdpo { beta: 0.1, alpha: 0.01 }.compute(&inputs(&f)).unwrap();
    // |yw| − |yl| = [0, −3]; logits = βΔ − α·gap = [0.15 − 0, −0.05 + 0.03] = [0.15, −0.02]
    //   row 0: softplus(−0.15) = 0.620957 (same as DPO: equal lengths)
    //   row 1: softplus(0.02) = ln(1 + e^0.02) = ln(2.020201) = 0.703197
    assert_all_close(&v1(&out.losses), &[0.620957, 0.703197], TOL, "R-DPO losses");
    assert_all_close(&v1(&out.rewards_chosen), &[0.1, 0.05], TOL, "R-DPO rewards/chosen");
}

#[test]
fn losses_backpropagate_into_policy_logprobs() {
    let f = fixture();
    let pw = f.pw.set_requires_grad(true);
    let inp = PreferenceInputs { policy_chosen: &pw, ..inputs(&f) };
    let out = PreferenceLoss::default().compute(&inp).unwrap();
    out.loss.backward();
    // d/dπw mean(softplus(−βΔ)) = −β·σ(−βΔ)/B: row 0 −0.1·σ(−0.15)/2 = −0.1·0.462570/2
    assert_all_close(&v1(&pw.grad()), &[-0.0231285, -0.1 * 0.512497 / 2.0], 1e-6, "dL/dπw");
}

#[test]
fn invalid_settings_and_inputs_name_the_problem() {
    let f = fixture();
    let e = PreferenceLoss::Sigmoid { beta: -0.1, label_smoothing: 0.0 }.validate().unwrap_err();
    assert!(err_text(e).contains("beta"));
    let e = PreferenceLoss::Sigmoid { beta: 0.1, label_smoothing: 0.5 }.validate().unwrap_err();
    assert!(err_text(e).contains("label_smoothing"));
    let e = PreferenceLoss::Simpo { beta: 2.5, gamma: -1.0 }.validate().unwrap_err();
    assert!(err_text(e).contains("gamma"));
    let e = PreferenceLoss::Rdpo { beta: 0.1, alpha: f64::NAN }.validate().unwrap_err();
    assert!(err_text(e).contains("alpha"));
    let no_ref = PreferenceInputs { reference_chosen: None, ..inputs(&f) };
    let e = PreferenceLoss::default().compute(&no_ref).unwrap_err();
    assert!(err_text(e).contains("reference"));
    let short = t1(&[-1.0]);
    let bad = PreferenceInputs { policy_rejected: &short, ..inputs(&f) };
    let e = PreferenceLoss::default().compute(&bad).unwrap_err();
    assert!(err_text(e).contains("policy_rejected"));
}

#[test]
fn preference_loss_settings_round_trip_through_serde() {
    let loss: PreferenceLoss = serde_json::from_str(r#"{"type": "simpo", "beta": 2.5, "gamma": 0.5}"#).unwrap();
    assert_eq!(loss, PreferenceLoss::Simpo { beta: 2.5, gamma: 0.5 });
    let dpo: PreferenceLoss = serde_json::from_str(r#"{"type": "sigmoid", "beta": 0.1}"#).unwrap();
    assert_eq!(dpo, PreferenceLoss::default());
    assert!(serde_json::from_str::<PreferenceLoss>(r#"{"type": "ipo", "beta": 0.1, "betta": 1}"#).is_err());
    let back: PreferenceLoss = serde_json::from_str(&serde_json::to_string(&loss).unwrap()).unwrap();
    assert_eq!(back, loss);
}

#[test]
fn bradley_terry_loss_with_and_without_margin() {
    let rw = t1(&[2.0, 0.5, -1.0]);
    let rl = t1(&[1.0, 1.5, -1.0]);
    let out = bradley_terry_loss(&rw, &rl, None).unwrap();
    // r_w − r_l = [1, −1, 0]; −logσ(d) = softplus(−d) = [0.313262, 1.313262, ln 2 = 0.693147]
    assert_all_close(&v1(&out.losses), &[0.313262, 1.313262, std::f64::consts::LN_2], TOL, "BT losses");
    assert_close(scalar(&out.loss), (0.313262 + 1.313262 + std::f64::consts::LN_2) / 3.0, TOL, "BT mean");
    // accuracy: strictly r_w > r_l (a tie is not correct)
    assert_eq!(v1(&out.accuracies), vec![1.0, 0.0, 0.0]);
    assert_all_close(&v1(&out.margins), &[1.0, -1.0, 0.0], TOL, "BT margins");

    let margin = t1(&[0.5, 0.0, 1.0]);
    let out = bradley_terry_loss(&rw, &rl, Some(&margin)).unwrap();
    // d − m = [0.5, −1, −1]: softplus(−0.5) = 0.474077, softplus(1) = 1.313262 (twice)
    assert_all_close(&v1(&out.losses), &[0.474077, 1.313262, 1.313262], TOL, "BT margin losses");
    assert_eq!(v1(&out.accuracies), vec![1.0, 0.0, 0.0], "accuracy ignores the margin");

    let e = bradley_terry_loss(&rw, &t1(&[1.0]), None).unwrap_err();
    assert!(err_text(e).contains("r_rejected"));
}
