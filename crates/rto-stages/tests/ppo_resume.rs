//! Kill-and-resume: the built `ppo-train` binary is SIGKILLed once its first checkpoint
//! appears, rerun, and must end with the same bytes (policy, critic, rollout tables) and the
//! same metrics (timings aside) as an uninterrupted run in another store.

mod ppo_common;

use ppo_common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn binary() -> PathBuf {
    let path = repo_root().join("target/x86_64-unknown-linux-gnu/release/ppo-train");
    assert!(path.exists(), "{} is missing: build it first with `cargo build --release -p rto-cli`", path.display());
    path
}

fn checkpoint_exists(store: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(store.join("ppo")) else { return false };
    entries.flatten().any(|e| e.file_name().to_string_lossy().starts_with(".work-") && e.path().join("ckpt/state.json").exists())
}

fn completed(store: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(store.join("ppo")) else { return 0 };
    entries.flatten().filter(|e| e.path().is_dir() && !e.file_name().to_string_lossy().starts_with('.')).count()
}

/// Every file under `dir` (relative paths, sorted).
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            if entry.path().is_dir() {
                stack.push(entry.path());
            } else {
                out.push(entry.path().strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// metrics.jsonl without the wall-clock fields.
fn metrics_without_timings(dir: &Path) -> Vec<Value> {
    metrics(dir)
        .into_iter()
        .map(|mut line| {
            let object = line.as_object_mut().unwrap();
            object.retain(|k, _| !k.starts_with("time/") && k != "generation_tokens_per_s");
            line
        })
        .collect()
}

#[test]
fn a_killed_run_resumes_to_the_same_bits() {
    let binary = binary();
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(dir.path());
    let args = |store: &Path| {
        let mut args = base_args(&f, store);
        let flags = [("--iterations", "12"), ("--train-batch-size", "4"), ("--micro-batch-size", "2"), ("--checkpoint-every", "1"), ("--save-rollouts-every", "3"), ("--kl-target", "2"), ("--kl-horizon", "100")];
        for (flag, value) in flags {
            args = set(args, flag, value);
        }
        args
    };
    let killed = dir.path().join("killed");
    let mut child = Command::new(&binary).args(args(&killed)).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !checkpoint_exists(&killed) {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("ppo-train ended ({status}) before its first checkpoint appeared");
        }
        assert!(Instant::now() < deadline, "no checkpoint after 120 s");
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(completed(&killed), 0, "the run finished before it was killed; the test needs a longer run");

    let resumed = Command::new(&binary).args(args(&killed)).output().unwrap();
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "resumed run failed:\n{stderr}");
    let line = stderr.lines().find(|l| l.contains("resuming from the checkpoint after iteration"));
    eprintln!("{}", line.unwrap_or_else(|| panic!("the rerun did not resume:\n{stderr}")));

    let fresh = dir.path().join("fresh");
    let uninterrupted = Command::new(&binary).args(args(&fresh)).output().unwrap();
    assert!(uninterrupted.status.success(), "{}", String::from_utf8_lossy(&uninterrupted.stderr));

    let (a, b) = (output(&killed), output(&fresh));
    assert_eq!(a.file_name(), b.file_name(), "same inputs and settings, same key");
    let listed = files(&a);
    assert_eq!(listed, files(&b));
    for file in listed.iter().filter(|f| !["manifest.json", "metrics.jsonl"].contains(&f.to_str().unwrap())) {
        assert!(std::fs::read(a.join(file)).unwrap() == std::fs::read(b.join(file)).unwrap(), "{} differs after resume", file.display());
    }
    assert!(listed.iter().any(|f| f.ends_with("critic/model.safetensors")) && listed.iter().any(|f| f.ends_with("iter-000012/tokens.parquet")));
    assert_eq!(metrics_without_timings(&a), metrics_without_timings(&b));
}
