//! sft-train and rm-train on 2 Gloo ranks against one process with the same global batch (the
//! pattern of `data_parallel`'s dpo-train test): four micro batches per step, summed in
//! another order on two ranks, so equal within fp32 rounding, not bitwise.

use crate::support::ranks::{max_diff, run_ranks, weights};
use crate::support::{fixture, run_ok, scratch};
use std::path::Path;

/// Six steps at a large learning rate: every weight moves by ~1e-3 or more, so a gradient
/// counted once too few or too many shows far above the tolerance.
fn train_args(store: &Path, inputs: &[(&str, &Path)]) -> Vec<String> {
    let flags = ["--epochs", "8", "--max-steps", "6", "--batch-size", "4", "--micro-batch-size", "1"];
    let more = ["--eval-every", "3", "--checkpoint-every", "2", "--learning-rate", "1e-3"];
    let limits = ["--max-prompt-len", "48", "--max-response-len", "48"];
    let mut list: Vec<String> = flags.iter().chain(&more).chain(&limits).map(|s| s.to_string()).collect();
    list.extend(["--store".to_string(), store.to_str().unwrap().to_string()]);
    for (flag, path) in inputs {
        list.extend([flag.to_string(), path.to_str().unwrap().to_string()]);
    }
    list
}

fn one_vs_two(stage: &str, inputs: &[(&str, &Path)]) {
    let work = scratch();
    let (one, two) = (work.path().join("one"), work.path().join("two"));
    let single = run_ok(stage, &train_args(&one, inputs));
    let (double, _) = run_ranks(stage, &train_args(&two, inputs), 2);
    assert_ne!(single.file_name(), double.file_name(), "world size 2 must not reuse the single process's key");
    let (w1, w2) = (weights(&single), weights(&double));
    let start = weights(&fixture().sft);
    // rm-train adds a score head the SFT model lacks: compare the weights both have.
    let moved = w1
        .iter()
        .filter_map(|(name, t)| start.get(name).map(|s| (t - s).abs().max().double_value(&[])))
        .fold(0.0, f64::max);
    let gap = max_diff(&w1, &w2);
    eprintln!("{stage} world 1 vs world 2: weights moved by up to {moved:.3e}, largest gap {gap:.3e}");
    assert!(moved > 1e-3, "{stage}: training moved the weights by only {moved}: the comparison would prove nothing");
    assert!(gap < 1e-5, "{stage}: world 2 differs from world 1 by {gap} (weights moved by {moved})");
}

#[test]
fn sft_train_on_two_ranks_equals_one_process_within_tolerance() {
    let f = fixture();
    one_vs_two("sft-train", &[("--model", &f.sft), ("--data", &f.sft_data)]);
}

#[test]
fn rm_train_on_two_ranks_equals_one_process_within_tolerance() {
    let f = fixture();
    one_vs_two("rm-train", &[("--model", &f.sft), ("--data", &f.pairs_file)]);
}
