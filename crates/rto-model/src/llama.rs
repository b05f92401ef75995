//! The Llama decoder (and Qwen2, which differs only by q/k/v biases).
//!
//! Variables are created under the Hugging Face tensor names (`model.layers.3.mlp.up_proj.weight`),
//! so loading and saving is a name-for-name copy. Norms run in f32 as transformers does, so bf16
//! models give the same numbers.

use crate::config::{ModelConfig, RopeScaling};
use crate::kv_cache::KvCache;
use anyhow::Result;
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

#[derive(Debug)]
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn new(path: nn::Path, size: i64, eps: f64) -> Self {
        Self { weight: path.ones("weight", &[size]), eps }
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        let kind = xs.kind();
        let xs = xs.to_kind(Kind::Float);
        let variance = xs.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
        let normed = xs * (variance + self.eps).rsqrt();
        &self.weight * normed.to_kind(kind)
    }
}

/// Rotary embedding tables: `inv_freq` is fixed, cos/sin are computed per batch of positions.
#[derive(Debug)]
struct Rotary {
    inv_freq: Tensor,
}

impl Rotary {
    fn new(config: &ModelConfig, device: tch::Device) -> Result<Self> {
        let (theta, scaling) = config.rope()?;
        let dim = config.head_dim();
        let mut inv_freq: Vec<f32> = (0..dim)
            .step_by(2)
            .map(|i| (1.0 / theta.powf(i as f64 / dim as f64)) as f32)
            .collect();
        if let RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position } = scaling {
            let low_wavelen = original_max_position / low_freq_factor;
            let high_wavelen = original_max_position / high_freq_factor;
            for f in inv_freq.iter_mut() {
                let freq = *f as f64;
                let wavelen = 2.0 * std::f64::consts::PI / freq;
                let scaled = if wavelen > low_wavelen {
                    freq / factor
                } else if wavelen < high_wavelen {
                    freq
                } else {
                    let smooth = (original_max_position / wavelen - low_freq_factor)
                        / (high_freq_factor - low_freq_factor);
                    (1.0 - smooth) * freq / factor + smooth * freq
                };
                *f = scaled as f32;
            }
        }
        Ok(Self { inv_freq: Tensor::from_slice(&inv_freq).to_device(device) })
    }

    /// cos and sin of shape [B, 1, T, head_dim] for positions [B, T].
    fn tables(&self, positions: &Tensor, kind: Kind) -> (Tensor, Tensor) {
        let freqs = positions.to_kind(Kind::Float).unsqueeze(-1) * self.inv_freq.view([1, 1, -1]);
        let emb = Tensor::cat(&[&freqs, &freqs], -1).unsqueeze(1);
        (emb.cos().to_kind(kind), emb.sin().to_kind(kind))
    }
}

fn rotate_half(xs: &Tensor) -> Tensor {
    let half = xs.size()[3] / 2;
    let first = xs.narrow(3, 0, half);
    let second = xs.narrow(3, half, half);
    Tensor::cat(&[&second.neg(), &first], 3)
}

fn apply_rotary(xs: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    xs * cos + rotate_half(xs) * sin
}

#[derive(Debug)]
struct Attention {
    q_proj: nn::Linear,
    k_proj: nn::Linear,
    v_proj: nn::Linear,
    o_proj: nn::Linear,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
}

fn linear(path: nn::Path, input: i64, output: i64, bias: bool) -> nn::Linear {
    let config = nn::LinearConfig { ws_init: init_normal(), bs_init: Some(nn::Init::Const(0.0)), bias };
    nn::linear(path, input, output, config)
}

/// transformers' `initializer_range` default; random-init models match theirs in scale.
fn init_normal() -> nn::Init {
    nn::Init::Randn { mean: 0.0, stdev: 0.02 }
}

impl Attention {
    fn new(path: nn::Path, config: &ModelConfig) -> Self {
        let (hidden, heads, kv_heads, head_dim) =
            (config.hidden_size, config.num_attention_heads, config.num_kv_heads(), config.head_dim());
        let qkv_bias = config.qkv_bias();
        Self {
            q_proj: linear(&path / "q_proj", hidden, heads * head_dim, qkv_bias),
            k_proj: linear(&path / "k_proj", hidden, kv_heads * head_dim, qkv_bias),
            v_proj: linear(&path / "v_proj", hidden, kv_heads * head_dim, qkv_bias),
            o_proj: linear(&path / "o_proj", heads * head_dim, hidden, config.o_bias()),
            heads,
            kv_heads,
            head_dim,
        }
    }

    fn forward(&self, xs: &Tensor, rope: &(Tensor, Tensor), mask: &Tensor, cache: Option<(&mut KvCache, usize)>) -> Tensor {
        let (batch, len, _) = xs.size3().expect("hidden states are [B, T, H]");
        let split = |t: Tensor, heads: i64| t.view([batch, len, heads, self.head_dim]).transpose(1, 2);
        let q = apply_rotary(&split(self.q_proj.forward(xs), self.heads), &rope.0, &rope.1);
        let k = apply_rotary(&split(self.k_proj.forward(xs), self.kv_heads), &rope.0, &rope.1);
        let v = split(self.v_proj.forward(xs), self.kv_heads);
        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, &k, &v),
            None => (k, v),
        };
        let attn = Tensor::scaled_dot_product_attention(&q, &k, &v, Some(mask), 0.0, false, None, self.heads != self.kv_heads);
        self.o_proj.forward(&attn.transpose(1, 2).contiguous().view([batch, len, self.heads * self.head_dim]))
    }
}

