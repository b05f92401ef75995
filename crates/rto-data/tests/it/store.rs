//! The content-hash cache: reuse, keys, failure atomicity, verification, concurrency.

use crate::common::chain;
use anyhow::{anyhow, Result};
use rto_data::store::{input_key, link, verify, Manifest, StageSpec, Store};
use serde_json::json;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

fn write(path: &Path, text: &str) -> PathBuf {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
    path.to_path_buf()
}

/// A stage that copies its input upper-cased into `out.txt`, counting its calls.
fn upper_stage(store: &Store, spec: &StageSpec, calls: &AtomicUsize) -> Result<rto_data::store::StageOutcome> {
    let input = spec.inputs[0].1.clone();
    store.run(spec, false, |dir| {
        calls.fetch_add(1, Ordering::SeqCst);
        let text = fs::read_to_string(&input)?;
        fs::write(dir.join("out.txt"), text.to_uppercase())?;
        Ok(json!({"chars": text.len()}))
    })
}

#[test]
fn cache_hit_does_no_work_and_manifest_records_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::new(tmp.path().join("runs"));
    let input = write(&tmp.path().join("data/in.txt"), "hello");
    let spec = StageSpec::new("upper", 1, &json!({"mode": "x", "n": 3})).unwrap().with_input("data", &input);
    let calls = AtomicUsize::new(0);

    let first = upper_stage(&store, &spec, &calls).unwrap();
    assert!(!first.reused);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(first.path, tmp.path().join("runs/upper").join(first.key.as_str()));
    assert_eq!(fs::read_to_string(first.path.join("out.txt")).unwrap(), "HELLO");

    let second = store.run(&spec, false, |_| -> Result<serde_json::Value> { panic!("must not run") }).unwrap();
    assert!(second.reused);
    assert_eq!(second.path, first.path);
    assert_eq!(second.key, first.key);

    let m: Manifest = verify(&first.path).unwrap();
    assert_eq!(m.key, first.key);
    assert_eq!(m.stage, "upper");
    assert_eq!(m.schema_version, 1);
    assert_eq!(m.settings, json!({"mode": "x", "n": 3}));
    assert_eq!(m.metrics, json!({"chars": 5}));
    assert_eq!(m.inputs.len(), 1);
    assert_eq!(m.inputs[0].role, "data");
    assert_eq!(m.inputs[0].path, input.display().to_string());
    assert_eq!(m.inputs[0].key.as_str(), blake3::hash(b"hello").to_hex().as_str());
    assert_eq!(m.files.keys().collect::<Vec<_>>(), vec!["out.txt"]);
    assert_eq!(m.files["out.txt"].as_str(), blake3::hash(b"HELLO").to_hex().as_str());
    assert_eq!(m.tool_version, env!("CARGO_PKG_VERSION"));
    assert!(m.created > 1_600_000_000);
    // Nothing but the output folder and its lock file are left in the stage folder.
    let mut names: Vec<String> = fs::read_dir(tmp.path().join("runs/upper"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec![first.key.to_string(), format!("{}.lock", first.key)]);
}

#[test]
fn same_content_under_new_path_hits_and_changed_bytes_miss() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::new(tmp.path().join("runs"));
    let a = write(&tmp.path().join("a/prefs.jsonl"), "{\"x\": 1}\n");
    let b = write(&tmp.path().join("elsewhere/renamed.jsonl"), "{\"x\": 1}\n");
    let c = write(&tmp.path().join("a/changed.jsonl"), "{\"x\": 2}\n");
    let calls = AtomicUsize::new(0);
    let spec = |p: &Path| StageSpec::new("upper", 1, &json!({})).unwrap().with_input("data", p);

    let first = upper_stage(&store, &spec(&a), &calls).unwrap();
    let moved = upper_stage(&store, &spec(&b), &calls).unwrap();
    assert!(moved.reused, "same bytes under another path must hit the cache");
    assert_eq!(moved.key, first.key);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let changed = upper_stage(&store, &spec(&c), &calls).unwrap();
    assert!(!changed.reused);
    assert_ne!(changed.key, first.key);
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // Settings and schema version are part of the key too; settings key order is not.
    let s1 = StageSpec::new("upper", 1, &json!({"a": 1, "b": {"y": 2, "x": 1}})).unwrap().with_input("data", &a);
    let s2 = StageSpec::new("upper", 1, &json!({"b": {"x": 1, "y": 2}, "a": 1})).unwrap().with_input("data", &b);
    let s3 = StageSpec::new("upper", 2, &json!({"a": 1, "b": {"y": 2, "x": 1}})).unwrap().with_input("data", &a);
    let s4 = StageSpec::new("upper", 1, &json!({"a": 2, "b": {"y": 2, "x": 1}})).unwrap().with_input("data", &a);
    assert_eq!(s1.key().unwrap(), s2.key().unwrap());
    assert_ne!(s1.key().unwrap(), s3.key().unwrap());
    assert_ne!(s1.key().unwrap(), s4.key().unwrap());
}

