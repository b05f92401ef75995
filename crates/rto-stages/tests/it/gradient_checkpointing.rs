//! `--gradient-checkpointing` in the training stages: a run with it trains the same weights
//! as a run without (the recomputed gradients equal the plain ones to float rounding, and
//! AdamW over a few steps keeps the difference at that scale), under its own cache key.
//! Stated tolerance: max |Δw| / max |w| ≤ 1e-5 per tensor.

use crate::dpo_common::*;
use crate::ppo_common::{base_args, fixture, run_ppo, set};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::Tensor;

const TOLERANCE: f64 = 1e-5;

fn weights(dir: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(dir.join("model.safetensors")).unwrap().into_iter().collect()
}

/// The largest max |a − b| / max |b| over the tensors of two model folders, with its tensor.
fn largest_weight_difference(a: &Path, b: &Path) -> (f64, String) {
    let (ours, theirs) = (weights(a), weights(b));
    assert_eq!(ours.len(), theirs.len(), "{} and {} hold different tensors", a.display(), b.display());
    theirs
        .iter()
        .map(|(name, expected)| {
            let got = ours.get(name).unwrap_or_else(|| panic!("{name} missing in {}", a.display()));
            let scale = expected.abs().max().double_value(&[]).max(f64::MIN_POSITIVE);
            ((got - expected).abs().max().double_value(&[]) / scale, name.clone())
        })
        .max_by(|x, y| x.0.total_cmp(&y.0))
        .unwrap()
}

/// The output of `stage` in `store` whose key has `gradient_checkpointing` as given.
fn output_with(store: &Path, stage: &str, checkpointing: bool) -> PathBuf {
    let found: Vec<PathBuf> = outputs(store, stage)
        .into_iter()
        .filter(|d| {
            manifest(d)["settings"]["model"]["gradient_checkpointing"].as_bool().unwrap_or(false) == checkpointing
        })
        .collect();
    assert_eq!(found.len(), 1, "{stage} outputs with gradient_checkpointing = {checkpointing}: {found:?}");
    found[0].clone()
}

fn assert_same_training(label: &str, store: &Path, stage: &str, folder: impl Fn(&Path) -> PathBuf) {
    let (plain, checkpointed) = (output_with(store, stage, false), output_with(store, stage, true));
    assert_ne!(plain, checkpointed, "{label}: checkpointing must change the cache key");
    let (difference, tensor) = largest_weight_difference(&folder(&checkpointed), &folder(&plain));
    eprintln!("{label}: largest relative weight difference {difference:.2e} ({tensor})");
    assert!(difference <= TOLERANCE, "{label}: {tensor} differs by {difference:.2e} relative");
}

#[test]
fn dpo_train_with_checkpointing_trains_the_same_weights_under_another_key() {
    let work = tempfile::tempdir().unwrap();
    let policy = tiny_model(&work.path().join("policy"), 31, 32, 2, 3.0);
    let data = write_jsonl(&work.path().join("pairs.jsonl"), &learnable_pairs(16, 3));
    let store = work.path().join("runs");
    let (policy, data, store_s) = (policy.to_str().unwrap(), data.to_str().unwrap(), store.to_str().unwrap());
    // Two micro batches per step: each a forward of chosen and rejected rows, accumulated.
    let flags = [
        "--model",
        policy,
        "--data",
        data,
        "--store",
        store_s,
        "--batch-size",
        "8",
        "--micro-batch-size",
        "4",
        "--max-steps",
        "3",
        "--learning-rate",
        "3e-3",
        "--eval-fraction",
        "0",
        "--checkpoint-every",
        "0",
    ];
    run_dpo(&flags).unwrap();
    run_dpo(&[&flags[..], &["--gradient-checkpointing"]].concat()).unwrap();
    assert_eq!(outputs(&store, "dpo-ref-logps").len(), 1, "the reference pass does not depend on checkpointing");
    assert_same_training("dpo-train", &store, "dpo", Path::to_path_buf);
}

#[test]
fn ppo_train_with_checkpointing_trains_the_same_actor_and_critic() {
    let work = tempfile::tempdir().unwrap();
    let f = fixture(work.path());
    let store = work.path().join("store");
    // GAE, the default estimator, trains a critic next to the actor.
    let args = set(base_args(&f, &store), "--iterations", "2");
    run_ppo(&args).unwrap();
    run_ppo(&[args, vec!["--gradient-checkpointing".into()]].concat()).unwrap();
    assert_same_training("ppo-train actor", &store, "ppo", Path::to_path_buf);
    assert_same_training("ppo-train critic", &store, "ppo", |out| out.join("critic"));
}
