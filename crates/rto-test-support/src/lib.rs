//! What the workspace's tests share (a dev-dependency of every crate with tests): where the
//! repository and its venv are, running the Python peers the tests compare against, finding a
//! stage's output in a store, and snapshotting a folder to prove that a failed run changed
//! nothing. No tensors here, so any crate's tests can use it.

use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root (where `data/`, `pipelines/`, `tests/python/` and `.venv/` live).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the repository root exists")
}

/// The project venv's interpreter (torch, transformers, pyarrow: the tests' independent
/// references). Panics with the fix when it is missing, rather than skipping silently.
pub fn venv_python() -> PathBuf {
    let python = repo_root().join(".venv/bin/python");
    assert!(python.exists(), "{} is missing: run `make setup` first", python.display());
    python
}

/// Runs `tests/python/<script>` with the venv's Python; returns stdout, panicking with stderr
/// when it fails.
pub fn python_script(script: &str, args: &[&str]) -> String {
    let path = repo_root().join("tests/python").join(script);
    run_python(Command::new(venv_python()).arg(&path).args(args), script)
}

/// Runs Python source `code` (as `python -c`) with `args` in `sys.argv[1:]`.
pub fn python_code(code: &str, args: &[&str]) -> String {
    run_python(Command::new(venv_python()).arg("-c").arg(code).args(args), "python -c")
}

fn run_python(command: &mut Command, what: &str) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("cannot start the venv's python for {what}: {e}"));
    assert!(out.status.success(), "{what} failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("python printed UTF-8")
}

/// The accepted output folders of `stage` in `store` (folders holding a manifest), sorted.
pub fn stage_outputs(store: &Path, stage: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(store.join(stage)) else { return vec![] };
    let mut dirs: Vec<PathBuf> = entries
        .map(|e| e.expect("readable store entry").path())
        .filter(|p| p.join("manifest.json").is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    dirs.sort();
    dirs
}

/// The one accepted output folder of `stage` in `store`.
pub fn stage_output(store: &Path, stage: &str) -> PathBuf {
    let dirs = stage_outputs(store, stage);
    assert_eq!(dirs.len(), 1, "expected one {stage} output in {}, found {dirs:?}", store.display());
    dirs[0].clone()
}

/// A folder's `manifest.json`.
pub fn manifest(dir: &Path) -> Value {
    read_json(&dir.join("manifest.json"))
}

pub fn read_json(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The records of a JSON-lines file (metrics logs, datasets).
pub fn read_jsonl(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).collect()
}

/// Every path under `dir` (relative) with what it is: a file its blake3 digest, a link its
/// target (not followed), a folder `<dir>`, anything else (FIFO, socket) `<special>`. Equal
/// snapshots mean an unchanged tree.
pub fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if dir.symlink_metadata().is_ok() {
        walk(dir, dir, &mut out);
    }
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries {
        let entry = entry.expect("readable folder entry");
        let path = entry.path();
        let rel = path.strip_prefix(root).expect("under root").to_string_lossy().into_owned();
        let kind = entry.file_type().expect("file type");
        if kind.is_symlink() {
            out.insert(rel, format!("<link> {}", fs::read_link(&path).expect("link target").display()));
        } else if kind.is_dir() {
            out.insert(rel, "<dir>".into());
            walk(root, &path, out);
        } else if !kind.is_file() {
            out.insert(rel, "<special>".into());
        } else {
            let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.insert(rel, blake3::hash(&bytes).to_hex().to_string());
        }
    }
}

/// What differs between two snapshots, one entry per path: `removed x`, `added x`, `changed x`.
pub fn snapshot_diff(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    let mut diff = Vec::new();
    for (path, was) in before {
        match after.get(path) {
            None => diff.push(format!("removed {path}")),
            Some(now) if now != was => diff.push(format!("changed {path}")),
            _ => {}
        }
    }
    diff.extend(after.keys().filter(|p| !before.contains_key(*p)).map(|p| format!("added {p}")));
    diff
}
