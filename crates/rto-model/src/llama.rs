//! The Llama decoder (and Qwen2, which differs only by q/k/v biases).
//!
//! Variables are created under the Hugging Face tensor names (`model.layers.3.mlp.up_proj.weight`),
//! so loading and saving is a name-for-name copy. Norms run in f32 as transformers does, so bf16
//! models give the same numbers.

use crate::checkpointing::Tape;
use crate::config::{ModelConfig, RopeScaling};
use crate::kv_cache::KvCache;
use crate::lora::{init_rng, Adapter, LoraConfig, LoraState};
use anyhow::Result;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

#[derive(Debug)]
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn new(path: nn::Path, size: i64, eps: f64) -> Self {
        Self { weight: variable(&path, "weight", &[size], nn::Init::Const(1.0)), eps }
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        let kind = xs.kind();
        let size = self.weight.size();
        if kind == Kind::Float {
            // One fused kernel instead of six ops; bitwise equal to the unfused f32 formula.
            return xs.rms_norm(size.as_slice(), Some(&self.weight), self.eps);
        }
        // transformers normalises in f32 and applies the weight after casting back.
        let upcast = xs.to_kind(Kind::Float);
        if crate::grad_mode::records_op(&[xs, &self.weight]) {
            let normed = upcast.rms_norm(size.as_slice(), None::<Tensor>, self.eps);
            return &self.weight * normed.to_kind(kind);
        }
        // Without a graph, the same operations (rms_norm's own: mean of squares, + eps, rsqrt,
        // product) with the product written straight into the low-precision result and the
        // weight applied in place: two [tokens, hidden] passes fewer, bitwise equal.
        let mut inverse_rms = upcast.square().mean_dim(Some([-1i64].as_slice()), true, Kind::Float);
        let _ = inverse_rms.g_add_scalar_(self.eps).rsqrt_();
        let mut normed = xs.mul_out(&Tensor::empty_like(xs), &inverse_rms);
        let _ = normed.g_mul_(&self.weight);
        normed
    }
}

/// Rotary embedding tables, computed once for every position the model accepts; a forward
/// only gathers rows (two ops instead of a dozen per decode step).
///
/// `signed_sin` is sin with its first half negated, so that the rotation needs one `roll`
/// instead of rotate_half's split, negate and concatenate: rotate_half(x)·sin equals
/// roll(x, d/2)·signed_sin exactly (negation is exact in floating point).
#[derive(Debug)]
struct Rotary {
    cos: Tensor,
    signed_sin: Tensor,
}

impl Rotary {
    fn new(config: &ModelConfig, device: tch::Device) -> Result<Self> {
        let inv_freq = Tensor::from_slice(&inverse_frequencies(config)?);
        // The same f32 product and cos/sin as transformers, so tables match theirs bit for bit.
        let positions = Tensor::arange(config.max_position_embeddings, (Kind::Float, tch::Device::Cpu));
        let freqs = positions.unsqueeze(-1) * inv_freq.unsqueeze(0);
        let emb = Tensor::cat(&[&freqs, &freqs], -1);
        let signed_sin = Tensor::cat(&[-freqs.sin(), freqs.sin()], -1);
        Ok(Self { cos: emb.cos().to_device(device), signed_sin: signed_sin.to_device(device) })
    }

    fn max_positions(&self) -> i64 {
        self.cos.size()[0]
    }

    /// cos and sin of shape [B, 1, T, head_dim] for positions [B, T].
    fn tables(&self, positions: &Tensor, kind: Kind) -> (Tensor, Tensor) {
        let (batch, len) = positions.size2().expect("positions are [B, T]");
        let flat = positions.reshape([-1]);
        let gather = |table: &Tensor| table.index_select(0, &flat).view([batch, 1, len, -1]).to_kind(kind);
        (gather(&self.cos), gather(&self.signed_sin))
    }
}

