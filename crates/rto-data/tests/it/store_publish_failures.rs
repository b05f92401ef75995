//! Every step of a run after the stage lock fails in turn: the stage's own work (error and
//! panic), hashing its files, writing the manifest, the rename into place and the swap of an
//! old folder under --force. Each time the store must be byte-identical to what it was before
//! the run (every path, file bytes, symlink targets), and a rerun without the fault must succeed.

use crate::common::chain;
use anyhow::{anyhow, Result};
use rto_data::store::{verify, FaultKind, PublishPhase, StageDir, StageSpec, Store};
use rto_test_support::{snapshot, snapshot_diff};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

fn spec(input: &Path, lr: f64) -> StageSpec {
    StageSpec::new("train", 1, &json!({ "lr": lr })).unwrap().with_input("data", input)
}

/// A stage that works: two files, one in a subfolder, and an (empty) scratch folder.
fn good(dir: &StageDir) -> Result<Value> {
    dir.scratch()?;
    fs::create_dir_all(dir.join("sub"))?;
    fs::write(dir.join("model.bin"), "weights")?;
    fs::write(dir.join("sub/config.json"), "{}")?;
    Ok(json!({ "loss": 0.5 }))
}

fn failing(dir: &StageDir) -> Result<Value> {
    dir.scratch()?;
    fs::write(dir.join("half.bin"), "partial")?;
    Err(anyhow!("loss is NaN at step 3"))
}

fn panicking(dir: &StageDir) -> Result<Value> {
    dir.scratch()?;
    fs::write(dir.join("half.bin"), "partial")?;
    panic!("killed at step 3");
}

/// Hashing follows symlinks (a model folder may link to shared weights): a dangling one fails it.
fn dangling_link(dir: &StageDir) -> Result<Value> {
    good(dir)?;
    std::os::unix::fs::symlink("../elsewhere/missing.safetensors", dir.join("shared.safetensors"))?;
    Ok(json!({}))
}

/// A stage that removes its own output folder: there is nothing to hash.
fn removes_its_folder(dir: &StageDir) -> Result<Value> {
    good(dir)?;
    fs::remove_dir_all(dir.path())?;
    Ok(json!({}))
}

fn writes_a_manifest(dir: &StageDir) -> Result<Value> {
    good(dir)?;
    fs::write(dir.join("manifest.json"), "{}")?;
    Ok(json!({}))
}

struct Case {
    name: &'static str,
    compute: fn(&StageDir) -> Result<Value>,
    fault: Option<(PublishPhase, FaultKind)>,
    /// Text the error must hold besides "no output was stored"; `None`: the run panics.
    expect: Option<&'static str>,
}

const fn case(
    name: &'static str,
    compute: fn(&StageDir) -> Result<Value>,
    fault: Option<(PublishPhase, FaultKind)>,
    expect: Option<&'static str>,
) -> Case {
    Case { name, compute, fault, expect }
}

use FaultKind::{Error as Fails, Panic as Panics};
use PublishPhase::{Hash, MoveAside, Rename, WriteManifest};

/// Faults every run can hit, whether or not a folder is already stored under its key.
const CASES: &[Case] = &[
    case("compute error", failing, None, Some("loss is NaN at step 3")),
    case("compute panic", panicking, None, None),
    case("hash: dangling symlink", dangling_link, None, Some("shared.safetensors")),
    case("hash: output folder removed", removes_its_folder, None, Some("cannot list")),
    case("hash panic", good, Some((Hash, Panics)), None),
    case("stage wrote manifest.json", writes_a_manifest, None, Some("reserved for the store")),
    case("manifest write error", good, Some((WriteManifest, Fails)), Some("WriteManifest")),
    case("manifest write panic", good, Some((WriteManifest, Panics)), None),
    case("rename error", good, Some((Rename, Fails)), Some("Rename")),
    case("rename panic", good, Some((Rename, Panics)), None),
];

/// Faults of moving the folder already stored under the key aside for a --force swap. (The
/// rename cases above, run on a stored key, fail the swap after the old folder was moved aside.)
const MOVE_ASIDE_CASES: &[Case] = &[
    case("move aside error", good, Some((MoveAside, Fails)), Some("MoveAside")),
    case("move aside panic", good, Some((MoveAside, Panics)), None),
];

/// What the store holds before the faulty run.
#[derive(Clone, Copy, Debug)]
enum Before {
    /// An empty store: the run creates the stage folder and the lock file, and must remove both.
    Empty,
    /// Another key of the same stage is stored (so the stage folder exists), and a killed run
    /// left an empty scratch folder for our key: both must stay as they are.
    Neighbour,
    /// Our key is stored and verifies, with its lock file; the run is a --force run.
    Stored,
}

fn prepare(before: Before, root: &Path, input: &Path) {
    fs::create_dir_all(root).unwrap();
    if matches!(before, Before::Empty) {
        return;
    }
    Store::new(root).run(&spec(input, 0.2), false, good).unwrap();
    if matches!(before, Before::Stored) {
        Store::new(root).run(&spec(input, 0.1), false, good).unwrap();
    }
    fs::create_dir_all(Store::new(root).scratch_dir(&spec(input, 0.1)).unwrap()).unwrap();
}

