//! End-to-end ppo-train runs on the fixture whose reward has a known optimum (emit TARGET, see
//! `ppo_common`): the policy must clearly move towards it in rto and in ppo mode within a
//! bounded number of iterations, and the run must leave what a user opens afterwards.

use crate::ppo_common::*;
use rto_data::token_table::{read_metadata, read_table};
use rto_stages::ppo::ResponseJudge;
use std::path::{Path, PathBuf};

/// Fraction of response tokens equal to TARGET in a rollout table folder.
fn target_fraction(table: &Path) -> f64 {
    let rows = read_table(table).unwrap();
    let tokens: Vec<u32> = rows.iter().flat_map(|(_, t)| t.iter().map(|t| t.token_id)).collect();
    tokens.iter().filter(|&&t| t as i64 == TARGET).count() as f64 / tokens.len() as f64
}

/// Trains with `extra` flags and checks that the reward model's score and the TARGET
/// frequency rise clearly; returns the output folder (kept alive by `dir`).
fn learns(dir: &Path, extra: &[(&str, &str)], iterations: usize) -> PathBuf {
    learns_judged(dir, extra, iterations, None)
}

fn learns_judged(dir: &Path, extra: &[(&str, &str)], iterations: usize, judge: Option<&dyn ResponseJudge>) -> PathBuf {
    let f = fixture(dir);
    let store = dir.join("store");
    let mut args = base_args(&f, &store);
    let n = iterations.to_string();
    let common = [
        ("--iterations", n.as_str()),
        ("--rollout-batch-size", "32"),
        ("--train-batch-size", "8"),
        ("--actor-lr", "1e-2"),
        ("--critic-lr", "1e-2"),
        ("--save-rollouts-every", "5"),
    ];
    for (flag, value) in common.iter().chain(extra) {
        args = set(args, flag, value);
    }
    run_judged(&args, judge).unwrap();
    let out = output(&store);
    let lines = metrics(&out);
    assert_eq!(lines.len(), iterations);
    for l in &lines {
        let get = |k: &str| l[k].as_f64().unwrap_or(f64::NAN);
        eprintln!(
            "{extra:?} it {:>2} rm_score {:.3} reward {:.3} kl {:.3} entropy {:.3} len {:.2}",
            l["iteration"],
            get("rm_score"),
            get("reward"),
            get("kl"),
            get("entropy"),
            get("response_length")
        );
    }
    let (early, late) = (mean_of(&lines, "rm_score", 0..3), mean_of(&lines, "rm_score", iterations - 3..iterations));
    let first = target_fraction(&out.join("rollouts/iter-000001"));
    let last = target_fraction(&out.join(format!("rollouts/iter-{iterations:06}")));
    assert!(late > early + 1.0, "{extra:?}: mean reward-model score should rise clearly: {early:.3} -> {late:.3}");
    assert!(last > first + 0.5, "{extra:?}: TARGET frequency should rise clearly: {first:.3} -> {last:.3}");
    out
}