fn inverse_frequencies(config: &ModelConfig) -> Result<Vec<f32>> {
    let (theta, scaling) = config.rope()?;
    let dim = config.head_dim();
    let mut inv_freq: Vec<f32> =
        (0..dim).step_by(2).map(|i| (1.0 / theta.powf(i as f64 / dim as f64)) as f32).collect();
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
                let smooth = (original_max_position / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                (1.0 - smooth) * freq / factor + smooth * freq
            };
            *f = scaled as f32;
        }
    }
    Ok(inv_freq)
}

/// x·cos + rotate_half(x)·sin, with rotate_half(x)·sin written as roll(x)·signed_sin.
fn apply_rotary(xs: &Tensor, cos: &Tensor, signed_sin: &Tensor) -> Tensor {
    let half = xs.size()[3] / 2;
    xs * cos + xs.roll([half].as_slice(), [3].as_slice()) * signed_sin
}

/// The first `first` and the next `second` entries of `xs` along `dim`, as views. One split op
/// whose backward is one concatenation: two `narrow`s would each back-propagate a zero-filled
/// gradient of the whole tensor, summed afterwards (measured: 5 % of a bf16 PPO update's
/// main-thread samples in `slice_backward`).
fn split_pair(xs: &Tensor, dim: i64, first: i64, second: i64) -> (Tensor, Tensor) {
    let mut parts = xs.split_with_sizes([first, second].as_slice(), dim);
    let second = parts.pop().expect("split_with_sizes returns one tensor per size");
    (parts.pop().expect("split_with_sizes returns one tensor per size"), second)
}

/// Where one Hugging Face tensor lives inside a fused variable: rows offset..offset+len.
#[derive(Debug, Clone)]
pub struct FusedPart {
    pub variable: String,
    pub checkpoint_name: String,
    pub offset: i64,
    pub len: i64,
}

/// Projections that share an input (q/k/v; gate/up) stored as one matrix, so one GEMM serves
/// them all: fewer, larger matrix products, which is what decoding on a CPU is bound by.
/// Checkpoints still see the separate Hugging Face tensors (see [`FusedPart`]).
#[derive(Debug)]
struct FusedLinear {
    weight: Tensor,
    bias: Option<Tensor>,
    input: i64,
    /// HF module names and row counts of the parts, in row order.
    parts: Vec<(String, i64)>,
    /// One entry per part when the model carries LoRA adapters (`None`: part not targeted);
    /// empty without LoRA.
    adapters: Vec<Option<Adapter>>,
}

impl FusedLinear {
    fn new(
        path: &nn::Path,
        name: &str,
        input: i64,
        parts: &[(&str, i64)],
        bias: bool,
        registry: &mut Vec<FusedPart>,
    ) -> Self {
        let total: i64 = parts.iter().map(|(_, len)| len).sum();
        let fused = path / name;
        let weight = variable(&fused, "weight", &[total, input], init_weight());
        let bias = bias.then(|| variable(&fused, "bias", &[total], nn::Init::Const(0.0)));
        let mut offset = 0;
        for (part, len) in parts {
            let mut register = |suffix: &str| {
                registry.push(FusedPart {
                    variable: fused.path(suffix),
                    checkpoint_name: (path / *part).path(suffix),
                    offset,
                    len: *len,
                })
            };
            register("weight");
            if bias.is_some() {
                register("bias");
            }
            offset += len;
        }
        let parts = parts.iter().map(|(name, len)| (name.to_string(), *len)).collect();
        Self { weight, bias, input, parts, adapters: Vec::new() }
    }

    /// Gives each targeted part its adapter, under `path / <part>` (the parts' HF modules).
    fn attach(&mut self, path: &nn::Path, lora: &LoraAttach) {
        self.adapters = self
            .parts
            .iter()
            .map(|(part, len)| lora.adapter(&(path / part.as_str()), part, (self.input, *len)))
            .collect();
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        let base = xs.linear(&self.weight, self.bias.as_ref());
        let deltas: Vec<Option<Tensor>> = self.adapters.iter().map(|a| a.as_ref().and_then(|a| a.delta(xs))).collect();
        if deltas.iter().all(Option::is_none) {
            return base;
        }
        // Parts without an adapter contribute zeros, so one addition covers the fused output.
        let mut lead = xs.size();
        let chunks: Vec<Tensor> = deltas
            .into_iter()
            .zip(&self.parts)
            .map(|(delta, (_, len))| {
                delta.unwrap_or_else(|| {
                    *lead.last_mut().expect("a linear input has a feature dimension") = *len;
                    Tensor::zeros(lead.as_slice(), (base.kind(), base.device()))
                })
            })
            .collect();
        base + Tensor::cat(&chunks, -1)
    }

