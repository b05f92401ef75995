//! Kill tests at binary level: sft-train, dpo-train, rm-train and ppo-train are SIGKILLed at
//! points drawn by a seeded RNG (a number of metrics records written, i.e. optimizer steps or
//! PPO iterations done; with checkpoints every 2 steps some kills land right after a
//! checkpoint and some between two), rerun with the same command until they complete, and
//! must end with the same bytes and metrics (wall-clock aside) as an uninterrupted run. At
//! every kill, every accepted folder of the store must verify against its manifest and the
//! killed stage must have accepted nothing.

use crate::support::compare::{assert_all_verify, assert_same_outputs, published, Rng};
use crate::support::{bin, fixture, repo_root, run, run_ok, scratch};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How many kills per stage, and the seed of the kill points (printed, so a failure can be
/// replayed).
const KILLS: usize = 3;
const SEED: u64 = 0x5EED_0009;

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|x| x.to_string()).collect()
}

/// Metrics records written so far by the running `stage` (lines of its scratch metrics log).
fn records_done(store: &Path, stage: &str) -> usize {
    let Ok(entries) = fs::read_dir(store.join(stage)) else { return 0 };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".work-"))
        .filter_map(|e| fs::read(e.path().join("metrics.jsonl")).ok())
        .map(|bytes| bytes.iter().filter(|&&b| b == b'\n').count())
        .max()
        .unwrap_or(0)
}

/// Starts `name` and SIGKILLs it once `stage` has written `records` metrics records.
fn kill_at(name: &str, list: &[String], store: &Path, stage: &str, records: usize) {
    let mut child = Command::new(bin(name))
        .args(list)
        .current_dir(repo_root())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while records_done(store, stage) < records {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{name} ended ({status}) before record {records}; the test needs a longer run");
        }
        assert!(Instant::now() < deadline, "{name}: record {records} not reached after 300 s");
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap(); // SIGKILL on unix
    child.wait().unwrap();
}

/// Runs `name` uninterrupted in one store, then killed at seeded points and rerun in another,
/// and compares the two outputs.
fn kill_and_resume(name: &str, stage: &str, list: impl Fn(&Path) -> Vec<String>, seed: u64) {
    let work = scratch();
    let (whole, killed) = (work.path().join("whole"), work.path().join("killed"));
    let reference = run_ok(name, &list(&whole));
    let total = fs::read_to_string(reference.join("metrics.jsonl")).unwrap().lines().count();
    // Kill at least three records before the end: the margin keeps a kill that lands late
    // (a loaded machine) before publication.
    let points = Rng(seed).distinct(KILLS, 1, total as u64 - 2);
    eprintln!("{name}: {total} records, kills after records {points:?} (seed {seed:#x})");
    for &point in &points {
        kill_at(name, &list(&killed), &killed, stage, point as usize);
        assert_all_verify(&killed, &format!("{name} killed after record {point}"));
        assert!(
            !published(&killed).keys().any(|k| k.starts_with(&format!("{stage}/"))),
            "{name} killed after record {point} left an accepted {stage} folder"
        );
    }
    let out = run(name, &list(&killed));
    assert!(out.status.success(), "{name} rerun failed:\n{}", out.stderr);
    assert!(
        out.stderr.contains("resuming from the checkpoint"),
        "{name}: the last rerun did not resume:\n{}",
        out.stderr
    );
    let resumed = PathBuf::from(out.last_line());
    assert_eq!(resumed.file_name(), reference.file_name(), "same inputs and settings, same key");
    assert_same_outputs(&resumed, &killed, &reference, &whole);
    assert_all_verify(&killed, "after the final rerun");
}

const TRAIN: &[&str] = &[
    "--epochs",
    "8",
    "--max-steps",
    "10",
    "--batch-size",
    "4",
    "--micro-batch-size",
    "2",
    "--eval-every",
    "4",
    "--checkpoint-every",
    "2",
    "--max-prompt-len",
    "48",
    "--max-response-len",
    "48",
];

#[test]
fn sft_train_resumes_bitwise_after_kills() {
    let f = fixture();
    let list = |store: &Path| {
        let mut a = args(TRAIN);
        a.extend([
            "--store".into(),
            s(store),
            "--init-config".into(),
            s(&f.model_config),
            "--tokenizer".into(),
            s(&f.tokenizer),
            "--data".into(),
            s(&f.sft_data),
        ]);
        a
    };
    kill_and_resume("sft-train", "sft", list, SEED);
}

