//! RTO token-reward composition (DESIGN.md §4 "RTO token reward") for every mode on one
//! fixture, with each per-token value worked out in the comments.

use crate::common::*;
use rto_algo::{compose, RewardMode, RewardWeights, TokenRewardInputs, TokenRewards};
use tch::Tensor;

/// Two responses, R = 4. Row 0 has 3 real tokens (column 3 is padding and holds garbage,
/// including a NaN, that must not leak); row 1 has 4.
///
///            col:     0      1      2      3
///   mask    row 0:    1      1      1      0
///           row 1:    1      1      1      1
///   lp_ref  row 0:  −2.0   −2.0   −0.5    0.0
///           row 1:  −1.5   −0.2   −3.0   −1.0
///   lp_dpo  row 0:  −0.5   −2.4   −0.6    9.0 (garbage)
///           row 1:  −1.0   −0.2   −5.0   −0.8
///   lp_pol  row 0:  −1.8   −2.1   −0.5    NaN (garbage)
///           row 1:  −1.0   −0.7   −2.0   −1.0
///   RM score: [2.0, −12.0]
///
/// Default weights β1 = 0.05, c = 0.05, β2 = 0.01, β3 = 1, rm_clamp = 10.
///
/// DPO term clip(0.05·(lp_dpo − lp_ref), ±0.05):
///   row 0: diffs [1.5, −0.4, −0.1]       → [0.075→0.05 (clipped), −0.02, −0.005]  Σ = 0.025
///   row 1: diffs [0.5, 0.0, −2.0, 0.2]   → [0.025, 0, −0.1→−0.05 (clipped), 0.01] Σ = −0.015
/// KL term −0.01·(lp_pol − lp_ref):
///   row 0: diffs [0.2, −0.1, 0.0]        → [−0.002, 0.001, 0]                     Σ = −0.001
///   row 1: diffs [0.5, −0.5, 1.0, 0.0]   → [−0.005, 0.005, −0.01, 0]              Σ = −0.01
/// Sentence term 1·clamp(r, ±10) = [2.0, −10.0] at the last real token (columns 2 and 3).
struct Fixture {
    lp_ref: Tensor,
    lp_dpo: Tensor,
    lp_pol: Tensor,
    score: Tensor,
    mask: Tensor,
}

fn fixture() -> Fixture {
    Fixture {
        lp_ref: t2(&[[-2.0, -2.0, -0.5, 0.0], [-1.5, -0.2, -3.0, -1.0]]),
        lp_dpo: t2(&[[-0.5, -2.4, -0.6, 9.0], [-1.0, -0.2, -5.0, -0.8]]),
        lp_pol: t2(&[[-1.8, -2.1, -0.5, f64::NAN], [-1.0, -0.7, -2.0, -1.0]]),
        score: t1(&[2.0, -12.0]),
        mask: t2(&[[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]]),
    }
}

fn inputs(f: &Fixture) -> TokenRewardInputs<'_> {
    TokenRewardInputs {
        logp_ref: &f.lp_ref,
        logp_dpo: Some(&f.lp_dpo),
        logp_policy: Some(&f.lp_pol),
        sentence_reward: Some(&f.score),
        mask: &f.mask,
    }
}

fn run(mode: RewardMode) -> TokenRewards {
    let f = fixture();
    compose(mode, &RewardWeights::default(), &inputs(&f)).unwrap()
}

const TOL: f64 = 1e-6;

/// Padding (row 0, column 3) is exactly +0.0 in every per-token output.
fn assert_padding_zero(out: &TokenRewards) {
    for (name, t) in [
        ("dpo_reward", &out.dpo_reward),
        ("kl_penalty", &out.kl_penalty),
        ("sentence_reward", &out.sentence_reward),
        ("reward", &out.reward),
    ] {
        let v = t.double_value(&[0, 3]);
        assert!(v == 0.0 && v.is_sign_positive(), "{name} padding: {v}");
    }
}

const KL: [[f64; 4]; 2] = [[-0.002, 0.001, 0.0, 0.0], [-0.005, 0.005, -0.01, 0.0]];
const SENTENCE: [[f64; 4]; 2] = [[0.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, -10.0]];

