//! Shared test helpers: where the committed task data and the project venv live.
#![allow(dead_code)]

use std::path::PathBuf;

pub use rto_test_support::repo_root;

/// The committed `data/toy` folder.
pub fn toy_dir() -> PathBuf {
    repo_root().join("data/toy")
}

pub fn read_jsonl(name: &str) -> Vec<serde_json::Value> {
    let path = toy_dir().join(name);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (run `rto-task generate`)", path.display()));
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

pub fn prompts(name: &str) -> Vec<String> {
    read_jsonl(name).iter().map(|r| r["prompt"].as_str().unwrap().to_string()).collect()
}