    fn adapters(&self) -> impl Iterator<Item = &Adapter> {
        self.adapters.iter().flatten()
    }
}

/// A linear layer that is one HF module (o_proj, down_proj), with its adapter when targeted.
#[derive(Debug)]
struct Projection {
    linear: nn::Linear,
    input: i64,
    output: i64,
    adapter: Option<Adapter>,
}

impl Projection {
    fn new(path: nn::Path, input: i64, output: i64, bias: bool) -> Self {
        Self { linear: linear(path, input, output, bias), input, output, adapter: None }
    }

    fn attach(&mut self, path: &nn::Path, module: &str, lora: &LoraAttach) {
        self.adapter = lora.adapter(&(path / module), module, (self.input, self.output));
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        let base = self.linear.forward(xs);
        match self.adapter.as_ref().and_then(|a| a.delta(xs)) {
            Some(delta) => base + delta,
            None => base,
        }
    }
}

/// What attaching adapters to one model needs, and the running index of adapter matrices
/// (their init streams), in layer order and HF module order within a layer.
pub(crate) struct LoraAttach {
    config: LoraConfig,
    state: Arc<LoraState>,
    seed: u64,
    kind: Kind,
    next: std::cell::Cell<u64>,
}

impl LoraAttach {
    pub(crate) fn new(config: LoraConfig, state: Arc<LoraState>, seed: u64, kind: Kind) -> Self {
        Self { config, state, seed, kind, next: std::cell::Cell::new(0) }
    }

    fn adapter(&self, module: &nn::Path, name: &str, shape: (i64, i64)) -> Option<Adapter> {
        if !self.config.targets(name) {
            return None;
        }
        let index = self.next.get();
        self.next.set(index + 1);
        Some(Adapter::new(module, shape, &self.config, &self.state, self.kind, init_rng(self.seed, index)))
    }
}

#[derive(Debug)]
struct Attention {
    qkv_proj: FusedLinear,
    o_proj: Projection,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
}

/// A linear layer [output, input] (nn::linear's layout), its variables from [`variable`].
pub(crate) fn linear(path: nn::Path, input: i64, output: i64, bias: bool) -> nn::Linear {
    let ws = variable(&path, "weight", &[output, input], init_weight());
    let bs = bias.then(|| variable(&path, "bias", &[output], nn::Init::Const(0.0)));
    nn::Linear { ws, bs }
}

thread_local! {
    /// While a model is built over another model's base ([`with_shared_variables`]): that
    /// model's base variables by VarStore name, taken instead of allocating new ones.
    static SHARED: RefCell<Option<HashMap<String, Tensor>>> = const { RefCell::new(None) };
}

/// Runs `build` with `variables` shared: every variable it creates under one of their names
/// (and of their shape) is that tensor, frozen, not a new allocation. This is how a reference
/// or DPO model stands on the weights of a model already loaded (no second copy of a base).
pub(crate) fn with_shared_variables<T>(variables: HashMap<String, Tensor>, build: impl FnOnce() -> T) -> T {
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            SHARED.with(|s| s.borrow_mut().take());
        }
    }
    SHARED.with(|s| *s.borrow_mut() = Some(variables));
    let _clear = Clear;
    build()
}