#[test]
fn rto_mode_all_terms() {
    let out = run(RewardMode::Rto);
    assert_rows_close(&out.dpo_reward, &[[0.05, -0.02, -0.005, 0.0], [0.025, 0.0, -0.05, 0.01]], TOL, "dpo");
    assert_rows_close(&out.kl_penalty, &KL, TOL, "kl");
    assert_rows_close(&out.sentence_reward, &SENTENCE, TOL, "sentence");
    // row 0: [0.05−0.002, −0.02+0.001, −0.005+0+2.0, 0] = [0.048, −0.019, 1.995, 0]
    // row 1: [0.025−0.005, 0+0.005, −0.05−0.01, 0.01+0−10] = [0.02, 0.005, −0.06, −9.99]
    assert_rows_close(&out.reward, &[[0.048, -0.019, 1.995, 0.0], [0.02, 0.005, -0.06, -9.99]], TOL, "reward");
    // dpo_return = [0.025, −0.015]; return = dpo + kl + sentence = [0.025−0.001+2, −0.015−0.01−10]
    assert_all_close(&v1(&out.dpo_return), &[0.025, -0.015], TOL, "dpo_return");
    assert_all_close(&v1(&out.total_return), &[2.024, -10.025], 1e-5, "return");
    assert_padding_zero(&out);
}

#[test]
fn ppo_mode_drops_the_dpo_term() {
    let out = run(RewardMode::Ppo);
    assert_rows_close(&out.dpo_reward, &[[0.0; 4]; 2], 0.0, "dpo");
    // reward = kl + sentence: row 0 [−0.002, 0.001, 2.0, 0]; row 1 [−0.005, 0.005, −0.01, −10]
    assert_rows_close(&out.reward, &[[-0.002, 0.001, 2.0, 0.0], [-0.005, 0.005, -0.01, -10.0]], TOL, "reward");
    assert_all_close(&v1(&out.dpo_return), &[0.0, 0.0], 0.0, "dpo_return");
    assert_all_close(&v1(&out.total_return), &[1.999, -10.01], 1e-5, "return");
    assert_padding_zero(&out);
}

#[test]
fn dpo_only_mode_drops_the_sentence_reward() {
    let out = run(RewardMode::DpoOnly);
    assert_rows_close(&out.sentence_reward, &[[0.0; 4]; 2], 0.0, "sentence");
    // reward = dpo + kl: row 0 [0.048, −0.019, −0.005, 0]; row 1 [0.02, 0.005, −0.06, 0.01]
    assert_rows_close(&out.reward, &[[0.048, -0.019, -0.005, 0.0], [0.02, 0.005, -0.06, 0.01]], TOL, "reward");
    // return = [0.025 − 0.001, −0.015 − 0.01]
    assert_all_close(&v1(&out.total_return), &[0.024, -0.025], TOL, "return");
    assert_padding_zero(&out);
}

#[test]
fn ddpo_mode_moves_the_dpo_total_to_the_last_token() {
    let out = run(RewardMode::Ddpo);
    // Σ clipped DPO = [0.025, −0.015], placed at columns 2 and 3
    assert_rows_close(&out.dpo_reward, &[[0.0, 0.0, 0.025, 0.0], [0.0, 0.0, 0.0, -0.015]], TOL, "dpo");
    // row 0: [−0.002, 0.001, 0.025+0+2.0, 0]; row 1: [−0.005, 0.005, −0.01, −0.015+0−10]
    assert_rows_close(&out.reward, &[[-0.002, 0.001, 2.025, 0.0], [-0.005, 0.005, -0.01, -10.015]], TOL, "reward");
    // same totals as RTO: only the timing of the DPO reward changed
    assert_all_close(&v1(&out.dpo_return), &[0.025, -0.015], TOL, "dpo_return");
    assert_all_close(&v1(&out.total_return), &[2.024, -10.025], 1e-5, "return");
    assert_padding_zero(&out);
}

#[test]
fn rs_ppo_mode_subtracts_the_dpo_total_at_the_last_token() {
    let out = run(RewardMode::RsPpo);
    // row 0: [0.05, −0.02, −0.005 − 0.025, 0] = [0.05, −0.02, −0.03, 0]
    // row 1: [0.025, 0, −0.05, 0.01 + 0.015] = [0.025, 0, −0.05, 0.025]
    assert_rows_close(&out.dpo_reward, &[[0.05, -0.02, -0.03, 0.0], [0.025, 0.0, -0.05, 0.025]], TOL, "dpo");
    // row 0: [0.048, −0.019, −0.03 + 0 + 2.0, 0]; row 1: [0.02, 0.005, −0.06, 0.025 + 0 − 10]
    assert_rows_close(&out.reward, &[[0.048, -0.019, 1.97, 0.0], [0.02, 0.005, -0.06, -9.975]], TOL, "reward");
    // shaping sums to zero, so the returns are PPO's
    assert_all_close(&v1(&out.dpo_return), &[0.0, 0.0], TOL, "dpo_return");
    assert_all_close(&v1(&out.total_return), &[1.999, -10.01], 1e-5, "return");
    assert_padding_zero(&out);
}

