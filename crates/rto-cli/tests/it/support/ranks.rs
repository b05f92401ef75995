//! Multi-process launches of a stage binary, by hand the way torchrun would (RANK/WORLD_SIZE/
//! LOCAL_RANK/MASTER_ADDR/MASTER_PORT; Gloo on CPU, one thread each), and what their outputs
//! are compared by.

use super::{bin, repo_root};
use std::collections::BTreeMap;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use tch::{Kind, Tensor};

/// The group timeout the ranks get (RTO_DIST_TIMEOUT_S); a dead peer fails them far sooner.
pub const TIMEOUT_S: u64 = 30;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `world` ranks of the stage binary `name` with `list`.
pub fn spawn_ranks(name: &str, list: &[String], world: usize) -> Vec<Child> {
    let port = free_port().to_string();
    (0..world)
        .map(|rank| {
            Command::new(bin(name))
                .args(list)
                .current_dir(repo_root())
                .envs([("RANK", rank.to_string()), ("LOCAL_RANK", rank.to_string())])
                .envs([("WORLD_SIZE", world.to_string()), ("MASTER_ADDR", "127.0.0.1".into())])
                .envs([("MASTER_PORT", port.clone()), ("OMP_NUM_THREADS", "1".into())])
                .env("RTO_DIST_TIMEOUT_S", TIMEOUT_S.to_string())
                .env_remove("RUST_BACKTRACE")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `world` ranks of `name` to the end, asserting each succeeds; returns rank 0's output
/// folder (its last stdout line) and every rank's output.
pub fn run_ranks(name: &str, list: &[String], world: usize) -> (PathBuf, Vec<Output>) {
    let outputs: Vec<Output> =
        spawn_ranks(name, list, world).into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    for (rank, out) in outputs.iter().enumerate() {
        assert!(out.status.success(), "{name} rank {rank} failed: {}\n{}", out.status, text(&out.stderr));
    }
    let path = PathBuf::from(text(&outputs[0].stdout).lines().last().unwrap_or(""));
    (path, outputs)
}

pub fn weights(dir: &Path) -> BTreeMap<String, Tensor> {
    Tensor::read_safetensors(dir.join("model.safetensors")).unwrap().into_iter().collect()
}

/// Largest |a - b| over every tensor of two weight sets with the same names.
pub fn max_diff(a: &BTreeMap<String, Tensor>, b: &BTreeMap<String, Tensor>) -> f64 {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    a.iter()
        .map(|(name, t)| (t.to_kind(Kind::Double) - b[name].to_kind(Kind::Double)).abs().max().double_value(&[]))
        .fold(0.0, f64::max)
}

/// `train/loss` of every step in an output folder's metrics.jsonl.
pub fn losses(dir: &Path) -> Vec<f64> {
    let text = fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["train/loss"].as_f64().unwrap())
        .collect()
}

/// Metrics records rank 0 has written to its scratch log of `stage` (its optimizer steps done).
pub fn records_done(store: &Path, stage: &str) -> usize {
    let Ok(entries) = fs::read_dir(store.join(stage)) else { return 0 };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".work-"))
        .filter_map(|e| fs::read_to_string(e.path().join("metrics.jsonl")).ok())
        .map(|t| t.lines().count())
        .max()
        .unwrap_or(0)
}
