//! Batched generation with a KV cache: one prefill over the left-padded prompts, then one
//! token per step for the whole batch, rows dropping out as they emit a stop token.

use crate::batch::SequenceBatch;
use crate::decode_graph::{check_cuda_graph, DecodeMode, DecodeStep};
use crate::kv_cache::KvCache;
use crate::llama::positions_from_mask;
use crate::model::CausalLm;
use anyhow::{bail, Result};
use rto_rng::SplitMix64;
use tch::{Kind, Tensor};

#[derive(Debug, Clone)]
pub struct SamplingConfig {
    pub max_new_tokens: usize,
    /// Softmax temperature; ignored when `greedy`.
    pub temperature: f64,
    /// Nucleus threshold in (0, 1]; 1 disables it.
    pub top_p: f64,
    /// Keep only the k most likely tokens; 0 disables it.
    pub top_k: i64,
    pub greedy: bool,
    /// Tokens that end a response (EOS and friends). The stop token is part of the response.
    pub stop_ids: Vec<i64>,
    /// Seeds this call's own generator ([`rto_rng::SplitMix64`]): the draws depend on this
    /// seed and the logits alone, not on anything else the process did, and are the same on
    /// every device.
    pub seed: u64,
    /// Replay the decode steps from a CUDA graph captured at the first one (`--cuda-graph`;
    /// CUDA only, in a build with `rto-cuda/graphs`; see `decode_graph`).
    pub cuda_graph: bool,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 64,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            greedy: false,
            stop_ids: vec![],
            seed: 0,
            cuda_graph: false,
        }
    }
}

impl SamplingConfig {
    pub fn validate(&self) -> Result<()> {
        if self.max_new_tokens == 0 {
            bail!("max_new_tokens must be at least 1");
        }
        let usable_temperature = self.temperature > 0.0 && self.temperature.is_finite();
        if !self.greedy && !usable_temperature {
            bail!("temperature must be positive (got {}); use greedy for argmax decoding", self.temperature);
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            bail!("top_p must be in (0, 1], got {}", self.top_p);
        }
        if self.top_k < 0 {
            bail!("top_k must be >= 0, got {}", self.top_k);
        }
        Ok(())
    }
}

/// What a generation call produced, per row.
#[derive(Debug, Default)]
pub struct Generation {
    /// Generated tokens of each row, the stop token included when one was emitted.
    pub responses: Vec<Vec<i64>>,
    /// Whether each row ended with a stop token (rather than running out of budget).
    pub finished: Vec<bool>,
    /// log π(token | prefix) of each generated token under the model's unmodified distribution
    /// (before temperature, top-k and top-p), in fp32: a PPO rollout's old log-probs, without
    /// a second policy forward.
    pub logprobs: Vec<Vec<f32>>,
    /// Entropy of that unmodified next-token distribution at each generated token, in fp32.
    pub entropies: Vec<Vec<f32>>,
}

impl Generation {
    /// Appends `other`'s rows after this one's (generation batches into a forward batch).
    pub fn append(&mut self, other: Generation) {
        self.responses.extend(other.responses);
        self.finished.extend(other.finished);
        self.logprobs.extend(other.logprobs);
        self.entropies.extend(other.entropies);
    }

    /// The prompts and responses in the shared batch layout, ready for scoring forwards.
    /// Rows that produced nothing get one pad token so the layout stays valid (masked out).
    pub fn to_batch(&self, prompts: &[Vec<i64>], pad_id: i64, device: tch::Device) -> Result<SequenceBatch> {
        SequenceBatch::new(prompts, &self.responses, pad_id, device)
    }
}

/// Samples continuations of `prompts` (token ids, unpadded) from `model`.
pub fn generate(model: &CausalLm, prompts: &[Vec<i64>], config: &SamplingConfig, pad_id: i64) -> Result<Generation> {
    let mode = if config.cuda_graph {
        DecodeMode::Buffered { capture: true }
    } else if fixed_decode_width(model.vs.kind(), model.device()) {
        DecodeMode::Fixed
    } else {
        DecodeMode::Growing
    };
    generate_with_decode(model, prompts, config, pad_id, mode)
}