/// The variable `name` under `path`: the shared tensor of that name while
/// [`with_shared_variables`] runs, else a new one of `init`.
fn variable(path: &nn::Path, name: &str, dims: &[i64], init: nn::Init) -> Tensor {
    let full = path.path(name);
    let shared = SHARED.with(|s| s.borrow().as_ref().and_then(|m| m.get(&full).map(Tensor::shallow_clone)));
    match shared {
        Some(tensor) if tensor.size() == dims => path.add(name, tensor, false),
        _ => path.var(name, dims, init),
    }
}

/// Weights are created as zeros: a loaded model overwrites them, and a random one is filled by
/// `CausalLm::random` from its own seed (no draw from libtorch's global generator).
fn init_weight() -> nn::Init {
    nn::Init::Const(0.0)
}

impl Attention {
    fn new(path: nn::Path, config: &ModelConfig, registry: &mut Vec<FusedPart>) -> Self {
        let (hidden, heads, kv_heads, head_dim) =
            (config.hidden_size, config.num_attention_heads, config.num_kv_heads(), config.head_dim());
        let parts = [("q_proj", heads * head_dim), ("k_proj", kv_heads * head_dim), ("v_proj", kv_heads * head_dim)];
        Self {
            qkv_proj: FusedLinear::new(&path, "qkv_proj", hidden, &parts, config.qkv_bias(), registry),
            o_proj: Projection::new(&path / "o_proj", heads * head_dim, hidden, config.o_bias()),
            heads,
            kv_heads,
            head_dim,
        }
    }

    fn forward(
        &self,
        xs: &Tensor,
        rope: &(Tensor, Tensor),
        mask: &Tensor,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Tensor {
        let (batch, len, _) = xs.size3().expect("hidden states are [B, T, H]");
        let (heads, kv_heads) = (self.heads, self.kv_heads);
        let qkv = self.qkv_proj.forward(xs).view([batch, len, heads + 2 * kv_heads, self.head_dim]).transpose(1, 2);
        // q and k share the rotation: one rotary application over their heads together.
        // Splits rather than narrows: the same views, but the backward concatenates the parts'
        // gradients instead of zero-filling a full-size gradient per part and summing them.
        let (qk, v) = split_pair(&qkv, 1, heads + kv_heads, kv_heads);
        let (q, k) = split_pair(&apply_rotary(&qk, &rope.0, &rope.1), 1, heads, kv_heads);
        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, &k, &v),
            None => (k, v),
        };
        let attn = crate::attention::attend(&q, &k, &v, mask);
        self.o_proj.forward(&attn.transpose(1, 2).reshape([batch, len, heads * self.head_dim]))
    }
}

#[derive(Debug)]
struct Mlp {
    gate_up_proj: FusedLinear,
    down_proj: Projection,
    intermediate: i64,
}

impl Mlp {
    fn new(path: nn::Path, hidden: i64, intermediate: i64, registry: &mut Vec<FusedPart>) -> Self {
        let parts = [("gate_proj", intermediate), ("up_proj", intermediate)];
        Self {
            gate_up_proj: FusedLinear::new(&path, "gate_up_proj", hidden, &parts, false, registry),
            down_proj: Projection::new(&path / "down_proj", intermediate, hidden, false),
            intermediate,
        }
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        let gate_up = self.gate_up_proj.forward(xs);
        let (gate, up) = split_pair(&gate_up, -1, self.intermediate, self.intermediate);
        self.down_proj.forward(&(gate.silu() * up))
    }
}

