//! dpo-train end to end on tiny random models: reported metrics against log-probs computed by
//! transformers, learning a planted preference and bad input
//! (kill-and-resume is tested on the binaries: rto-cli/tests/kill_resume.rs).

use crate::dpo_common::*;
use rto_model::{ChatTurn, TextTokenizer};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// Σ log π(response | prompt) per row, from transformers' logits of `model`.
fn hf_summed_logps(model: &Path, rows: &[(Vec<i64>, Vec<i64>)], work: &Path) -> Vec<f64> {
    let width = rows.iter().map(|(p, r)| p.len() + r.len()).max().unwrap();
    let (mut ids, mut mask) = (vec![], vec![]);
    for (prompt, response) in rows {
        let mut row: Vec<i64> = prompt.iter().chain(response).copied().collect();
        let real = row.len();
        row.resize(width, 0);
        ids.push(row);
        mask.push((0..width).map(|i| i64::from(i < real)).collect::<Vec<i64>>());
    }
    let batch = work.join("batch.json");
    std::fs::write(&batch, serde_json::json!({"input_ids": ids, "attention_mask": mask}).to_string()).unwrap();
    let out = work.join("logits.safetensors");
    reference(&["logits", model.to_str().unwrap(), batch.to_str().unwrap(), out.to_str().unwrap()]);
    let logits = Tensor::read_safetensors(&out).unwrap().into_iter().find(|(name, _)| name == "logits").unwrap().1;
    let logp = logits.log_softmax(-1, Kind::Double);
    rows.iter()
        .enumerate()
        .map(|(i, (prompt, response))| {
            let p = prompt.len() as i64;
            response.iter().enumerate().map(|(h, &y)| logp.double_value(&[i as i64, p - 1 + h as i64, y])).sum()
        })
        .collect()
}

fn encode(tokenizer: &TextTokenizer, prompt: &str, response: &str) -> (Vec<i64>, Vec<i64>) {
    let prompt = tokenizer.encode_prompt(&[ChatTurn { role: "user", content: prompt }]).unwrap();
    let mut response = tokenizer.encode(response, false).unwrap();
    response.push(tokenizer.eos_id.unwrap());
    (prompt, response)
}

/// (loss flags, expected loss of pair i, expected implicit reward of batch row j).
type Case<'a> = (&'a [&'a str], &'a dyn Fn(usize) -> f64, &'a dyn Fn(usize) -> f64);

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = v.collect();
    v.iter().sum::<f64>() / v.len() as f64
}

fn log_sigmoid(x: f64) -> f64 {
    -(-x).exp().ln_1p()
}

fn assert_close(name: &str, ours: f64, expected: f64) {
    let tol = 1e-4 + 1e-4 * expected.abs();
    assert!((ours - expected).abs() < tol, "{name}: dpo-train reported {ours}, hand-computed {expected}");
}