#[test]
fn foreign_folders_are_keyed_by_relative_paths_and_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let m1 = tmp.path().join("m1");
    let m2 = tmp.path().join("copy/of/model");
    for m in [&m1, &m2] {
        write(&m.join("config.json"), "{}");
        write(&m.join("sub/weights.bin"), "0123");
    }
    assert_eq!(input_key(&m1).unwrap(), input_key(&m2).unwrap());
    fs::rename(m2.join("sub/weights.bin"), m2.join("sub/other.bin")).unwrap();
    assert_ne!(input_key(&m1).unwrap(), input_key(&m2).unwrap(), "a renamed file inside changes the key");
    let err = input_key(&tmp.path().join("nope")).unwrap_err();
    assert!(chain(&err).contains("nope"), "{err:#}");
}

#[test]
fn upstream_change_changes_downstream_key() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::new(tmp.path().join("runs"));
    let input = write(&tmp.path().join("in.txt"), "abc");
    let calls = AtomicUsize::new(0);

    let run_a = |setting: u32| {
        let spec = StageSpec::new("a", 1, &json!({"repeat": setting})).unwrap().with_input("data", &input);
        store
            .run(&spec, false, |dir| {
                fs::write(dir.join("a.txt"), "abc".repeat(setting as usize))?;
                Ok(json!({}))
            })
            .unwrap()
    };
    let b_spec = |upstream: &Path| StageSpec::new("b", 1, &json!({})).unwrap().with_input("model", upstream);

    let a1 = run_a(1);
    assert_eq!(input_key(&a1.path).unwrap(), a1.key, "a stage folder is keyed by its manifest key");
    let b1 = store
        .run(&b_spec(&a1.path), false, |dir| {
            calls.fetch_add(1, Ordering::SeqCst);
            fs::write(dir.join("b.txt"), "b")?;
            Ok(json!({}))
        })
        .unwrap();
    assert_eq!(b1.manifest.inputs[0].key, a1.key);

    // Same upstream → same downstream key; a rerun of A is a hit, and so is B.
    let a1_again = run_a(1);
    assert!(a1_again.reused);
    assert_eq!(b_spec(&a1_again.path).key().unwrap(), b1.key);

    // New upstream settings → new upstream key → new downstream key.
    let a2 = run_a(2);
    assert!(!a2.reused);
    assert_ne!(a2.key, a1.key);
    assert_ne!(b_spec(&a2.path).key().unwrap(), b1.key);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn failing_or_panicking_stage_leaves_no_accepted_folder_and_rerun_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("runs");
    let store = Store::new(&root);
    let spec = StageSpec::new("train", 1, &json!({"lr": 1e-3})).unwrap();
    let key = spec.key().unwrap();

    let err = store
        .run(&spec, false, |dir| {
            fs::write(dir.join("half.bin"), "partial")?;
            dir.scratch().map(|s| fs::write(s.join("step-10.ckpt"), "resume me"))??;
            Err(anyhow!("loss is NaN at step 11"))
        })
        .unwrap_err();
    let msg = chain(&err);
    assert!(msg.contains("loss is NaN") && msg.contains("train"), "{msg}");
    assert!(!root.join("train").join(key.as_str()).exists());
    assert!(store.lookup(&spec).unwrap().is_none());
    let leftovers: Vec<String> = fs::read_dir(root.join("train"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temp folders left: {leftovers:?}");
    // The scratch folder survives the failure, for resuming.
    let scratch = store.scratch_dir(&spec).unwrap();
    assert_eq!(fs::read_to_string(scratch.join("step-10.ckpt")).unwrap(), "resume me");

    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = store.run(&spec, false, |dir| -> Result<serde_json::Value> {
            fs::write(dir.join("half.bin"), "partial").unwrap();
            panic!("killed");
        });
    }));
    assert!(panicked.is_err());
    assert!(!root.join("train").join(key.as_str()).exists());

    // A stale temp folder as a SIGKILL would leave it: ignored, then cleaned.
    let stale = root.join("train").join(format!(".tmp-{key}-999999"));
    write(&stale.join("junk.bin"), "x");

    let ok = store
        .run(&spec, false, |dir| {
            let resumed = fs::read_to_string(dir.scratch()?.join("step-10.ckpt"))?;
            fs::write(dir.join("model.bin"), format!("done after {resumed}"))?;
            Ok(json!({"steps": 20}))
        })
        .unwrap();
    assert!(!ok.reused);
    assert_eq!(fs::read_to_string(ok.path.join("model.bin")).unwrap(), "done after resume me");
    assert!(!stale.exists(), "stale temp folder must be cleaned");
    assert!(!scratch.exists(), "scratch folder is deleted after success");
    verify(&ok.path).unwrap();
}