#[derive(Debug)]
pub(crate) struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl DecoderLayer {
    fn new(path: nn::Path, config: &ModelConfig, registry: &mut Vec<FusedPart>) -> Self {
        let eps = config.rms_norm_eps;
        Self {
            input_layernorm: RmsNorm::new(&path / "input_layernorm", config.hidden_size, eps),
            self_attn: Attention::new(&path / "self_attn", config, registry),
            post_attention_layernorm: RmsNorm::new(&path / "post_attention_layernorm", config.hidden_size, eps),
            mlp: Mlp::new(&path / "mlp", config.hidden_size, config.intermediate_size, registry),
        }
    }

    /// Adapters on the targeted modules of this layer (created under `path`, the layer's).
    fn attach(&mut self, path: &nn::Path, lora: &LoraAttach) {
        let attn = path / "self_attn";
        self.self_attn.qkv_proj.attach(&attn, lora);
        self.self_attn.o_proj.attach(&attn, "o_proj", lora);
        let mlp = path / "mlp";
        self.mlp.gate_up_proj.attach(&mlp, lora);
        self.mlp.down_proj.attach(&mlp, "down_proj", lora);
    }

    fn adapters(&self) -> impl Iterator<Item = &Adapter> {
        let (attn, mlp) = (&self.self_attn, &self.mlp);
        attn.qkv_proj
            .adapters()
            .chain(attn.o_proj.adapter.iter())
            .chain(mlp.gate_up_proj.adapters())
            .chain(mlp.down_proj.adapter.iter())
    }

    /// The layer's output hidden states for its input `xs` [B, T, H] (both residual branches).
    pub(crate) fn forward(
        &self,
        xs: &Tensor,
        rope: &(Tensor, Tensor),
        bias: &Tensor,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Tensor {
        let xs = xs + self.self_attn.forward(&self.input_layernorm.forward(xs), rope, bias, cache);
        &xs + self.mlp.forward(&self.post_attention_layernorm.forward(&xs))
    }
}

/// The decoder stack without heads: token ids in, final-norm hidden states out.
#[derive(Debug)]
pub struct Llama {
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    rotary: Rotary,
    fused_parts: Vec<FusedPart>,
    /// Present when gradient checkpointing is on (see [`crate::checkpointing`]).
    checkpoints: Option<Tape>,
}

impl Llama {
    /// Creates the variables under `path` (normally `root / "model"`): weights zero, norms one.
    pub fn new(path: nn::Path, config: &ModelConfig) -> Result<Self> {
        let embed_tokens =
            variable(&(&path / "embed_tokens"), "weight", &[config.vocab_size, config.hidden_size], init_weight());
        let mut fused_parts = Vec::new();
        let layers = (0..config.num_hidden_layers)
            .map(|i| DecoderLayer::new(&path / "layers" / i, config, &mut fused_parts))
            .collect();
        let norm = RmsNorm::new(&path / "norm", config.hidden_size, config.rms_norm_eps);
        let rotary = Rotary::new(config, path.device())?;
        Ok(Self { embed_tokens, layers, norm, rotary, fused_parts, checkpoints: None })
    }

    /// Creates adapters on every layer (variables under `path`, the decoder's, normally
    /// `root / "model"`), in layer order.
    pub(crate) fn attach_lora(&mut self, path: &nn::Path, lora: &LoraAttach) {
        for (i, layer) in self.layers.iter_mut().enumerate() {
            layer.attach(&(path / "layers" / i), lora);
        }
    }

    /// Every adapter, layer by layer.
    pub(crate) fn adapters(&self) -> impl Iterator<Item = &Adapter> {
        self.layers.iter().flat_map(DecoderLayer::adapters)
    }

    /// How fused variables map back to the separate tensors of a checkpoint.
    pub fn fused_parts(&self) -> &[FusedPart] {
        &self.fused_parts
    }

    pub fn embedding(&self) -> &Tensor {
        &self.embed_tokens
    }

    /// Turns per-layer gradient checkpointing on or off (see [`crate::checkpointing`]).
    /// Turning it off drops any forwards still waiting for their backward.
    pub fn set_gradient_checkpointing(&mut self, on: bool) {
        self.checkpoints = on.then(Tape::default);
    }

    /// Forwards recorded for recomputation that no backward has consumed yet.
    pub fn pending_checkpoints(&self) -> usize {
        self.checkpoints.as_ref().map_or(0, Tape::len)
    }

    /// Back-propagates, through the recomputed layers, the gradients that a backward left on
    /// the recorded forwards' outputs; a no-op without checkpointing.
    pub(crate) fn replay_checkpoints(&self) {
        if let Some(tape) = &self.checkpoints {
            tape.replay(&self.layers, &self.embed_tokens);
        }
    }

    /// Whether a forward now would build a graph through the adapters (grad mode on, adapters
    /// trainable and switched on).
    fn adapters_build_graph(&self) -> bool {
        self.adapters().next().is_some_and(Adapter::builds_graph)
    }

    /// Hidden states [B, T, H] for `input_ids` [B, T].
    ///
    /// `attention_mask` [B, S] marks real tokens (1) and padding (0) over everything attended to:
    /// the cached prefix plus these T tokens (S = cached + T). `positions` [B, T] are the rotary
    /// positions, which skip left padding.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        positions: &Tensor,
        cache: Option<&mut KvCache>,
    ) -> Tensor {
        let past = cache.as_ref().map_or(0, |c| c.len());
        let bias = attention_bias(attention_mask, input_ids.size()[1], past, self.embed_tokens.kind());
        self.forward_with_bias(input_ids, &bias, positions, cache)
    }

    /// [`Llama::forward`] with a ready additive attention bias [B, 1, T, S] (see
    /// [`attention_bias`]); the sampler builds its decode bias once instead of every step.
    pub fn forward_with_bias(
        &self,
        input_ids: &Tensor,
        bias: &Tensor,
        positions: &Tensor,
        mut cache: Option<&mut KvCache>,
    ) -> Tensor {
        let past = cache.as_ref().map_or(0, |c| c.len()) as i64;
        let end = past + input_ids.size()[1];
        assert!(
            end <= self.rotary.max_positions(),
            "sequence of {end} tokens exceeds max_position_embeddings {}",
            self.rotary.max_positions()
        );
        let mut xs = self.embed_tokens.embedding_forward(input_ids);
        let rope = self.rotary.tables(positions, xs.kind());
        // A forward that builds a graph (the embedding output requires grad only in grad mode,
        // on trainable weights; with LoRA the adapters are what trains) keeps layer inputs
        // instead; no_grad forwards, frozen models and cached decoding take the plain path.
        let builds_graph = xs.requires_grad() || self.adapters_build_graph();
        if let (Some(tape), None, true) = (&self.checkpoints, &cache, builds_graph) {
            let last = tape.record(&self.layers, input_ids, &xs.detach(), rope, bias);
            return self.norm.forward(&last);
        }
        for (i, layer) in self.layers.iter().enumerate() {
            xs = layer.forward(&xs, &rope, bias, cache.as_deref_mut().map(|c| (c, i)));
        }
        if let Some(cache) = cache {
            cache.advance(input_ids.size()[1]);
        }
        self.norm.forward(&xs)
    }
}

