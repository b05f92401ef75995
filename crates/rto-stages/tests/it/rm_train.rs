//! rm-train end to end on tiny random models: learning a planted preference, the output read
//! by transformers as LlamaForSequenceClassification with our scores, and bad input
//! (kill-and-resume is tested on the binaries: rto-cli/tests/kill_resume.rs).

use crate::dpo_common::*;
use rto_model::{sequence_scores, CausalLm, Head, ModelConfig, SequenceBatch, TextTokenizer};
use rto_stages::encode::{Encoder, LengthLimits};
use std::path::Path;
use tch::{Device, Kind, Tensor};

fn rm_args(model: &Path, data: &Path, store: &Path, extra: &[&str]) -> Vec<String> {
    let base =
        ["--model", model.to_str().unwrap(), "--data", data.to_str().unwrap(), "--store", store.to_str().unwrap()];
    base.iter().chain(extra).map(|s| s.to_string()).collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn reward_model_learns_a_planted_preference() {
    let work = tempfile::tempdir().unwrap();
    let model = tiny_model(&work.path().join("base"), 71, 32, 2, 1.0);
    let data = write_jsonl(&work.path().join("pairs.jsonl"), &learnable_pairs(64, 9));
    let store = work.path().join("runs");
    let flags = [
        "--learning-rate",
        "3e-3",
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
    run_rm(&strs(&rm_args(&model, &data, &store, &flags))).unwrap();
    let out = output(&store, "rm");
    let lines = metrics(&out);
    assert_eq!(lines.len(), 21, "7 steps per epoch x 3 epochs");
    let train_accuracy = tail_mean(&lines, "train/accuracy", 5);
    assert!(train_accuracy > 0.9, "train accuracy over the last 5 steps is {train_accuracy}");
    let eval_accuracy = lines.last().unwrap()["eval/accuracy"].as_f64().unwrap();
    assert!(eval_accuracy > 0.9, "eval accuracy {eval_accuracy}");
    for key in ["train/loss", "train/rewards/mean", "train/rewards/margins", "lr", "grad_norm"] {
        assert!(lines[0][key].is_number(), "{key} missing in {}", lines[0]);
    }
}

/// The output folder is a LlamaForSequenceClassification for transformers, with the same
/// last-token scores as ours, and carries the reward normalization from the eval split.
#[test]
fn transformers_loads_the_reward_model_and_reproduces_its_scores() {
    let work = tempfile::tempdir().unwrap();
    let model = tiny_model(&work.path().join("base"), 81, 32, 2, 3.0);
    let rows = learnable_pairs(24, 5);
    let data = write_jsonl(&work.path().join("pairs.jsonl"), &rows);
    let store = work.path().join("runs");
    let flags = [
        "--learning-rate",
        "1e-2",
        "--batch-size",
        "4",
        "--max-steps",
        "4",
        "--eval-fraction",
        "0.25",
        "--checkpoint-every",
        "0",
    ];
    run_rm(&strs(&rm_args(&model, &data, &store, &flags))).unwrap();
    let out = output(&store, "rm");

    let config = ModelConfig::from_file(&out.join("config.json")).unwrap();
    assert_eq!(config.architectures.as_deref(), Some(&["LlamaForSequenceClassification".to_string()][..]));
    assert_eq!(config.num_labels, Some(1));
    let (mean, std) = config.reward_normalization().expect("reward_normalization in config.json");
    let summary = &manifest(&out)["metrics"]["reward_normalization"];
    assert_eq!(
        (summary["mean"].as_f64(), summary["std"].as_f64(), summary["split"].as_str()),
        (Some(mean), Some(std), Some("eval"))
    );
    assert!(mean.is_finite() && std > 0.0, "mean {mean}, std {std}");

    // A batch in the stages' layout (left-padded prompts, right-padded responses).
    let tokenizer = TextTokenizer::from_dir(&out).unwrap();
    let pairs = rto_data::dataset::read_preference_pairs(&data, &Default::default()).unwrap();
    let (encoded, _) = Encoder::new(&tokenizer, LengthLimits { max_prompt_len: 256, max_response_len: 256 })
        .unwrap()
        .pairs(&pairs[..6], "pairs")
        .unwrap();
    let prompts: Vec<Vec<i64>> = encoded.iter().flat_map(|p| [p.prompt.clone(), p.prompt.clone()]).collect();
    let responses: Vec<Vec<i64>> = encoded.iter().flat_map(|p| [p.chosen.clone(), p.rejected.clone()]).collect();
    let batch = SequenceBatch::new(&prompts, &responses, tokenizer.pad_id, Device::Cpu).unwrap();
    let rm = CausalLm::load(&out, Head::Score, Device::Cpu, Kind::Float).unwrap();
    let ours = tch::no_grad(|| sequence_scores(&rm, &batch));
    assert!(ours.abs().max().double_value(&[]) > 1e-3, "the trained head should not score ~0");

    let batch_json = work.path().join("batch.json");
    let to_vec = |t: &Tensor| Vec::<Vec<i64>>::try_from(t).unwrap();
    let json =
        serde_json::json!({"input_ids": to_vec(&batch.input_ids), "attention_mask": to_vec(&batch.attention_mask)});
    std::fs::write(&batch_json, json.to_string()).unwrap();
    let scores_file = work.path().join("scores.safetensors");
    reference(&["scores", out.to_str().unwrap(), batch_json.to_str().unwrap(), scores_file.to_str().unwrap()]);
    let theirs = Tensor::read_safetensors(&scores_file).unwrap().remove(0).1;
    let error = (&ours - &theirs).abs().max().double_value(&[]) / theirs.abs().max().double_value(&[]);
    assert!(error < 1e-4, "scores differ from transformers': ours {ours}, theirs {theirs}");

    // As a critic initialization, the folder's own score head is kept.
    let critic = CausalLm::load_as_value_model(&out, Device::Cpu, tch::Kind::Float).unwrap();
    let again = tch::no_grad(|| sequence_scores(&critic, &batch));
    assert!(again.equal(&ours));
}

#[test]
fn bad_pairs_are_counted_skips_and_an_empty_dataset_is_an_error() {
    let work = tempfile::tempdir().unwrap();
    let model = tiny_model(&work.path().join("base"), 101, 32, 1, 1.0);
    let long_prompt = "the quick brown fox ".repeat(10);
    let bad = [pair("empty", "hello", "  "), pair("same", "dog", "dog"), pair(&long_prompt, "hello", "world")];
    let mut rows = learnable_pairs(4, 2);
    rows.extend(bad.iter().cloned());
    let data = write_jsonl(&work.path().join("pairs.jsonl"), &rows);
    let store = work.path().join("runs");
    let flags = ["--max-prompt-len", "64", "--batch-size", "2", "--eval-fraction", "0", "--max-steps", "1"];
    run_rm(&strs(&rm_args(&model, &data, &store, &flags))).unwrap();
    let dataset = &manifest(&output(&store, "rm"))["metrics"]["dataset"];
    let expected = serde_json::json!({"empty_response": 1, "chosen_equals_rejected": 1, "prompt_too_long": 1});
    assert_eq!(dataset["skipped"], expected, "{dataset}");
    // Without an eval split the normalization comes from the training pairs.
    assert_eq!(manifest(&output(&store, "rm"))["metrics"]["reward_normalization"]["split"], "train");

    let only_bad = write_jsonl(&work.path().join("only_bad.jsonl"), &bad);
    let err = run_rm(&strs(&rm_args(&model, &only_bad, &store, &flags))).unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("only_bad.jsonl") && message.contains("no usable preference pairs"), "{message}");
}