#[test]
fn reported_metrics_equal_hand_computed_values_from_transformers_logprobs() {
    let work = tempfile::tempdir().unwrap();
    let policy = tiny_model(&work.path().join("policy"), 11, 32, 2, 5.0);
    let reference_dir = tiny_model(&work.path().join("ref"), 12, 32, 2, 5.0);
    let texts = [
        ("name a color", "brown", "the lazy dog"),
        ("hello", "hello world", "jumps"),
        ("count", "a b c d", "quick fox over"),
    ];
    let data = write_jsonl(&work.path().join("pairs.jsonl"), &texts.map(|(p, w, l)| pair(p, w, l)));
    let tokenizer = TextTokenizer::from_dir(&policy).unwrap();
    let chosen: Vec<_> = texts.iter().map(|(p, w, _)| encode(&tokenizer, p, w)).collect();
    let rejected: Vec<_> = texts.iter().map(|(p, _, l)| encode(&tokenizer, p, l)).collect();
    let rows: Vec<_> = chosen.iter().chain(&rejected).cloned().collect();
    let pi = hf_summed_logps(&policy, &rows, work.path());
    let rf = hf_summed_logps(&reference_dir, &rows, work.path());
    let n = texts.len();
    let len = |i: usize| rows[i].1.len() as f64;
    let store = work.path().join("runs");
    let (store_s, policy_s, ref_s, data_s) =
        (store.to_str().unwrap(), policy.to_str().unwrap(), reference_dir.to_str().unwrap(), data.to_str().unwrap());
    let common = [
        "--model",
        policy_s,
        "--ref",
        ref_s,
        "--data",
        data_s,
        "--store",
        store_s,
        "--batch-size",
        "3",
        "--max-steps",
        "1",
        "--eval-fraction",
        "0",
        "--checkpoint-every",
        "0",
        "--learning-rate",
        "1e-3",
    ];

    let (beta, eps, gamma) = (0.5, 0.1, 0.3);
    let delta = |i: usize| (pi[i] - pi[n + i]) - (rf[i] - rf[n + i]);
    let cases: [Case; 3] = [
        (
            &["--loss", "sigmoid", "--beta", "0.5", "--label-smoothing", "0.1"],
            &(|i: usize| -(1.0 - eps) * log_sigmoid(beta * delta(i)) - eps * log_sigmoid(-beta * delta(i))),
            &(|j: usize| beta * (pi[j] - rf[j])),
        ),
        (
            &["--loss", "ipo", "--beta", "0.5"],
            &(|i: usize| (delta(i) - 1.0 / (2.0 * beta)).powi(2)),
            &(|j: usize| beta * (pi[j] - rf[j])),
        ),
        (
            &["--loss", "simpo", "--beta", "0.5", "--simpo-gamma", "0.3"],
            &(|i: usize| -log_sigmoid(beta * (pi[i] / len(i) - pi[n + i] / len(n + i)) - gamma)),
            &(|j: usize| beta * pi[j] / len(j)),
        ),
    ];
    for (flags, loss, reward) in &cases {
        let all: Vec<&str> = common.iter().chain(flags.iter()).copied().collect();
        run_dpo(&all).unwrap();
        let out = outputs(&store, "dpo")
            .into_iter()
            .find(|d| manifest(d)["settings"]["stage"]["loss"]["type"] == flags[1])
            .unwrap();
        let first = &metrics(&out)[0];
        let got =
            |key: &str| first[format!("train/{key}")].as_f64().unwrap_or_else(|| panic!("{key} missing in {first}"));
        assert_close("loss", got("loss"), mean((0..n).map(loss)));
        assert_close("rewards/chosen", got("rewards/chosen"), mean((0..n).map(reward)));
        assert_close("rewards/rejected", got("rewards/rejected"), mean((0..n).map(|i| reward(n + i))));
        assert_close("rewards/margins", got("rewards/margins"), mean((0..n).map(|i| reward(i) - reward(n + i))));
        assert_close(
            "rewards/accuracies",
            got("rewards/accuracies"),
            mean((0..n).map(|i| f64::from(u8::from(reward(i) > reward(n + i))))),
        );
        assert_close("logps/chosen", got("logps/chosen"), mean(pi[..n].iter().copied()));
        assert_close("logps/rejected", got("logps/rejected"), mean(pi[n..].iter().copied()));
        for key in ["lr", "grad_norm", "train/tokens_per_s"] {
            assert!(first[key].is_number(), "{key} missing in {first}");
        }
    }
    // Another loss and β reused the one reference pass (SimPO needed none).
    assert_eq!(outputs(&store, "dpo-ref-logps").len(), 1);
    assert_eq!(outputs(&store, "dpo").len(), 3);
}

/// dpo-train on 64 pairs whose preference a tiny policy can learn, 3 epochs, with `extra`
/// flags, in a store of its own under `work`; returns the output folder.
pub(crate) fn planted_preference_run(work: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let policy = work.join("policy");
    if !policy.exists() {
        tiny_model(&policy, 21, 32, 1, 1.0);
        write_jsonl(&work.join("pairs.jsonl"), &learnable_pairs(64, 7));
    }
    let (data, store) = (work.join("pairs.jsonl"), work.join(name));
    let mut args = vec![
        "--model",
        policy.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--learning-rate",
        "3e-3",
        "--beta",
        "0.1",
        "--batch-size",
        "8",
        "--epochs",
        "3",
        "--eval-fraction",
        "0.125",
        "--eval-every",
        "0",
        "--checkpoint-every",
        "0",
        "--warmup-ratio",
        "0",
    ];
    args.extend(extra);
    run_dpo(&args).unwrap();
    output(&store, "dpo")
}

#[test]
fn policy_learns_a_planted_preference() {
    let work = tempfile::tempdir().unwrap();
    let out = planted_preference_run(work.path(), "runs", &[]);
    let lines = metrics(&out);
    assert_eq!(lines.len(), 21, "7 steps per epoch x 3 epochs");
    let train_accuracy = tail_mean(&lines, "train/rewards/accuracies", 5);
    assert!(train_accuracy > 0.9, "train accuracy over the last 5 steps is {train_accuracy}");
    let eval_accuracy = lines.last().unwrap()["eval/rewards/accuracies"].as_f64().unwrap();
    assert!(eval_accuracy > 0.9, "eval accuracy {eval_accuracy}");
    assert!(tail_mean(&lines, "train/loss", 5) < lines[0]["train/loss"].as_f64().unwrap());
    // The output is an HF folder with the policy's tokenizer.
    for file in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "metrics.jsonl"] {
        assert!(out.join(file).exists(), "{file} missing in {}", out.display());
    }
    let summary = &manifest(&out)["metrics"];
    assert!(summary["ref_logps"].is_string() && summary["eval"]["rewards/accuracies"].is_number(), "{summary}");
}