/// [`generate`] with the decode steps run as the caller says ([`DecodeMode`]): attention over
/// the filled part of the KV cache or over all of it, and from buffers a CUDA graph can
/// replay. Every mode gives the same tokens, and log-probs up to rounding; tests compare them.
pub fn generate_with_decode(
    model: &CausalLm,
    prompts: &[Vec<i64>],
    config: &SamplingConfig,
    pad_id: i64,
    mode: DecodeMode,
) -> Result<Generation> {
    config.validate()?;
    if mode == (DecodeMode::Buffered { capture: true }) {
        check_cuda_graph(model.device())?;
    }
    let fixed = mode != DecodeMode::Growing;
    if prompts.is_empty() {
        return Ok(Generation::default());
    }
    if let Some(i) = prompts.iter().position(Vec::is_empty) {
        bail!("prompt {i} is empty");
    }
    let device = model.device();
    let batch = prompts.len() as i64;
    let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let max_positions = model.config.max_position_embeddings as usize;
    if width + config.max_new_tokens > max_positions {
        bail!(
            "prompt length {width} + max_new_tokens {} exceeds max_position_embeddings {max_positions}",
            config.max_new_tokens
        );
    }
    let mut uniforms = SplitMix64::new(config.seed);
    let (ids, mask) = left_pad(prompts, pad_id, width);
    let input_ids = Tensor::from_slice(&ids).view([batch, width as i64]).to_device(device);
    let attention_mask = Tensor::from_slice(&mask).view([batch, width as i64]).to_device(device);
    let kind = model.vs.kind();
    let cfg = &model.config;
    let mut cache = KvCache::new(
        cfg.num_hidden_layers as usize,
        batch,
        cfg.num_kv_heads(),
        width + config.max_new_tokens,
        cfg.head_dim(),
        (kind, device),
    )
    .with_fixed_decode_width(fixed);
    if let DecodeMode::Buffered { .. } = mode {
        cache = cache.with_write_slot();
    }
    let decode_bias = decode_attention_bias(&attention_mask, config.max_new_tokens, kind);
    // Row t blocks the generated positions after step t: what a fixed-width step adds to the
    // bias, since it sees the whole cache (one [new, prompt + new] table, a row per step).
    let unwritten = fixed.then(|| unwritten_positions_bias(width, config.max_new_tokens, kind, device));
    let mut responses: Vec<Vec<i64>> = vec![Vec::new(); prompts.len()];
    let mut finished = vec![false; prompts.len()];
    let mut step_logprobs: Vec<Tensor> = Vec::with_capacity(config.max_new_tokens);
    let mut step_entropies: Vec<Tensor> = Vec::with_capacity(config.max_new_tokens);
    tch::no_grad(|| -> Result<()> {
        let positions = positions_from_mask(&attention_mask);
        let hidden = model.decoder.forward(&input_ids, &attention_mask, &positions, Some(&mut cache));
        let last_prompt_positions = positions.narrow(1, width as i64 - 1, 1);
        let mut logits = model.logits(&hidden.narrow(1, width as i64 - 1, 1)).squeeze_dim(1);
        let mut decode = DecodeStep::new(mode, &last_prompt_positions, &decode_bias);
        for step in 0..config.max_new_tokens {
            let step_logits = logits.to_kind(Kind::Float);
            let tokens = pick_tokens(&step_logits, config, &mut uniforms);
            // Gathered on the device and read once at the end: no extra transfer per step.
            let picked = step_logits.gather(-1, &tokens.unsqueeze(-1), false).squeeze_dim(-1);
            let lse = step_logits.logsumexp([-1], false);
            // H = lse − E_p[logit], the form `token_logprobs` uses.
            let probs = (&step_logits - lse.unsqueeze(-1)).exp();
            let expected_logit = (&probs * &step_logits).sum_dim_intlist([-1].as_slice(), false, Kind::Float);
            step_entropies.push(&lse - expected_logit);
            step_logprobs.push(picked - lse);
            // The one device→host transfer per step: stop checks happen on the host copy.
            let tokens_host = Vec::<i64>::try_from(&tokens)?;
            for (row, &token) in tokens_host.iter().enumerate() {
                if !finished[row] {
                    responses[row].push(token);
                    finished[row] = config.stop_ids.contains(&token);
                }
            }
            if finished.iter().all(|&f| f) || step + 1 == config.max_new_tokens {
                break;
            }
            // Finished rows keep decoding a pad token whose output is discarded: keeping the
            // batch rectangular is cheaper than compacting the cache.
            let step_ids = if finished.iter().any(|&f| f) {
                let done = Tensor::from_slice(&finished).to_device(device);
                tokens.masked_fill(&done, pad_id).view([batch, 1])
            } else {
                tokens.view([batch, 1])
            };
            let bias = match &unwritten {
                Some(rows) => &decode_bias + rows.get(step as i64),
                None => decode_bias.narrow(3, 0, cache.len() as i64 + 1),
            };
            let step_positions = &last_prompt_positions + (step as i64 + 1);
            logits = decode.run(model, &mut cache, &step_ids, &step_positions, &bias)?;
        }
        Ok(())
    })?;
    let per_row = |steps: &[Tensor]| -> Result<Vec<Vec<f32>>> {
        let all = Vec::<Vec<f32>>::try_from(&Tensor::stack(steps, 1).to_device(tch::Device::Cpu))?;
        Ok(all.into_iter().zip(&responses).map(|(row, response)| row[..response.len()].to_vec()).collect())
    };
    let (logprobs, entropies) = (per_row(&step_logprobs)?, per_row(&step_entropies)?);
    Ok(Generation { responses, finished, logprobs, entropies })
}

