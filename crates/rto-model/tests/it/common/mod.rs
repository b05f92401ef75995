//! Test helpers: the venv's transformers as the independent reference.
#![allow(dead_code)]

use rto_model::{CausalLm, Head, ModelConfig, SequenceBatch};
use rto_rng::{SplitMix64, Stream};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Runs tests/python/hf_reference.py with the project venv; panics with its stderr on failure.
pub fn reference(args: &[&str]) {
    rto_test_support::python_script("hf_reference.py", args);
}

/// A tiny transformers model of the given kind in a fresh temp dir.
pub fn hf_model(kind: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    reference(&["make", kind, dir.path().to_str().unwrap()]);
    dir
}

pub fn read_tensor(path: &Path, name: &str) -> Tensor {
    Tensor::read_safetensors(path)
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t)
        .unwrap_or_else(|| panic!("{name} not in {}", path.display()))
}

pub fn write_batch(path: &Path, ids: &[Vec<i64>], mask: &[Vec<i64>]) {
    let json = serde_json::json!({"input_ids": ids, "attention_mask": mask});
    std::fs::write(path, json.to_string()).unwrap();
}

/// max |a-b| / max |b| over the positions where `mask` is 1 (padding outputs are unspecified).
pub fn masked_rel_error(ours: &Tensor, theirs: &Tensor, mask: &Tensor) -> f64 {
    let m = mask.to_kind(tch::Kind::Float).unsqueeze(-1);
    let diff = ((ours - theirs).abs() * &m).max().double_value(&[]);
    let scale = (theirs.abs() * &m).max().double_value(&[]);
    diff / scale
}

// Random models and batches for the gradient-checkpointing and packing tests.

pub const VOCAB: i64 = 61;

/// An untied Llama with grouped-query attention (4 query heads over 2 key/value heads).
pub fn llama_gqa() -> ModelConfig {
    ModelConfig::small_llama(VOCAB, 32, 80, 3, 4, 2, 64)
}

/// Qwen2-style: q/k/v biases and the LM head tied to the input embedding (Qwen2.5-0.5B).
pub fn qwen2_tied() -> ModelConfig {
    let mut config = ModelConfig::small_llama(VOCAB, 32, 80, 3, 4, 2, 64);
    config.model_type = "qwen2".into();
    config.tie_word_embeddings = true;
    config
}

/// A random model whose weights are large enough (std 0.2) for the logits to vary, with
/// nonzero q/k/v biases where the architecture has them, so every variable gets a gradient.
pub fn model(config: ModelConfig, head: Head, seed: u64) -> CausalLm {
    let model = CausalLm::random(config, head, Device::Cpu, Kind::Float, seed).unwrap();
    let variables: BTreeMap<String, Tensor> = model.vs.variables().into_iter().collect();
    tch::no_grad(|| {
        for (index, (name, mut t)) in variables.into_iter().enumerate() {
            if t.dim() == 2 {
                let _ = t.g_mul_scalar_(10.0);
            } else if name.ends_with("bias") {
                let mut rng = SplitMix64::for_stream(seed, Stream::Synthetic, index as u64);
                let values: Vec<f32> = (0..t.numel()).map(|_| rng.next_f32() - 0.5).collect();
                t.copy_(&Tensor::from_slice(&values));
            }
        }
    });
    model
}

/// Rows of random token ids with the given lengths.
pub fn tokens(lengths: &[usize], seed: u64) -> Vec<Vec<i64>> {
    let mut rng = SplitMix64::for_stream(seed, Stream::Synthetic, 0);
    lengths.iter().map(|&n| (0..n).map(|_| 1 + rng.below(VOCAB as u64 - 1) as i64).collect()).collect()
}

/// A batch with left-padded prompts and right-padded responses of different lengths.
pub fn batch(prompt_lengths: &[usize], response_lengths: &[usize], seed: u64) -> SequenceBatch {
    let (prompts, responses) = (tokens(prompt_lengths, seed), tokens(response_lengths, seed + 1));
    SequenceBatch::new(&prompts, &responses, 0, Device::Cpu).unwrap()
}