#[test]
fn rto_mode_moves_the_policy_to_the_reward_optimum() {
    let dir = tempfile::tempdir().unwrap();
    let eval = prompts(&dir.path().join("eval.jsonl"), 8, 4, 11).display().to_string();
    let extra = [("--mode", "rto"), ("--eval-prompts", eval.as_str()), ("--eval-every", "5")];
    let out = learns_judged(dir.path(), &extra, 20, Some(&TargetJudge));
    // The policy is the folder itself; the critic keeps its score head.
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "critic/model.safetensors",
        "critic/tokenizer.json",
    ] {
        assert!(out.join(file).exists(), "{file} missing in {}", out.display());
    }
    let saved: Vec<String> = std::fs::read_dir(out.join("rollouts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(saved, ["iter-000001", "iter-000005", "iter-000010", "iter-000015", "iter-000020"]);
    let metadata = read_metadata(&out.join("rollouts/iter-000005/tokens.parquet")).unwrap();
    assert_eq!(
        (metadata["rto.mode"].as_str(), metadata["rto.beta1"].as_str(), metadata["rto.iteration"].as_str()),
        ("rto", "0.05", "5")
    );
    assert!(metadata.contains_key("rto.model.dpo") && metadata.contains_key("rto.tokenizer"));
    let rows = read_table(&out.join("rollouts/iter-000005")).unwrap();
    assert!(rows.iter().all(|(s, _)| s.iteration == Some(5) && (128..160).contains(&s.sample_id)));
    let gold = |it: &str| -> f64 {
        let rows = read_table(&out.join(format!("rollouts/iter-{it}"))).unwrap();
        rows.iter().map(|(s, _)| s.gold_score.unwrap()).sum::<f64>() / rows.len() as f64
    };
    assert!(gold("000020") > gold("000001") + 0.5, "the judge's gold_score column should follow the policy");
    let lines = metrics(&out);
    let evals: Vec<f64> = lines.iter().filter_map(|l| l["eval/judge_score"].as_f64()).collect();
    assert_eq!(evals.len(), 4, "eval every 5 iterations");
    assert!(evals[3] > 0.8 && lines[19]["judge_score"].as_f64().unwrap() > 0.8, "{evals:?}");
    for key in [
        "kl",
        "entropy",
        "policy_loss",
        "value_loss",
        "clipfrac",
        "approx_kl",
        "returns",
        "advantages",
        "values",
        "sentence_reward",
        "dpo_return",
        "response_length",
        "eos_fraction",
        "explained_variance",
        "actor_lr",
        "critic_lr",
        "kl_coef",
        "time/generation",
        "time/scoring",
        "time/training",
        "generation_tokens_per_s",
    ] {
        assert!(lines.iter().all(|l| l.get(key).is_some()), "metric `{key}` missing");
    }
}

#[test]
fn ppo_mode_moves_the_policy_to_the_reward_optimum() {
    let dir = tempfile::tempdir().unwrap();
    let out = learns(dir.path(), &[("--mode", "ppo"), ("--kl-target", "2")], 20);
    let lines = metrics(&out);
    assert!(lines.iter().all(|l| l.get("dpo_return").is_none()), "ppo mode reads no DPO model");
    let coefs: Vec<f64> = lines.iter().map(|l| l["kl_coef"].as_f64().unwrap()).collect();
    assert!(coefs.last() > coefs.first(), "the adaptive controller should raise β2 above a 2-nat target: {coefs:?}");
}

/// RTO with every model in bf16 (sampling, scoring, actor and critic with fp32 masters)
/// learns the planted optimum as the fp32 run does (`learns` checks the reward rises).
#[test]
fn rto_mode_in_bf16_moves_the_policy_to_the_reward_optimum() {
    let dir = tempfile::tempdir().unwrap();
    let out = learns(dir.path(), &[("--mode", "rto"), ("--bf16", "")], 20);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["dtype"], "float32", "--save-dtype auto keeps the input policy's dtype");
}

/// No critic folder, no critic metrics, and the manifest says why.
fn assert_critic_free(out: &Path, estimator: &str) {
    assert!(!out.join("critic").exists(), "{estimator}: a critic was saved");
    assert!(metrics(out).iter().all(|l| l.get("value_loss").is_none() && l.get("critic_lr").is_none()));
    let note = manifest(out)["metrics"]["critic"].as_str().unwrap().to_string();
    assert!(note.starts_with("none") && note.contains(estimator), "{note}");
    let inputs = manifest(out)["inputs"].as_array().unwrap().clone();
    assert!(inputs.iter().all(|i| i["role"] != "critic"), "{estimator}: a critic among the inputs {inputs:?}");
}

#[test]
fn reinforce_plus_plus_learns_without_a_critic() {
    let dir = tempfile::tempdir().unwrap();
    // `--algo` is the old name of --advantage-estimator.
    let out = learns(dir.path(), &[("--mode", "rto"), ("--algo", "reinforce++")], 20);
    assert_critic_free(&out, "reinforce++");
}