/// Whether decode steps attend over the whole KV cache (fixed shapes, see `kv_cache`): on a
/// CPU in reduced precision, where oneDNN serves the attention products and compiles kernels
/// for every new shape. Measured on the bench's PPO command line (bf16, 5 iterations of 64
/// steps): 125 kernel compilations, 83 ms, came from the growing decode shapes. In fp32 the
/// products go to the BLAS, which compiles nothing, and the shorter rows are cheaper.
pub fn fixed_decode_width(kind: Kind, device: tch::Device) -> bool {
    device == tch::Device::Cpu && kind != Kind::Float
}

/// [new, 1, 1, prompt + new]: in row t, every generated position after step t blocked (the
/// dtype's most negative value), the rest zero. Step t (0-based, its token the t-th new one)
/// adds row t to the decode bias.
fn unwritten_positions_bias(prompt: usize, new_tokens: usize, kind: Kind, device: tch::Device) -> Tensor {
    let total = (prompt + new_tokens) as i64;
    let keys = Tensor::arange(total, (Kind::Int64, device)).view([1, -1]);
    let last_visible = Tensor::arange(new_tokens as i64, (Kind::Int64, device)).view([-1, 1]) + prompt as i64;
    let blocked = keys.gt_tensor(&last_visible);
    crate::llama::blocked_bias(&blocked, kind).view([new_tokens as i64, 1, 1, total])
}

/// The attention bias of every decode step at once, [B, 1, 1, prompt + new]: prompt padding is
/// blocked, every generated position is visible (finished rows decode pads whose outputs are
/// discarded). Causality needs no mask: a step's single query comes after all cached keys.
fn decode_attention_bias(prompt_mask: &Tensor, new_tokens: usize, kind: Kind) -> Tensor {
    let batch = prompt_mask.size()[0];
    let generated = Tensor::ones([batch, new_tokens as i64], (Kind::Int64, prompt_mask.device()));
    let visible = Tensor::cat(&[prompt_mask, &generated], 1);
    crate::llama::blocked_bias(&visible.eq(0), kind).view([batch, 1, 1, -1])
}

fn left_pad(prompts: &[Vec<i64>], pad_id: i64, width: usize) -> (Vec<i64>, Vec<i64>) {
    let mut ids = Vec::with_capacity(prompts.len() * width);
    let mut mask = Vec::with_capacity(prompts.len() * width);
    for prompt in prompts {
        let pad = width - prompt.len();
        ids.extend(std::iter::repeat_n(pad_id, pad).chain(prompt.iter().copied()));
        mask.extend(std::iter::repeat_n(0i64, pad).chain(std::iter::repeat_n(1, prompt.len())));
    }
    (ids, mask)
}

/// One token per row from logits [B, V]: argmax, or a draw after temperature, top-k and top-p.
fn pick_tokens(logits: &Tensor, config: &SamplingConfig, uniforms: &mut SplitMix64) -> Tensor {
    if config.greedy {
        return logits.argmax(-1, false);
    }
    let mut logits = if config.temperature == 1.0 { logits.shallow_clone() } else { logits / config.temperature };
    let vocab = logits.size()[1];
    if config.top_k > 0 && config.top_k < vocab {
        let (kth, _) = logits.topk(config.top_k, -1, true, true);
        let threshold = kth.narrow(1, config.top_k - 1, 1);
        logits = logits.masked_fill(&logits.lt_tensor(&threshold), f64::NEG_INFINITY);
    }
    if config.top_p < 1.0 {
        let (sorted, order) = logits.sort(-1, true);
        let probs = sorted.softmax(-1, Kind::Float);
        // Drop a token when the mass before it already reaches top_p: the kept set is the
        // smallest prefix whose mass is at least top_p, and always holds the top token.
        let mass_before = probs.cumsum(-1, Kind::Float) - &probs;
        let drop_sorted = mass_before.ge(config.top_p);
        let drop = drop_sorted.scatter(1, &order, &drop_sorted);
        logits = logits.masked_fill(&drop, f64::NEG_INFINITY);
    }
    // Inverse-CDF draw: one uniform per row. `multinomial` draws an exponential variate per
    // vocabulary entry, which costs more than the rest of the step's sampling together.
    let cdf = logits.softmax(-1, Kind::Float).cumsum(-1, Kind::Float);
    let total = cdf.narrow(1, vocab - 1, 1);
    let draws: Vec<f32> = (0..logits.size()[0]).map(|_| uniforms.next_f32()).collect();
    let u = Tensor::from_slice(&draws).view([-1, 1]).to_device(logits.device()) * total;
    u.searchsorted(&cdf, false, false, "left", None::<Tensor>).squeeze_dim(1).clamp_max(vocab - 1)
}