#[test]
fn dpo_train_resumes_bitwise_after_kills() {
    let f = fixture();
    let list = |store: &Path| {
        let mut a = args(TRAIN);
        a.extend(["--store".into(), s(store), "--model".into(), s(&f.sft), "--data".into(), s(&f.pairs_file)]);
        a
    };
    kill_and_resume("dpo-train", "dpo", list, SEED + 1);
}

/// With LoRA the checkpoint carries the adapters and their moments (the frozen base is the
/// input's); the output is the adapter folder. Dropout is on: its masks are keyed by optimizer
/// step, so a resumed run draws the uninterrupted run's masks (a running counter restarted at
/// zero would not).
#[test]
fn dpo_train_with_lora_resumes_bitwise_after_kills() {
    let f = fixture();
    let list = |store: &Path| {
        let mut a = args(TRAIN);
        a.extend(["--store".into(), s(store), "--model".into(), s(&f.sft), "--data".into(), s(&f.pairs_file)]);
        a.extend(args(&["--lora-rank", "4", "--lora-alpha", "16", "--lora-dropout", "0.1"]));
        a
    };
    kill_and_resume("dpo-train", "dpo", list, SEED + 6);
}

/// In bf16 the checkpoint must carry the fp32 masters: resuming from the bf16 weights alone
/// would lose every update they had not yet shown.
#[test]
fn dpo_train_in_bf16_resumes_bitwise_after_kills() {
    let f = fixture();
    let list = |store: &Path| {
        let mut a = args(TRAIN);
        a.extend(["--store".into(), s(store), "--model".into(), s(&f.sft), "--data".into(), s(&f.pairs_file)]);
        a.push("--bf16".into());
        a
    };
    kill_and_resume("dpo-train", "dpo", list, SEED + 5);
}

#[test]
fn rm_train_resumes_bitwise_after_kills() {
    let f = fixture();
    let list = |store: &Path| {
        let mut a = args(TRAIN);
        a.extend(["--store".into(), s(store), "--model".into(), s(&f.sft), "--data".into(), s(&f.pairs_file)]);
        a
    };
    kill_and_resume("rm-train", "rm", list, SEED + 2);
}

#[test]
fn ppo_train_resumes_bitwise_after_kills() {
    kill_and_resume("ppo-train", "ppo", |store| ppo_args(store, &["--rollout-batch-size", "8"]), SEED + 3);
}

/// A group estimator without a critic: 4 prompts × 2 responses per rollout (the 8 responses
/// of the GAE run), GRPO's group scale, DAPO's token mean and clip-higher.
#[test]
fn ppo_train_with_a_group_estimator_resumes_bitwise_after_kills() {
    let group = [
        "--rollout-batch-size",
        "4",
        "--n-samples-per-prompt",
        "2",
        "--advantage-estimator",
        "grpo",
        "--loss-agg-mode",
        "token-mean",
        "--clip-high",
        "0.28",
    ];
    kill_and_resume("ppo-train", "ppo", |store| ppo_args(store, &group), SEED + 4);
}

/// A small ppo-train run on the fixture into `store`, with `extra` flags.
fn ppo_args(store: &Path, extra: &[&str]) -> Vec<String> {
    let f = fixture();
    let mut a = args(extra);
    a.extend(args(&[
        "--train-batch-size",
        "4",
        "--micro-batch-size",
        "2",
        "--max-new-tokens",
        "8",
        "--max-prompt-len",
        "48",
        "--iterations",
        "8",
        "--checkpoint-every",
        "2",
        "--save-rollouts-every",
        "3",
        "--actor-lr",
        "1e-3",
        "--critic-lr",
        "1e-3",
        "--kl-target",
        "2",
        "--kl-horizon",
        "100",
    ]));
    a.extend([
        "--store".into(),
        s(store),
        "--policy".into(),
        s(&f.sft),
        "--dpo".into(),
        s(&f.dpo),
        "--reward-model".into(),
        s(&f.rm),
        "--prompts".into(),
        s(&f.prompts),
    ]);
    a
}
