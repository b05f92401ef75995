//! dpo-train as two processes (Gloo on CPU, one thread each), launched by hand the way torchrun
//! would (RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT): against one process with the
//! same global batch, against itself, and with one rank killed mid-run.

use crate::support::compare::{assert_all_verify, assert_same_outputs, published};
use crate::support::ranks::{self, losses, max_diff, records_done, text, weights, TIMEOUT_S};
use crate::support::{fixture, run_ok, scratch};
use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::time::{Duration, Instant};

/// A large learning rate, so six AdamW steps move every weight by ~1e-3 or more and a wrong
/// gradient (one rank's share only, or counted twice) shows far above the tolerance.
pub(crate) fn dpo_args(store: &Path) -> Vec<String> {
    let f = fixture();
    let flags = [
        "--epochs",
        "8",
        "--max-steps",
        "6",
        "--batch-size",
        "4",
        "--micro-batch-size",
        "1",
        "--eval-every",
        "3",
        "--checkpoint-every",
        "1",
        "--learning-rate",
        "1e-3",
        "--max-prompt-len",
        "48",
        "--max-response-len",
        "48",
    ];
    let mut list: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
    for (flag, path) in [("--store", store), ("--model", &f.sft), ("--data", &f.pairs_file)] {
        list.extend([flag.to_string(), path.to_str().unwrap().to_string()]);
    }
    list
}

#[test]
fn dpo_train_on_two_ranks_equals_one_process_within_tolerance_and_repeats_bitwise() {
    let work = scratch();
    let stores = ["one", "two", "two-again"].map(|n| work.path().join(n));
    let single = run_ok("dpo-train", &dpo_args(&stores[0]));
    let (double, _) = run_ranks(&dpo_args(&stores[1]), 2);
    assert_ne!(single.file_name(), double.file_name(), "world size 2 must not reuse the single process's key");
    let (w1, w2) = (weights(&single), weights(&double));
    let sft = weights(&fixture().sft);
    let moved = max_diff(&w1, &sft);
    let gap = max_diff(&w1, &w2);
    eprintln!("world 1 vs world 2: weights moved by up to {moved:.3e}, largest gap {gap:.3e}");
    // Same micro batches, same gradients up to the order of one sum: fp32 rounding only.
    assert!(moved > 1e-3, "training moved the weights by only {moved}: the comparison would prove nothing");
    assert!(gap < 1e-5, "world 2 differs from world 1 by {gap} (weights moved by {moved})");
    let (l1, l2) = (losses(&single), losses(&double));
    assert_eq!(l1.len(), l2.len());
    for (step, (a, b)) in l1.iter().zip(&l2).enumerate() {
        assert!((a - b).abs() < 1e-5, "step {}: loss {a} on one process, {b} on two", step + 1);
    }
    let (again, _) = run_ranks(&dpo_args(&stores[2]), 2);
    assert_eq!(again.file_name(), double.file_name());
    assert_same_outputs(&again, &stores[2], &double, &stores[1]);
}

#[test]
fn a_killed_rank_fails_the_other_at_once_and_the_rerun_resumes_bitwise() {
    let work = scratch();
    let (whole, killed) = (work.path().join("whole"), work.path().join("killed"));
    let (reference, _) = run_ranks(&dpo_args(&whole), 2);
    let mut ranks = spawn_ranks(&dpo_args(&killed), 2);
    let deadline = Instant::now() + Duration::from_secs(300);
    while records_done(&killed, "dpo") < 2 {
        assert!(ranks[0].try_wait().unwrap().is_none(), "rank 0 ended before its second step");
        assert!(Instant::now() < deadline, "no second step after 300 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    ranks[1].kill().unwrap(); // SIGKILL, as a crash or the OOM killer
    let killed_at = Instant::now();
    let rank_0 = ranks.remove(0).wait_with_output().unwrap();
    let took = killed_at.elapsed();
    eprintln!("rank 0 failed {took:?} after its peer was killed");
    let stderr = text(&rank_0.stderr);
    assert!(!rank_0.status.success(), "rank 0 succeeded without its peer:\n{stderr}");
    assert!(took < Duration::from_secs(TIMEOUT_S), "rank 0 took {took:?} to notice");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line expected:\n{stderr}");
    assert!(errors[0].contains("a peer is gone"), "the error does not say a rank is gone: {}", errors[0]);
    assert_all_verify(&killed, "after the kill");
    assert!(!published(&killed).keys().any(|k| k.starts_with("dpo/")), "a killed run accepted a dpo folder");
    let (resumed, outputs) = run_ranks(&dpo_args(&killed), 2);
    assert!(text(&outputs[0].stderr).contains("resuming from the checkpoint"), "the rerun did not resume");
    assert_eq!(resumed.file_name(), reference.file_name());
    assert_same_outputs(&resumed, &killed, &reference, &whole);
}

fn spawn_ranks(list: &[String], world: usize) -> Vec<Child> {
    ranks::spawn_ranks("dpo-train", list, world)
}

fn run_ranks(list: &[String], world: usize) -> (PathBuf, Vec<Output>) {
    ranks::run_ranks("dpo-train", list, world)
}
