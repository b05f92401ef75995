//! The Rust side of `make bench`: the same work as bench/bench_model.py does in PyTorch,
//! timed here and printed as JSON for the Python driver to pair up.

use anyhow::Result;
use rto_model::{generate, response_logprobs, CausalLm, Head, ModelConfig, SamplingConfig, SequenceBatch};
use rto_rng::{SplitMix64, Stream};
use std::time::Instant;
use tch::nn::OptimizerConfig;
use tch::{Device, Kind, Tensor};

/// The benchmark model of the workspace issue: vocab 4096, hidden 256, 4 layers, GQA 8/4.
pub fn bench_config() -> ModelConfig {
    ModelConfig::small_llama(4096, 256, 688, 4, 8, 4, 2048)
}

/// A ~0.5B-parameter Llama (Qwen2.5-0.5B-like shape) for timing on a GPU.
pub fn large_config() -> ModelConfig {
    ModelConfig::small_llama(32000, 1024, 2816, 16, 16, 4, 4096)
}

/// Max |Δ| between CPU and `device` response log-probs of the model in `dir` on a fixed batch.
pub fn device_logprob_difference(dir: &std::path::Path, device: Device) -> Result<f64> {
    let run = |device| -> Result<Tensor> {
        let model = CausalLm::load(dir, Head::LanguageModel, device, Kind::Float)?;
        let vocab = model.config.vocab_size;
        let prompts = random_tokens(4, 12, vocab, 5);
        let responses = random_tokens(4, 20, vocab, 6);
        let batch = SequenceBatch::new(&prompts, &responses, 0, device)?;
        Ok(tch::no_grad(|| response_logprobs(&model, &batch, false).logprobs.to_device(Device::Cpu)))
    };
    let (cpu, other) = (run(Device::Cpu)?, run(device)?);
    Ok((cpu - other).abs().max().double_value(&[]))
}

/// Token ids uniform in `3..vocab` (ids below 3 are special in the bench configs).
fn random_tokens(rows: usize, len: usize, vocab: i64, seed: u64) -> Vec<Vec<i64>> {
    let mut rng = SplitMix64::for_stream(seed, Stream::Synthetic, 0);
    (0..rows).map(|_| (0..len).map(|_| 3 + rng.below(vocab as u64 - 3) as i64).collect()).collect()
}

/// Generated tokens per second: `batch` prompts of `prompt_len` tokens, `new_tokens` each.
pub fn generation(
    config: ModelConfig,
    batch: usize,
    prompt_len: usize,
    new_tokens: usize,
    device: Device,
    (kind, cuda_graph): (Kind, bool),
) -> Result<f64> {
    let model = CausalLm::random(config, Head::LanguageModel, device, kind, 0)?;
    let prompts = random_tokens(batch, prompt_len, model.config.vocab_size, 1);
    let config = SamplingConfig { max_new_tokens: new_tokens, seed: 2, cuda_graph, ..Default::default() };
    if device.is_cuda() {
        generate(&model, &prompts[..2], &SamplingConfig { max_new_tokens: 2, ..config.clone() }, 0)?;
        tch::Cuda::synchronize(device_index(device) as i64);
    }
    let start = Instant::now();
    let out = generate(&model, &prompts, &config, 0)?;
    let secs = start.elapsed().as_secs_f64();
    let tokens: usize = out.responses.iter().map(Vec::len).sum();
    Ok(tokens as f64 / secs)
}

/// How far decode steps replayed from a CUDA graph are from the same buffered steps run
/// eagerly, on a random model of `config` (the GPU check's numbers): whether every sampled token
/// is the same, and the largest |Δ log-prob| over the sampled tokens.
pub fn graph_replay_difference(config: ModelConfig, device: Device, kind: Kind) -> Result<(bool, f64)> {
    use rto_model::decode_graph::DecodeMode;
    let model = CausalLm::random(config, Head::LanguageModel, device, kind, 0)?;
    let prompts = random_tokens(8, 16, model.config.vocab_size, 1);
    let config = SamplingConfig { max_new_tokens: 32, temperature: 0.9, seed: 2, ..Default::default() };
    let run = |capture| {
        rto_model::sampling::generate_with_decode(&model, &prompts, &config, 0, DecodeMode::Buffered { capture })
    };
    let (eager, replayed) = (run(false)?, run(true)?);
    let gap = eager
        .logprobs
        .iter()
        .flatten()
        .zip(replayed.logprobs.iter().flatten())
        .map(|(a, b)| f64::from((a - b).abs()))
        .fold(0.0, f64::max);
    Ok((eager.responses == replayed.responses, gap))
}

/// Tokens per second of a DPO-shaped step: policy forward+backward on `pairs` chosen and
/// `pairs` rejected sequences of `seq_len` tokens, a reference forward without grad, AdamW.
pub struct DpoStepBench {
    policy: CausalLm,
    reference: CausalLm,
    optimizer: tch::nn::Optimizer,
    batch: SequenceBatch,
    pairs: i64,
}

impl DpoStepBench {
    pub fn new(config: ModelConfig, pairs: usize, seq_len: usize, device: Device) -> Result<Self> {
        let vocab = config.vocab_size;
        let policy = CausalLm::random(config.clone(), Head::LanguageModel, device, Kind::Float, 0)?;
        let reference = CausalLm::random(config, Head::LanguageModel, device, Kind::Float, 1)?;
        let optimizer = tch::nn::AdamW::default().build(&policy.vs, 1e-5)?;
        let prompt_len = seq_len / 4;
        let prompts = random_tokens(2 * pairs, prompt_len, vocab, 3);
        let responses = random_tokens(2 * pairs, seq_len - prompt_len, vocab, 4);
        let batch = SequenceBatch::new(&prompts, &responses, 0, device)?;
        Ok(Self { policy, reference, optimizer, batch, pairs: pairs as i64 })
    }

    pub fn tokens_per_step(&self) -> usize {
        self.batch.input_ids.numel()
    }

    /// One step; returns the loss so the work cannot be optimised away.
    pub fn step(&mut self) -> f64 {
        let reference = tch::no_grad(|| {
            response_logprobs(&self.reference, &self.batch, false).logprobs.sum_dim_intlist(
                [1].as_slice(),
                false,
                Kind::Float,
            )
        });
        let policy = response_logprobs(&self.policy, &self.batch, false).logprobs.sum_dim_intlist(
            [1].as_slice(),
            false,
            Kind::Float,
        );
        let delta = (&policy - &reference).view([2, self.pairs]);
        let margin = delta.get(0) - delta.get(1);
        let loss = -(margin * 0.1).log_sigmoid().mean(Kind::Float);
        self.optimizer.zero_grad();
        self.policy.backward(&loss);
        self.optimizer.step();
        loss.double_value(&[]) // a host read: also waits for a GPU to finish the step
    }
}

fn device_index(device: Device) -> usize {
    match device {
        Device::Cuda(i) => i,
        _ => 0,
    }
}