#[test]
fn reward_model_score_is_clamped_and_scaled() {
    let lp = t2(&[[-1.0, -1.0], [-1.0, -1.0], [-1.0, -1.0]]);
    let mask = t2(&[[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]]);
    let score = t1(&[25.0, -10.5, 3.0]);
    let inputs = TokenRewardInputs {
        logp_ref: &lp,
        logp_dpo: None,
        logp_policy: None,
        sentence_reward: Some(&score),
        mask: &mask,
    };
    let out = compose(RewardMode::Rto, &RewardWeights::default(), &inputs).unwrap();
    // clamp([25, −10.5, 3], ±10) = [10, −10, 3]; row 1's last real token is column 0
    assert_rows_close(&out.reward, &[[0.0, 10.0], [-10.0, 0.0], [0.0, 3.0]], 0.0, "clamped");
    // β3 = 0.5 and rm_clamp = +inf: 0.5·[25, −10.5, 3] = [12.5, −5.25, 1.5]
    let w = RewardWeights { beta3: 0.5, rm_clamp: f64::INFINITY, ..RewardWeights::default() };
    let out = compose(RewardMode::Rto, &w, &inputs).unwrap();
    assert_rows_close(&out.reward, &[[0.0, 12.5], [-5.25, 0.0], [0.0, 1.5]], 0.0, "unclamped");
    assert_all_close(&v1(&out.total_return), &[12.5, -5.25, 1.5], 0.0, "return");
}

#[test]
fn missing_sources_contribute_nothing() {
    let f = fixture();
    let only_ref = TokenRewardInputs { logp_dpo: None, logp_policy: None, sentence_reward: None, ..inputs(&f) };
    let out = compose(RewardMode::Rto, &RewardWeights::default(), &only_ref).unwrap();
    assert_rows_close(&out.reward, &[[0.0; 4]; 2], 0.0, "reward");
    // no policy yet (annotation before PPO): dpo + sentence only
    let no_policy = TokenRewardInputs { logp_policy: None, ..inputs(&f) };
    let out = compose(RewardMode::Rto, &RewardWeights::default(), &no_policy).unwrap();
    assert_rows_close(&out.reward, &[[0.05, -0.02, 1.995, 0.0], [0.025, 0.0, -0.05, -9.99]], TOL, "reward");
}

#[test]
fn weights_are_validated_with_the_field_named() {
    let f = fixture();
    let bad = RewardWeights { beta1: -0.05, ..RewardWeights::default() };
    assert!(err_text(bad.validate().unwrap_err()).contains("beta1"));
    let bad = RewardWeights { clip: 0.0, ..RewardWeights::default() };
    assert!(err_text(compose(RewardMode::Rto, &bad, &inputs(&f)).unwrap_err()).contains("clip"));
    // clip is irrelevant when the DPO term is off
    RewardWeights { beta1: 0.0, clip: 0.0, ..RewardWeights::default() }.validate().unwrap();
    let bad = RewardWeights { beta2: f64::NAN, ..RewardWeights::default() };
    assert!(err_text(bad.validate().unwrap_err()).contains("beta2"));
    let bad = RewardWeights { rm_clamp: 0.0, ..RewardWeights::default() };
    assert!(err_text(bad.validate().unwrap_err()).contains("rm_clamp"));
    let short = t1(&[1.0]);
    let bad_shape = TokenRewardInputs { sentence_reward: Some(&short), ..inputs(&f) };
    let e = compose(RewardMode::Rto, &RewardWeights::default(), &bad_shape).unwrap_err();
    assert!(err_text(e).contains("sentence_reward"));
}

#[test]
fn modes_parse_print_and_serialize_in_kebab_case() {
    for (name, mode) in [
        ("rto", RewardMode::Rto),
        ("ppo", RewardMode::Ppo),
        ("dpo-only", RewardMode::DpoOnly),
        ("ddpo", RewardMode::Ddpo),
        ("rs-ppo", RewardMode::RsPpo),
    ] {
        assert_eq!(name.parse::<RewardMode>().unwrap(), mode);
        assert_eq!(mode.to_string(), name);
        assert_eq!(serde_json::to_string(&mode).unwrap(), format!("\"{name}\""));
        assert_eq!(serde_json::from_str::<RewardMode>(&format!("\"{name}\"")).unwrap(), mode);
    }
    let e = "RTO".parse::<RewardMode>().unwrap_err();
    assert!(err_text(e).contains("rs-ppo"), "the error lists the valid names");
    let w: RewardWeights = serde_json::from_str(r#"{"beta1": 0.1}"#).unwrap();
    assert_eq!(w, RewardWeights { beta1: 0.1, ..RewardWeights::default() });
    assert!(serde_json::from_str::<RewardWeights>(r#"{"beta_1": 0.1}"#).is_err());
    let eff = RewardMode::Ppo.effective_weights(&RewardWeights::default());
    assert_eq!((eff.beta1, eff.beta3), (0.0, 1.0));
    let eff = RewardMode::DpoOnly.effective_weights(&RewardWeights::default());
    assert_eq!((eff.beta1, eff.beta3), (0.05, 0.0));
}
