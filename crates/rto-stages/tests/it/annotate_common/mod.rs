//! Helpers of the annotate tests: tiny random models sharing a byte-level BPE tokenizer,
//! JSONL datasets, running the stage in-process, and the Python peers (tests/python).
#![allow(dead_code)]

use rto_model::{CausalLm, Head, ModelConfig};
use rto_stages::annotate::{main_cli, AnnotateCli};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use tch::{Device, Kind};

pub use rto_test_support::{manifest, python_script as python};

/// The one accepted annotate folder in `store`.
pub fn output(store: &Path) -> PathBuf {
    rto_test_support::stage_output(store, "annotate")
}

/// The byte-level BPE tokenizer of hf_reference.py (ids up to ~260, chat template, </s>).
pub fn tokenizer(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    python("hf_reference.py", &["tokenizer", dir.to_str().unwrap()]);
}

/// A tiny Llama (vocab `vocab`, hidden 64, 2 layers) with weight matrices ~N(0, 0.2): larger
/// than the usual init (10 × std 0.02) so that two random models disagree by nats per token and
/// clipping bites.
pub fn model(dir: &Path, tokenizer_dir: &Path, head: Head, seed: u64, vocab: i64) {
    let config = ModelConfig::small_llama(vocab, 64, 112, 2, 4, 2, 512);
    let model = CausalLm::random(config, head, Device::Cpu, Kind::Float, seed).unwrap();
    tch::no_grad(|| {
        for (_, mut v) in model.vs.variables() {
            if v.dim() == 2 {
                let _ = v.g_mul_scalar_(10.0);
            }
        }
    });
    model.save(dir, Kind::Float, Some(tokenizer_dir)).unwrap();
}

/// Tokenizer + reference, DPO, policy and reward model in one temporary folder.
pub struct Models {
    pub root: tempfile::TempDir,
}

impl Models {
    pub fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let tok = root.path().join("tokenizer");
        tokenizer(&tok);
        model(&root.path().join("ref"), &tok, Head::LanguageModel, 1, 320);
        model(&root.path().join("dpo"), &tok, Head::LanguageModel, 2, 320);
        model(&root.path().join("policy"), &tok, Head::LanguageModel, 3, 320);
        model(&root.path().join("rm"), &tok, Head::Score, 4, 320);
        Self { root }
    }

    pub fn dir(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    pub fn arg(&self, name: &str) -> String {
        self.dir(name).to_str().unwrap().to_string()
    }
}

const WORDS: &[&str] = &[
    "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "hello", "world", "token", "rewards", "are",
    "dense", "a", "b", "c",
];

/// A deterministic sentence of `n` words (an LCG: no rand crate in the tree).
pub fn sentence(seed: u64, n: usize) -> String {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let words: Vec<&str> = (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            WORDS[(state >> 33) as usize % WORDS.len()]
        })
        .collect();
    words.join(" ")
}

pub fn write_jsonl(path: &Path, rows: &[Value]) {
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// `n` preference pairs with responses of different lengths.
pub fn pairs(path: &Path, n: usize) {
    let rows: Vec<Value> = (0..n as u64)
        .map(|i| json!({"prompt": sentence(i, 3), "chosen": sentence(100 + i, 3 + (i % 5) as usize), "rejected": sentence(200 + i, 2 + (i % 7) as usize)}))
        .collect();
    write_jsonl(path, &rows);
}

/// `n` (prompt, response) rows.
pub fn responses(path: &Path, n: usize) {
    let rows: Vec<Value> = (0..n as u64)
        .map(|i| json!({"prompt": sentence(i, 4), "response": sentence(50 + i, 2 + (i % 6) as usize)}))
        .collect();
    write_jsonl(path, &rows);
}

/// Runs `token-reward-annotate ARGS` in-process (YAML config support included).
pub fn run_cli(args: &[&str]) -> anyhow::Result<()> {
    let argv = std::iter::once("token-reward-annotate").chain(args.iter().copied()).map(Into::into).collect();
    main_cli(rto_data::cli::parse_with_config_from::<AnnotateCli>(argv)?)
}
