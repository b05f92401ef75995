//! The memory plan's parameter count against the tensors a built model really holds.

use rto_model::memory::{kv_cache_bytes, parameter_count};
use rto_model::{CausalLm, Head, ModelConfig};
use tch::{Device, Kind};

fn built_parameters(config: &ModelConfig, head: Head) -> u64 {
    let model = CausalLm::random(config.clone(), head, Device::Cpu, Kind::Float, 0).unwrap();
    model.named_tensors().values().map(|t| t.numel() as u64).sum()
}

#[test]
fn parameter_count_matches_the_built_model() {
    let llama = ModelConfig::small_llama(300, 64, 176, 3, 8, 2, 128);
    let mut qwen = llama.clone();
    qwen.model_type = "qwen2".into();
    let mut tied = llama.clone();
    tied.tie_word_embeddings = true;
    for (name, config) in [("llama gqa", &llama), ("qwen2 (q/k/v bias)", &qwen), ("tied embeddings", &tied)] {
        for head in [Head::LanguageModel, Head::Score] {
            assert_eq!(parameter_count(config, head), built_parameters(config, head), "{name}, {head:?}");
        }
    }
}

#[test]
fn kv_cache_bytes_by_hand() {
    // 3 layers × 2 (k and v) × 4 rows × 10 positions × 2 kv heads × head_dim 8 × 4 bytes.
    let config = ModelConfig::small_llama(300, 64, 176, 3, 8, 2, 128);
    assert_eq!(kv_cache_bytes(&config, 4, 10, 4), 3 * 2 * 4 * 10 * 2 * 8 * 4);
}
