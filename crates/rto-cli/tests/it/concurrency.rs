//! Concurrency at binary level: two processes of the same stage with the same key. The test
//! holds the key's lock itself until both processes report that they wait for it, so the
//! two really contend (no reliance on timing); then it lets go. Exactly one must compute, the
//! other must reuse its output, both must print the same folder, and that folder (and every
//! other accepted folder, e.g. DPO's reference log-probs that both also needed) must verify
//! and equal the fixture's output of the same key.

use crate::support::compare::{assert_all_verify, normalized_files, published};
use crate::support::{bin, fixture, repo_root, scratch, PREF_FLAGS, SFT_FLAGS};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// A started binary whose stderr is collected line by line as it comes.
struct Running {
    child: Child,
    stderr: Arc<Mutex<String>>,
    reader: std::thread::JoinHandle<()>,
}

fn start(name: &str, list: &[String]) -> Running {
    let mut child = Command::new(bin(name))
        .args(list)
        .current_dir(repo_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let (pipe, sink) = (child.stderr.take().unwrap(), stderr.clone());
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut text = sink.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    });
    Running { child, stderr, reader }
}

/// Waits for the process; returns (success, last stdout line, stderr).
fn finish(mut r: Running) -> (bool, String, String) {
    let mut stdout = String::new();
    std::io::Read::read_to_string(r.child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    let status = r.child.wait().unwrap();
    r.reader.join().unwrap();
    let stderr = r.stderr.lock().unwrap().clone();
    (status.success(), stdout.lines().last().unwrap_or("").to_string(), stderr)
}

/// Runs two copies of `name` against a fresh store while the test holds the lock of
/// `stage`'s key (the key of `expected`, the fixture's output of the same command).
fn two_at_once(name: &str, stage: &str, list: impl Fn(&Path) -> Vec<String>, expected: &Path) {
    let work = scratch();
    let store = work.path().join("store");
    let key = expected.file_name().unwrap().to_string_lossy().into_owned();
    fs::create_dir_all(store.join(stage)).unwrap();
    let held = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(store.join(stage).join(format!("{key}.lock")))
        .unwrap();
    held.lock().unwrap();
    let runs = [start(name, &list(&store)), start(name, &list(&store))];
    let deadline = Instant::now() + Duration::from_secs(120);
    let waiting = format!("rto: {stage}: waiting for another run");
    while !runs.iter().all(|r| r.stderr.lock().unwrap().contains(&waiting)) {
        assert!(Instant::now() < deadline, "both {name} runs should wait for the held lock within 120 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        published(&store).keys().all(|k| !k.starts_with(&format!("{stage}/"))),
        "a run published while the lock was held"
    );
    held.unlock().unwrap();
    let [first, second] = runs;
    let outs = [finish(first), finish(second)];
    for (ok, _, stderr) in &outs {
        assert!(ok, "{name} failed:\n{stderr}");
    }
    let path = PathBuf::from(&outs[0].1);
    assert_eq!(outs[0].1, outs[1].1, "both runs must print the same folder");
    assert_eq!(path, store.join(stage).join(&key));
    let computed = outs.iter().filter(|o| o.2.contains(&format!("rto: {stage}: computed"))).count();
    let reused = outs.iter().filter(|o| o.2.contains(&format!("rto: {stage}: reusing cached output"))).count();
    assert_eq!(
        (computed, reused),
        (1, 1),
        "exactly one run computes and the other reuses:\n{}\n---\n{}",
        outs[0].2,
        outs[1].2
    );
    assert_all_verify(&store, "after two concurrent runs");
    // Same bytes as the fixture's output of this key; the manifests differ in input paths
    // (this store's and the fixture's), so they are compared by verification only.
    let (ours, theirs) = (normalized_files(&path, &store), normalized_files(expected, &fixture().store));
    assert_eq!(ours.keys().collect::<Vec<_>>(), theirs.keys().collect::<Vec<_>>());
    for (rel, bytes) in ours.iter().filter(|(rel, _)| rel.as_str() != "manifest.json") {
        assert!(bytes == &theirs[rel], "{rel} differs from the fixture's output of the same key");
    }
    let leftovers: Vec<String> = fs::read_dir(store.join(stage))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp-") || n.starts_with(".work-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary folders left behind: {leftovers:?}");
}

#[test]
fn two_sft_runs_on_one_key_compute_once() {
    let f = fixture();
    let list = |store: &Path| {
        let mut a: Vec<String> = SFT_FLAGS.iter().map(|x| x.to_string()).collect();
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
    two_at_once("sft-train", "sft", list, &f.sft);
}

/// dpo-train also shares a nested cached stage (the reference log-probs) between the two.
#[test]
fn two_dpo_runs_on_one_key_compute_once() {
    let f = fixture();
    let list = |store: &Path| {
        let mut a: Vec<String> = PREF_FLAGS.iter().map(|x| x.to_string()).collect();
        a.extend(["--store".into(), s(store), "--model".into(), s(&f.sft), "--data".into(), s(&f.pairs_file)]);
        a
    };
    two_at_once("dpo-train", "dpo", list, &f.dpo);
}