#[derive(Debug)]
struct Mlp {
    gate_proj: nn::Linear,
    up_proj: nn::Linear,
    down_proj: nn::Linear,
}

impl Mlp {
    fn new(path: nn::Path, hidden: i64, intermediate: i64) -> Self {
        Self {
            gate_proj: linear(&path / "gate_proj", hidden, intermediate, false),
            up_proj: linear(&path / "up_proj", hidden, intermediate, false),
            down_proj: linear(&path / "down_proj", intermediate, hidden, false),
        }
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        self.down_proj.forward(&(self.gate_proj.forward(xs).silu() * self.up_proj.forward(xs)))
    }
}

#[derive(Debug)]
struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl DecoderLayer {
    fn new(path: nn::Path, config: &ModelConfig) -> Self {
        let eps = config.rms_norm_eps;
        Self {
            input_layernorm: RmsNorm::new(&path / "input_layernorm", config.hidden_size, eps),
            self_attn: Attention::new(&path / "self_attn", config),
            post_attention_layernorm: RmsNorm::new(&path / "post_attention_layernorm", config.hidden_size, eps),
            mlp: Mlp::new(&path / "mlp", config.hidden_size, config.intermediate_size),
        }
    }
}

/// The decoder stack without heads: token ids in, final-norm hidden states out.
#[derive(Debug)]
pub struct Llama {
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    rotary: Rotary,
}

impl Llama {
    /// Creates the variables under `path` (normally `root / "model"`) with random values.
    pub fn new(path: nn::Path, config: &ModelConfig) -> Result<Self> {
        let embed_tokens =
            (&path / "embed_tokens").var("weight", &[config.vocab_size, config.hidden_size], init_normal());
        let layers = (0..config.num_hidden_layers)
            .map(|i| DecoderLayer::new(&path / "layers" / i, config))
            .collect();
        let norm = RmsNorm::new(&path / "norm", config.hidden_size, config.rms_norm_eps);
        let rotary = Rotary::new(config, path.device())?;
        Ok(Self { embed_tokens, layers, norm, rotary })
    }

    pub fn embedding(&self) -> &Tensor {
        &self.embed_tokens
    }

    /// Hidden states [B, T, H] for `input_ids` [B, T].
    ///
    /// `attention_mask` [B, S] marks real tokens (1) and padding (0) over everything attended to:
    /// the cached prefix plus these T tokens (S = cached + T). `positions` [B, T] are the rotary
    /// positions, which skip left padding.
    pub fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor, positions: &Tensor, mut cache: Option<&mut KvCache>) -> Tensor {
        let mut xs = self.embed_tokens.embedding_forward(input_ids);
        let past = cache.as_ref().map_or(0, |c| c.len());
        let bias = attention_bias(attention_mask, input_ids.size()[1], past, xs.kind());
        let rope = self.rotary.tables(positions, xs.kind());
        for (i, layer) in self.layers.iter().enumerate() {
            let attn_in = layer.input_layernorm.forward(&xs);
            let layer_cache = cache.as_deref_mut().map(|c| (c, i));
            xs = xs + layer.self_attn.forward(&attn_in, &rope, &bias, layer_cache);
            xs = &xs + layer.mlp.forward(&layer.post_attention_layernorm.forward(&xs));
        }
        if let Some(cache) = cache {
            cache.advance(input_ids.size()[1]);
        }
        self.norm.forward(&xs)
    }
}

trait EmbeddingForward {
    fn embedding_forward(&self, ids: &Tensor) -> Tensor;
}

impl EmbeddingForward for Tensor {
    fn embedding_forward(&self, ids: &Tensor) -> Tensor {
        Tensor::embedding(self, ids, -1, false, false)
    }
}

/// Additive attention bias [B, 1, T, S]: query t (absolute position past + t) sees key s when
/// s ≤ past + t and key s is not padding. Blocked entries get the dtype's minimum rather than
/// -inf, so a fully padded query row stays finite (its output is never used).
fn attention_bias(attention_mask: &Tensor, len: i64, past: usize, kind: Kind) -> Tensor {
    let device = attention_mask.device();
    let total = attention_mask.size()[1];
    let keys = Tensor::arange(total, (Kind::Int64, device)).view([1, -1]);
    let queries = Tensor::arange(len, (Kind::Int64, device)).view([-1, 1]) + past as i64;
    let causal = keys.le_tensor(&queries).view([1, 1, len, total]);
    let not_pad = attention_mask.ne(0).view([-1, 1, 1, total]);
    let allowed = causal.logical_and(&not_pad);
    let min = match kind {
        Kind::Half => -65504.0,
        Kind::BFloat16 => -3.38e38,
        _ => f32::MIN as f64,
    };
    allowed.logical_not().to_kind(kind) * min
}

/// Rotary positions from a padding mask: each row counts only its real tokens.
pub fn positions_from_mask(attention_mask: &Tensor) -> Tensor {
    (attention_mask.cumsum(1, Kind::Int64) - 1).clamp_min(0)
}