#[test]
fn tampered_cached_folder_is_detected_and_force_recomputes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::new(tmp.path().join("runs"));
    let spec = StageSpec::new("dpo-train", 1, &json!({"beta": 0.1})).unwrap();
    let compute = |dir: &rto_data::store::StageDir| {
        fs::create_dir_all(dir.join("sub"))?;
        fs::write(dir.join("sub/model.safetensors"), "weights")?;
        Ok(json!({}))
    };
    let out = store.run(&spec, false, compute).unwrap();

    fs::write(out.path.join("sub/model.safetensors"), "weightz").unwrap();
    let err = store.run(&spec, false, |_| -> Result<serde_json::Value> { panic!("must not run") }).unwrap_err();
    let msg = chain(&err);
    assert!(msg.contains("sub/model.safetensors") && msg.contains("--force"), "{msg}");
    let err = verify(&out.path).unwrap_err();
    assert!(chain(&err).contains("sub/model.safetensors"));
    // A downstream stage using it as input is refused before any work.
    let down = StageSpec::new("down", 1, &json!({})).unwrap().with_input("model", &out.path);
    let err = down.key().unwrap_err();
    assert!(chain(&err).contains("sub/model.safetensors"), "{err:#}");

    let redone = store.run(&spec, true, compute).unwrap();
    assert!(!redone.reused);
    assert_eq!(redone.key, out.key);
    assert_eq!(fs::read_to_string(redone.path.join("sub/model.safetensors")).unwrap(), "weights");
    verify(&redone.path).unwrap();

    // Added and deleted files are caught too.
    fs::write(redone.path.join("notes.txt"), "hi").unwrap();
    assert!(chain(&verify(&redone.path).unwrap_err()).contains("notes.txt"));
    fs::remove_file(redone.path.join("notes.txt")).unwrap();
    fs::remove_file(redone.path.join("sub/model.safetensors")).unwrap();
    assert!(chain(&verify(&redone.path).unwrap_err()).contains("missing"));

    // --force on a healthy folder also recomputes.
    let healthy = store.run(&spec, true, compute).unwrap();
    let forced = store.run(&spec, true, compute).unwrap();
    assert!(!healthy.reused && !forced.reused);
}

#[test]
fn two_threads_on_one_key_compute_once() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::new(tmp.path().join("runs")));
    let spec = Arc::new(StageSpec::new("slow", 1, &json!({"k": 1})).unwrap());
    let calls = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (store, spec, calls, barrier) = (store.clone(), spec.clone(), calls.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                store
                    .run(&spec, false, |dir| {
                        calls.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(400));
                        fs::write(dir.join("x"), "x")?;
                        Ok(json!({}))
                    })
                    .unwrap()
            })
        })
        .collect();
    let outcomes: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(outcomes.iter().filter(|o| o.reused).count(), 1);
    assert_eq!(outcomes[0].path, outcomes[1].path);
}

const CHILD_ENV: &str = "RTO_STORE_TEST_CHILD_ROOT";

/// Body of the child processes of `two_processes_on_one_key_compute_once`; a no-op when run
/// as an ordinary test.
#[test]
fn child_process_stage() {
    let Ok(root) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = Store::new(&root);
    let spec = StageSpec::new("proc", 1, &json!({})).unwrap();
    let log = PathBuf::from(&root).join("computed.log");
    let out = store
        .run(&spec, false, |dir| {
            use std::io::Write;
            let mut f = fs::OpenOptions::new().create(true).append(true).open(&log)?;
            writeln!(f, "{}", std::process::id())?;
            std::thread::sleep(Duration::from_millis(600));
            fs::write(dir.join("x"), "x")?;
            Ok(json!({}))
        })
        .unwrap();
    println!("REUSED={}", out.reused);
}