/// A group estimator at the other runs' sample count: 8 prompts × 4 responses = 32 per
/// iteration. Returns the output folder; checks the group columns of the rollout tables.
fn learns_in_groups(dir: &Path, estimator: &str, mode: &str, extra: &[(&str, &str)]) -> PathBuf {
    let mut flags = vec![
        ("--mode", mode),
        ("--advantage-estimator", estimator),
        ("--n-samples-per-prompt", "4"),
        ("--rollout-batch-size", "8"),
    ];
    flags.extend_from_slice(extra);
    let out = learns(dir, &flags, 20);
    assert_critic_free(&out, estimator);
    let rows = read_table(&out.join("rollouts/iter-000005")).unwrap();
    assert_eq!(rows.len(), 32);
    for (i, (sample, tokens)) in rows.iter().enumerate() {
        assert_eq!(sample.group, Some(i as u32 / 4), "four consecutive responses per prompt");
        assert_eq!(sample.prompt_id, rows[i / 4 * 4].0.prompt_id, "a group shares its prompt");
        assert!(tokens.iter().all(|t| t.advantage.is_some_and(f32::is_finite)));
    }
    let lines = metrics(&out);
    assert!(lines.iter().all(|l| l["samples"].as_u64() == Some(32 * l["iteration"].as_u64().unwrap())));
    assert!(lines.iter().all(|l| l.get("group_return_std").is_some() && l.get("flat_groups").is_some()));
    out
}

#[test]
fn grpo_moves_the_policy_to_the_reward_optimum_in_rto_mode() {
    let dir = tempfile::tempdir().unwrap();
    learns_in_groups(dir.path(), "grpo", "rto", &[]);
}

#[test]
fn grpo_moves_the_policy_to_the_reward_optimum_in_ppo_mode() {
    let dir = tempfile::tempdir().unwrap();
    // DAPO's loss options ride along: token mean and clip-higher.
    learns_in_groups(dir.path(), "grpo", "ppo", &[("--loss-agg-mode", "token-mean"), ("--clip-high", "0.28")]);
}

#[test]
fn rloo_moves_the_policy_to_the_reward_optimum_in_rto_mode() {
    let dir = tempfile::tempdir().unwrap();
    learns_in_groups(dir.path(), "rloo", "rto", &[]);
}

#[test]
fn rloo_moves_the_policy_to_the_reward_optimum_in_ppo_mode() {
    let dir = tempfile::tempdir().unwrap();
    learns_in_groups(dir.path(), "rloo", "ppo", &[("--loss-agg-mode", "seq-mean-token-sum-norm")]);
}

/// --packing-samples and --sampler-logprobs: the run still learns the optimum, times every
/// scoring model but the policy (no policy forward), and reports the padding share before and
/// after packing.
#[test]
fn packed_forwards_and_sampler_logprobs_learn_the_optimum() {
    let dir = tempfile::tempdir().unwrap();
    let fast = [("--mode", "rto"), ("--packing-samples", ""), ("--sampler-logprobs", "")];
    let out = learns(dir.path(), &fast, 20);
    let first = &metrics(&out)[0];
    for key in ["time/scoring/reference", "time/scoring/dpo", "time/scoring/reward_model", "time/scoring/critic"] {
        assert!(first.get(key).is_some(), "{key} missing from the metrics");
    }
    assert!(first.get("time/scoring/policy").is_none(), "--sampler-logprobs must not run a policy forward");
    let (share, unpacked) =
        (first["scoring_padding_share"].as_f64().unwrap(), first["scoring_padding_share_unpacked"].as_f64().unwrap());
    // Never more slots than the padded layout (this fixture's sequences nearly fill their rows,
    // so rows rarely take two; rto_model's packing tests show the saving on short sequences).
    assert!(share <= unpacked && unpacked > 0.0, "packing added padding: {share:.3} vs {unpacked:.3} unpacked");
}

/// With one optimizer step per iteration, the first of its update, whose old log-probs are its
/// own forward's under --sampler-logprobs, every ratio is exactly 1: approx_kl and clipfrac are
/// 0.0, not the few ulps between the sampler's log-probs and a training forward's.
#[test]
fn the_first_step_of_an_iteration_has_a_ratio_of_exactly_one_with_sampler_logprobs() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(dir.path());
    let store = dir.path().join("store");
    let mut args = base_args(&f, &store);
    for (flag, value) in [
        ("--iterations", "3"),
        ("--rollout-batch-size", "16"),
        ("--train-batch-size", "16"),
        ("--micro-batch-size", "4"),
        ("--actor-lr", "1e-2"),
        ("--sampler-logprobs", ""),
    ] {
        args = set(args, flag, value);
    }
    run_judged(&args, None).unwrap();
    for line in metrics(&output(&store)) {
        assert_eq!(line["approx_kl"].as_f64(), Some(0.0), "iteration {}: ratio not exactly 1", line["iteration"]);
        assert_eq!(line["clipfrac"].as_f64(), Some(0.0), "iteration {}", line["iteration"]);
    }
}