/// Runs `case` on a store prepared as `before`: the store must come out byte-identical, and a
/// rerun without the fault must store a folder that verifies.
fn check(case: &Case, before: Before) {
    let label = format!("{} (store before: {before:?})", case.name);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("runs");
    let input = tmp.path().join("in.txt");
    fs::write(&input, "hello").unwrap();
    prepare(before, &root, &input);
    let force = matches!(before, Before::Stored);
    let spec = spec(&input, 0.1);
    let snap = snapshot(&root);

    let mut store = Store::new(&root);
    if let Some((phase, kind)) = case.fault {
        store = store.with_fault(phase, kind);
    }
    let outcome = catch_unwind(AssertUnwindSafe(|| store.run(&spec, force, case.compute)));
    match (outcome, case.expect) {
        (Ok(Err(err)), Some(text)) => {
            let msg = chain(&err);
            assert!(msg.contains("stage train failed; no output was stored") && msg.contains(text), "{label}: {msg}");
        }
        (Err(_), None) => {}
        (other, _) => panic!("{label}: expected {:?}, got {other:?}", case.expect.unwrap_or("a panic")),
    }
    assert_eq!(snapshot_diff(&snap, &snapshot(&root)), Vec::<String>::new(), "{label}: the store changed");
    let final_path = Store::new(&root).output_path("train", &spec.key().unwrap());
    if force {
        verify(&final_path).unwrap_or_else(|e| panic!("{label}: the old folder no longer verifies: {e:#}"));
    }

    let rerun = Store::new(&root).run(&spec, force, good).unwrap_or_else(|e| panic!("{label}: rerun: {e:#}"));
    assert!(!rerun.reused, "{label}");
    assert_eq!(rerun.path, final_path, "{label}");
    assert_eq!(verify(&final_path).unwrap().files.len(), 2, "{label}");
    assert_eq!(fs::read(final_path.join("model.bin")).unwrap(), b"weights", "{label}");
    let leftovers: Vec<_> = snapshot(&root.join("train"))
        .into_keys()
        .filter(|p| p.starts_with(".tmp-") || p.starts_with(".old-") || p.starts_with(".work-"))
        .collect();
    assert!(leftovers.is_empty(), "{label}: left after the successful rerun: {leftovers:?}");
}

#[test]
fn every_phase_failing_leaves_the_store_byte_identical_and_a_rerun_succeeds() {
    for case in CASES {
        for before in [Before::Empty, Before::Neighbour, Before::Stored] {
            check(case, before);
        }
    }
}

#[test]
fn a_failed_move_aside_keeps_the_old_folder_in_place_and_verifying() {
    for case in MOVE_ASIDE_CASES {
        check(case, Before::Stored);
    }
}

/// Without a folder under the key there is nothing to move aside, so that phase (and its
/// injected fault) does not happen: the move-aside cases above do reach a real swap.
#[test]
fn the_move_aside_phase_only_exists_when_a_folder_is_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.txt");
    fs::write(&input, "hello").unwrap();
    let store = Store::new(tmp.path().join("runs")).with_fault(MoveAside, Fails);
    let out = store.run(&spec(&input, 0.1), true, good).unwrap();
    verify(&out.path).unwrap();
}

/// The one thing a failed run may leave: checkpoints the stage saved in its scratch folder, so
/// that the rerun resumes from them instead of starting over.
#[test]
fn a_failed_publish_keeps_saved_checkpoints_and_the_rerun_resumes_from_them() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("runs");
    let input = tmp.path().join("in.txt");
    fs::write(&input, "hello").unwrap();
    fs::create_dir_all(&root).unwrap();
    let spec = spec(&input, 0.1);
    let err = Store::new(&root)
        .with_fault(WriteManifest, Fails)
        .run(&spec, false, |dir| {
            fs::write(dir.scratch()?.join("step-3.ckpt"), "resume me")?;
            good(dir)
        })
        .unwrap_err();
    assert!(chain(&err).contains("no output was stored"), "{err:#}");
    let scratch = Store::new(&root).scratch_dir(&spec).unwrap();
    let rel = |p: &Path| p.strip_prefix(&root).unwrap().display().to_string();
    let expected: BTreeMap<String, String> = [
        ("train".to_string(), "<dir>".to_string()),
        (rel(&scratch), "<dir>".to_string()),
        (rel(&scratch.join("step-3.ckpt")), blake3::hash(b"resume me").to_hex().to_string()),
    ]
    .into_iter()
    .collect();
    assert_eq!(snapshot(&root), expected);

    let out = Store::new(&root)
        .run(&spec, false, |dir| {
            let resumed = fs::read_to_string(dir.scratch()?.join("step-3.ckpt"))?;
            fs::write(dir.join("model.bin"), format!("done after {resumed}"))?;
            Ok(json!({}))
        })
        .unwrap();
    assert_eq!(fs::read_to_string(out.path.join("model.bin")).unwrap(), "done after resume me");
    assert!(!scratch.exists(), "the scratch folder is deleted once the stage succeeds");
}

/// A damaged folder found under the lock is refused without computing (the fix is --force);
/// the lock file this run had to create (a store copied without its lock files) goes too.
#[test]
fn a_damaged_folder_found_under_the_lock_leaves_the_store_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("runs");
    let input = tmp.path().join("in.txt");
    fs::write(&input, "hello").unwrap();
    let spec = spec(&input, 0.1);
    let out = Store::new(&root).run(&spec, false, good).unwrap();
    fs::write(out.path.join("model.bin"), "tampered").unwrap();
    fs::remove_file(root.join("train").join(format!("{}.lock", out.key))).unwrap();
    let snap = snapshot(&root);
    let err = Store::new(&root)
        .run(&spec, false, |_| -> Result<Value> { panic!("a damaged folder must not be recomputed without --force") })
        .unwrap_err();
    assert!(chain(&err).contains("--force") && chain(&err).contains("model.bin"), "{err:#}");
    assert_eq!(snapshot_diff(&snap, &snapshot(&root)), Vec::<String>::new());
}