/// `--bf16` (bf16 weights and activations, fp32 masters, fp32 log-probs and loss) follows the
/// fp32 run step for step: its loss stays within 0.02 of fp32's at every one of the 21 steps
/// (bf16 carries ~3 significant digits; the DPO loss starts at ln 2 ≈ 0.693), and it learns
/// the preference as well. The precision is in the key; the folder is saved in the input's
/// dtype (float32 here) unless --save-dtype says otherwise.
#[test]
fn bf16_training_tracks_fp32() {
    let work = tempfile::tempdir().unwrap();
    let fp32 = planted_preference_run(work.path(), "fp32", &[]);
    let bf16 = planted_preference_run(work.path(), "bf16", &["--bf16", "--save-dtype", "bfloat16"]);
    assert_ne!(fp32.file_name(), bf16.file_name(), "the precision is part of the key");
    let (a, b) = (metrics(&fp32), metrics(&bf16));
    assert_eq!(a.len(), b.len());
    let mut worst: f64 = 0.0;
    for (x, y) in a.iter().zip(&b) {
        let (lx, ly) = (x["train/loss"].as_f64().unwrap(), y["train/loss"].as_f64().unwrap());
        worst = worst.max((lx - ly).abs());
    }
    eprintln!("bf16 vs fp32 DPO: largest per-step loss difference {worst:.4}");
    assert!(worst <= 0.02, "bf16 loss strays {worst} from fp32's");
    let eval_accuracy = b.last().unwrap()["eval/rewards/accuracies"].as_f64().unwrap();
    assert!(eval_accuracy > 0.9, "bf16 eval accuracy {eval_accuracy}");
    let dtype = |dir: &Path| manifest_like(&dir.join("config.json"))["dtype"].clone();
    assert_eq!(dtype(&fp32), "float32");
    assert_eq!(dtype(&bf16), "bfloat16");
    let stored: Vec<(String, Tensor)> = Tensor::read_safetensors(bf16.join("model.safetensors")).unwrap();
    assert!(stored.iter().all(|(_, t)| t.kind() == Kind::BFloat16), "--save-dtype bfloat16 writes bf16 tensors");
}

fn manifest_like(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn bad_pairs_are_counted_skips_in_the_manifest() {
    let work = tempfile::tempdir().unwrap();
    let policy = tiny_model(&work.path().join("policy"), 41, 32, 1, 1.0);
    let long_prompt = "the quick brown fox ".repeat(10);
    let mut rows = learnable_pairs(4, 1);
    rows.push(pair("empty", "", "hello world"));
    rows.push(pair("same", "hello world", "hello world"));
    rows.push(pair(&long_prompt, "hello", "world"));
    let data = write_jsonl(&work.path().join("pairs.jsonl"), &rows);
    let store = work.path().join("runs");
    run_dpo(&[
        "--model",
        policy.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--max-prompt-len",
        "64",
        "--batch-size",
        "2",
        "--eval-fraction",
        "0",
        "--max-steps",
        "1",
    ])
    .unwrap();
    let expected = serde_json::json!({"empty_response": 1, "chosen_equals_rejected": 1, "prompt_too_long": 1});
    for stage in ["dpo", "dpo-ref-logps"] {
        let dataset = &manifest(&output(&store, stage))["metrics"]["dataset"];
        assert_eq!(dataset["skipped"], expected, "{stage}: {dataset}");
        assert_eq!(dataset["rows"], 7);
    }
}

#[test]
fn a_dataset_with_no_usable_pair_is_a_clear_error() {
    let work = tempfile::tempdir().unwrap();
    let policy = tiny_model(&work.path().join("policy"), 51, 32, 1, 1.0);
    let long_prompt = "the quick brown fox ".repeat(10);
    let rows = [pair(&long_prompt, "hello", "world"), pair("same", "hi", "hi")];
    let data = write_jsonl(&work.path().join("bad.jsonl"), &rows);
    let store = work.path().join("runs");
    let err = run_dpo(&[
        "--model",
        policy.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--max-prompt-len",
        "64",
    ])
    .unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("bad.jsonl") && message.contains("no usable preference pairs"), "{message}");
    assert!(message.contains("prompt_too_long") && message.contains("chosen_equals_rejected"), "{message}");
    assert!(outputs(&store, "dpo").is_empty() && outputs(&store, "dpo-ref-logps").is_empty());
}

#[test]
fn a_reference_with_another_tokenizer_is_rejected_before_any_compute() {
    let work = tempfile::tempdir().unwrap();
    let policy = tiny_model(&work.path().join("policy"), 61, 32, 1, 1.0);
    let other = tiny_model(&work.path().join("other"), 62, 32, 1, 1.0);
    let tokenizer_json = other.join("tokenizer.json");
    let mut tokenizer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&tokenizer_json).unwrap()).unwrap();
    tokenizer["model"]["vocab"]["zzz-extra"] = 300.into();
    std::fs::write(&tokenizer_json, tokenizer.to_string()).unwrap();
    let data = write_jsonl(&work.path().join("pairs.jsonl"), &learnable_pairs(4, 1));
    let store = work.path().join("runs");
    let err = run_dpo(&[
        "--model",
        policy.to_str().unwrap(),
        "--ref",
        other.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
    ])
    .unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains(tokenizer_json.to_str().unwrap())
            && message.contains(policy.join("tokenizer.json").to_str().unwrap()),
        "{message}"
    );
    assert!(!store.join("dpo-ref-logps").exists() && !store.join("dpo").exists(), "nothing may be computed");
}
