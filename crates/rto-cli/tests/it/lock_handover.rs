//! A stage's lock holder SIGKILLed while a second run of the same key waits on the lock: the
//! kernel drops the dead process's flock, the waiter takes over, computes (resuming the
//! holder's checkpoint when there is one) and publishes exactly one verified folder. At the
//! kill nothing of the holder is accepted. (The lock-contention cases of live processes are
//! in `concurrency.rs`.)

use crate::support::compare::{assert_all_verify, published};
use crate::support::{bin, fixture, repo_root, scratch};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// Starts `name` with stdout/stderr going to `<tag>.out` / `<tag>.err` in `logs`.
fn start(name: &str, args: &[String], logs: &Path, tag: &str) -> Child {
    Command::new(bin(name))
        .args(args)
        .current_dir(repo_root())
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(fs::File::create(logs.join(format!("{tag}.out"))).unwrap())
        .stderr(fs::File::create(logs.join(format!("{tag}.err"))).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"))
}

fn read(logs: &Path, file: &str) -> String {
    fs::read_to_string(logs.join(file)).unwrap_or_default()
}

/// Sends `SIG<name>` to a child this test started (by its id).
fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").args([format!("-{name}"), child.id().to_string()]).status().unwrap();
    assert!(status.success(), "kill -{name} {} failed", child.id());
}

/// Polls `cond`; the deadline only turns a hang into a failure (no timing assertion).
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_killed_lock_holder_hands_over_to_the_waiter() {
    let f = fixture();
    let work = scratch();
    let (store, logs) = (work.path().join("store"), work.path());
    let mut args: Vec<String> = [
        "--epochs",
        "100",
        "--max-steps",
        "40",
        "--batch-size",
        "4",
        "--eval-every",
        "100",
        "--checkpoint-every",
        "2",
        "--max-prompt-len",
        "48",
        "--max-response-len",
        "48",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    args.extend([
        "--store".into(),
        s(&store),
        "--init-config".into(),
        s(&f.model_config),
        "--tokenizer".into(),
        s(&f.tokenizer),
        "--data".into(),
        s(&f.sft_data),
    ]);
    let mut holder = start("sft-train", &args, logs, "holder");
    // The scratch folder exists once the holder has the lock and trains.
    let training = || {
        fs::read_dir(store.join("sft"))
            .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with(".work-")))
            .unwrap_or(false)
    };
    wait_until("the holder's scratch folder", training);
    // Freeze the holder (it keeps the lock) so the waiter surely queues behind it whatever
    // the machine's speed; SIGKILL works on a stopped process.
    signal(&holder, "STOP");
    assert!(
        holder.try_wait().unwrap().is_none(),
        "the holder ended before it could be stopped; the test needs a longer run"
    );
    let mut waiter = start("sft-train", &args, logs, "waiter");
    wait_until("the waiter to report waiting", || {
        read(logs, "waiter.err").contains("rto: sft: waiting for another run")
    });
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_all_verify(&store, "right after killing the lock holder");
    assert!(published(&store).is_empty(), "the killed holder left an accepted folder: {:?}", published(&store).keys());
    let status = waiter.wait().unwrap();
    let err = read(logs, "waiter.err");
    assert!(status.success(), "the waiter failed after the holder was killed: {status}\n{err}");
    assert!(err.contains("rto: sft: computed"), "the waiter should have computed the stage itself:\n{err}");
    let last = read(logs, "waiter.out").lines().last().unwrap_or("").to_string();
    let folders: Vec<PathBuf> = published(&store).into_values().collect();
    assert_eq!(folders, vec![PathBuf::from(last)], "exactly the printed folder is accepted");
    assert_all_verify(&store, "after the waiter finished");
    let leftovers: Vec<String> = fs::read_dir(store.join("sft"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp-") || n.starts_with(".work-"))
        .collect();
    assert!(leftovers.is_empty(), "the waiter left the holder's temporaries behind: {leftovers:?}");
}