pub(crate) trait EmbeddingForward {
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
pub fn attention_bias(attention_mask: &Tensor, len: i64, past: usize, kind: Kind) -> Tensor {
    let device = attention_mask.device();
    let total = attention_mask.size()[1];
    let keys = Tensor::arange(total, (Kind::Int64, device)).view([1, -1]);
    let queries = Tensor::arange(len, (Kind::Int64, device)).view([-1, 1]) + past as i64;
    let causal = keys.le_tensor(&queries).view([1, 1, len, total]);
    let not_pad = attention_mask.ne(0).view([-1, 1, 1, total]);
    blocked_bias(&causal.logical_and(&not_pad).logical_not(), kind)
}

/// An additive attention bias in `kind` from a boolean tensor of blocked entries: zero where
/// attention is allowed, [`blocked_value`] where `blocked` is true.
pub fn blocked_bias(blocked: &Tensor, kind: Kind) -> Tensor {
    blocked.to_kind(kind) * blocked_value(kind)
}

/// The additive bias of a blocked attention entry: the dtype's most negative finite value.
pub fn blocked_value(kind: Kind) -> f64 {
    match kind {
        Kind::Half => -65504.0,
        Kind::BFloat16 => -3.38e38,
        _ => f32::MIN as f64,
    }
}

/// Rotary positions from a padding mask: each row counts only its real tokens.
pub fn positions_from_mask(attention_mask: &Tensor) -> Tensor {
    (attention_mask.cumsum(1, Kind::Int64) - 1).clamp_min(0)
}
