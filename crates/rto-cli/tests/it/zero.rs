//! ZeRO-1 (`--zero-stage 1`) in dpo-train at world size 2: against plain data parallelism
//! (`--zero-stage 0`), and killed mid-run then resumed from the per-rank optimizer shards.

use crate::data_parallel::dpo_args;
use crate::support::compare::assert_same_outputs;
use crate::support::ranks::{max_diff, records_done, run_ranks, spawn_ranks, text, weights};
use crate::support::{fixture, scratch};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};
use tch::{Kind, Tensor};

fn zero_args(store: &Path, stage: u8, extra: &[&str]) -> Vec<String> {
    let mut list = dpo_args(store);
    list.extend(["--zero-stage".to_string(), stage.to_string()]);
    list.extend(extra.iter().map(|s| s.to_string()));
    list
}

/// Runs dpo-train with `extra` at ZeRO stages 0 and 1 on two ranks; asserts the weights moved
/// by more than 1e-3 and agree within `tolerance`; returns the two weight sets.
fn zero_1_against_zero_0(extra: &[&str], tolerance: f64) -> [BTreeMap<String, Tensor>; 2] {
    let work = scratch();
    let (plain, sharded) = (work.path().join("zero0"), work.path().join("zero1"));
    let (w0, _) = run_ranks("dpo-train", &zero_args(&plain, 0, extra), 2);
    let (w1, outputs) = run_ranks("dpo-train", &zero_args(&sharded, 1, extra), 2);
    assert_ne!(w0.file_name(), w1.file_name(), "ZeRO-1 must key its own output (last-bit differences)");
    let plan = text(&outputs[0].stderr);
    assert!(plan.contains("AdamW moments (2 × fp32), sharded over 2 ranks (ZeRO-1)"), "memory plan:\n{plan}");
    let (a, b) = (weights(&w0), weights(&w1));
    let moved = max_diff(&a, &weights(&fixture().sft));
    let gap = max_diff(&a, &b);
    eprintln!("ZeRO-1 vs ZeRO-0 {extra:?}: weights moved by up to {moved:.3e}, largest gap {gap:.3e}");
    assert!(moved > 1e-3, "training moved the weights by only {moved}: the comparison would prove nothing");
    assert!(gap < tolerance, "ZeRO-1 differs from plain data parallelism by {gap} (weights moved by {moved})");
    [a, b]
}

/// The shards change only the grad norm's summation order (an f64 sum per shard instead of
/// per tensor), so the clip factor, and through it the weights, may differ in the last fp32
/// bits: within 1e-6 after six steps. --max-grad-norm 0.01 clips every step, so the sharded
/// norm is used each time (unclipped, the norm would not touch the weights). The steps each
/// write a checkpoint (--checkpoint-every 1), so the sharded save runs too.
#[test]
fn zero_1_equals_plain_data_parallelism_in_fp32() {
    zero_1_against_zero_0(&["--max-grad-norm", "0.01"], 1e-6);
}

/// Under --bf16 the fp32 masters are sharded too. A last-bit difference in a master can flip
/// the rounding of its bf16 weight by one bf16 step (up to 2^-8 relative), so: few weights
/// differ (under 1%), by at most one step of weights below 2 (2^-7 ≈ 7.8e-3).
#[test]
fn zero_1_equals_plain_data_parallelism_in_bf16() {
    let [a, b] = zero_1_against_zero_0(&["--bf16"], 8e-3);
    let differing: i64 = a.iter().map(|(n, t)| t.ne_tensor(&b[n]).sum(Kind::Int64).int64_value(&[])).sum();
    let total: i64 = a.values().map(|t| t.numel() as i64).sum();
    eprintln!("bf16 ZeRO-1 vs ZeRO-0: {differing} of {total} weights differ");
    assert!(differing * 100 < total, "{differing} of {total} bf16 weights differ: more than rounding flips");
}

#[test]
fn zero_1_killed_rank_reruns_to_the_uninterrupted_bytes() {
    let work = scratch();
    let (whole, killed) = (work.path().join("whole"), work.path().join("killed"));
    let (reference, _) = run_ranks("dpo-train", &zero_args(&whole, 1, &[]), 2);
    let mut ranks = spawn_ranks("dpo-train", &zero_args(&killed, 1, &[]), 2);
    let deadline = Instant::now() + Duration::from_secs(300);
    while records_done(&killed, "dpo") < 3 {
        assert!(ranks[0].try_wait().unwrap().is_none(), "rank 0 ended before its third step");
        assert!(Instant::now() < deadline, "no third step after 300 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    ranks[1].kill().unwrap();
    let rank_0 = ranks.remove(0).wait_with_output().unwrap();
    assert!(!rank_0.status.success(), "rank 0 succeeded without its peer:\n{}", text(&rank_0.stderr));
    let ckpt = std::fs::read_dir(killed.join("dpo"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("ckpt"))
        .find(|p| p.is_dir())
        .expect("a checkpoint in the scratch folder");
    for rank in 0..2 {
        assert!(ckpt.join(format!("model.optim.rank{rank}.safetensors")).exists(), "no shard of rank {rank}");
    }
    assert!(!ckpt.join("model.optim.safetensors").exists(), "a whole optimizer state next to the shards");
    let (resumed, outputs) = run_ranks("dpo-train", &zero_args(&killed, 1, &[]), 2);
    assert!(text(&outputs[0].stderr).contains("resuming from the checkpoint"), "the rerun did not resume");
    assert_eq!(resumed.file_name(), reference.file_name());
    assert_same_outputs(&resumed, &killed, &reference, &whole);
}