#[test]
fn two_processes_on_one_key_compute_once() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("runs");
    fs::create_dir_all(&root).unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            std::process::Command::new(&exe)
                .args(["store::child_process_stage", "--exact", "--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, &root)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<String> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success());
            String::from_utf8(out.stdout).unwrap()
        })
        .collect();
    let computed = fs::read_to_string(root.join("computed.log")).unwrap();
    assert_eq!(computed.lines().count(), 1, "exactly one process computes: {computed}");
    let reused = outputs.iter().filter(|o| o.contains("REUSED=true")).count();
    let fresh = outputs.iter().filter(|o| o.contains("REUSED=false")).count();
    assert_eq!((reused, fresh), (1, 1), "{outputs:?}");
}

#[test]
fn link_points_latest_name_at_output_and_replaces_it() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("runs");
    let store = Store::new(&root);
    let a = store.run(&StageSpec::new("s", 1, &json!({"v": 1})).unwrap(), false, |_| Ok(json!({}))).unwrap();
    let b = store.run(&StageSpec::new("s", 1, &json!({"v": 2})).unwrap(), false, |_| Ok(json!({}))).unwrap();
    let l = link(&root, "dpo", &a.path).unwrap();
    assert_eq!(l, root.join("latest/dpo"));
    assert!(fs::read_link(&l).unwrap().is_relative(), "links inside the store are relative");
    assert_eq!(fs::canonicalize(&l).unwrap(), fs::canonicalize(&a.path).unwrap());
    link(&root, "dpo", &b.path).unwrap();
    assert_eq!(fs::canonicalize(&l).unwrap(), fs::canonicalize(&b.path).unwrap());
    assert!(link(&root, "a/b", &b.path).is_err());
    // A linked folder used as an input keys like the folder itself.
    assert_eq!(input_key(&l).unwrap(), b.key);
}

#[test]
fn stage_that_writes_its_own_manifest_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::new(tmp.path().join("runs"));
    let spec = StageSpec::new("s", 1, &json!({})).unwrap();
    let err = store
        .run(&spec, false, |dir| {
            fs::write(dir.join("manifest.json"), "{}")?;
            Ok(json!({}))
        })
        .unwrap_err();
    assert!(chain(&err).contains("manifest.json"));
    assert!(store.lookup(&spec).unwrap().is_none());
    assert!(StageSpec::new("../evil", 1, &json!({})).unwrap().key().is_err());
}

#[test]
fn failed_compute_leaves_the_store_as_it_was_except_resumable_state() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::new(tmp.path().join("runs"));
    let input = write(&tmp.path().join("in.txt"), "x");
    let spec = StageSpec::new("upper", 1, &json!({})).unwrap().with_input("data", &input);
    let key = spec.key().unwrap();
    let err = store
        .run(&spec, false, |dir| {
            dir.scratch()?; // created, but nothing saved in it yet
            fs::write(dir.join("half.txt"), "partial")?;
            Err(anyhow!("bad row 3"))
        })
        .unwrap_err();
    assert!(format!("{err:#}").contains("bad row 3"), "{err:#}");
    assert!(!tmp.path().join("runs/upper").exists(), "no stage folder, lock or scratch is left");

    // A scratch folder that holds state (a checkpoint) survives for the resume.
    store
        .run(&spec, false, |dir| {
            fs::write(dir.scratch()?.join("checkpoint"), "step 3")?;
            Err(anyhow!("diverged"))
        })
        .unwrap_err();
    let names: Vec<String> = fs::read_dir(tmp.path().join("runs/upper"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec![format!(".work-{key}")]);
}

#[test]
fn a_waiter_computes_after_the_holder_fails_and_removes_its_lock_file() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::new(tmp.path().join("runs"));
    let input = write(&tmp.path().join("in.txt"), "abc");
    let spec = StageSpec::new("upper", 1, &json!({})).unwrap().with_input("data", &input);
    let barrier = Arc::new(Barrier::new(2));
    let failing = {
        let (store, spec, barrier) = (store.clone(), spec.clone(), barrier.clone());
        std::thread::spawn(move || {
            store.run(&spec, false, |_| {
                barrier.wait(); // the lock is held: let the other run start waiting on it
                std::thread::sleep(Duration::from_millis(300));
                Err(anyhow!("bad input"))
            })
        })
    };
    barrier.wait();
    let calls = AtomicUsize::new(0);
    let outcome = upper_stage(&store, &spec, &calls).unwrap();
    assert!(failing.join().unwrap().is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    verify(&outcome.path).unwrap();
    assert_eq!(fs::read_to_string(outcome.path.join("out.txt")).unwrap(), "ABC");
}
