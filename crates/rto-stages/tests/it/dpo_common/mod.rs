//! Fixtures shared by the dpo-train and rm-train tests: a small byte-level tokenizer (from the
//! venv's `tokenizers`, via tests/python/hf_reference.py), tiny random Llama folders, JSONL
//! preference files, in-process stage runs, and store look-ups.
#![allow(dead_code)]

use rto_model::{CausalLm, Head, ModelConfig};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tch::{Device, Kind};

pub use rto_test_support::{manifest, stage_output as output, stage_outputs as outputs};

/// Runs tests/python/hf_reference.py with the project venv; panics with its stderr on failure.
pub fn reference(args: &[&str]) {
    rto_test_support::python_script("hf_reference.py", args);
}

/// The records of a folder's metrics.jsonl.
pub fn metrics(dir: &Path) -> Vec<Value> {
    rto_test_support::read_jsonl(&dir.join("metrics.jsonl"))
}

/// Tokenizer ids reach ~260 (256 byte symbols + specials), so the models need more rows.
pub const VOCAB: i64 = 320;

/// One tokenizer folder per test process (making it starts Python).
pub fn tokenizer_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        reference(&["tokenizer", dir.path().to_str().unwrap()]);
        dir
    })
    .path()
}

/// A random tiny Llama saved as an HF folder with the test tokenizer. `scale` multiplies the
/// default init (std 0.02) so logits are not all ~0 when a test wants distinct numbers.
pub fn tiny_model(dir: &Path, seed: u64, hidden: i64, layers: i64, scale: f64) -> PathBuf {
    let config = ModelConfig::small_llama(VOCAB, hidden, 2 * hidden, layers, 4, 2, 512);
    let model = CausalLm::random(config, Head::LanguageModel, Device::Cpu, Kind::Float, seed).unwrap();
    tch::no_grad(|| {
        for (_, mut t) in model.vs.variables() {
            if t.dim() == 2 {
                let _ = t.g_mul_scalar_(scale);
            }
        }
    });
    model.save(dir, Kind::Float, Some(tokenizer_dir())).unwrap();
    dir.to_path_buf()
}

pub fn pair(prompt: &str, chosen: &str, rejected: &str) -> Value {
    json!({"prompt": prompt, "chosen": chosen, "rejected": rejected})
}

pub fn write_jsonl(path: &Path, rows: &[Value]) -> PathBuf {
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

/// `n` pairs whose chosen response contains "fox" where the rejected one has "cat" (no other
/// word has an 'x', and lengths match in distribution, so only the token tells them apart): a
/// preference a tiny model learns in a few dozen steps.
pub fn learnable_pairs(n: usize, seed: u64) -> Vec<Value> {
    const WORDS: [&str; 10] = ["the", "quick", "brown", "jumps", "over", "lazy", "dog", "hello", "world", "tokens"];
    let mut rng = rto_data::dataset::SplitMix64::new(seed);
    let mut words = |k: usize| -> Vec<&str> { (0..k).map(|_| WORDS[rng.below(WORDS.len() as u64) as usize]).collect() };
    (0..n)
        .map(|i| {
            let prompt = words(3).join(" ");
            let (mut chosen, mut rejected) = (words(3), words(3));
            chosen.insert(i % 4, "fox");
            rejected.insert((i + 1) % 4, "cat");
            pair(&format!("say {prompt}"), &chosen.join(" "), &rejected.join(" "))
        })
        .collect()
}

pub fn args(list: &[&str]) -> Vec<std::ffi::OsString> {
    std::iter::once("test").chain(list.iter().copied()).map(Into::into).collect()
}

pub fn run_dpo(list: &[&str]) -> anyhow::Result<()> {
    rto_stages::dpo::cli(rto_data::cli::parse_with_config_from(args(list))?)
}

pub fn run_rm(list: &[&str]) -> anyhow::Result<()> {
    rto_stages::rm::cli(rto_data::cli::parse_with_config_from(args(list))?)
}

/// Mean of `key` over the last `k` metric lines that have it.
pub fn tail_mean(lines: &[Value], key: &str, k: usize) -> f64 {
    let values: Vec<f64> = lines.iter().filter_map(|l| l[key].as_f64()).collect();
    let tail = &values[values.len().saturating_sub(k)..];
    assert!(!tail.is_empty(), "no `{key}` in the metrics");
    tail.iter().sum::<f64>() / tail.len() as f64
}
