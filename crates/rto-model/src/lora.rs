//! LoRA adapters (Hu et al. 2021) on the decoder's linear layers, laid out as PEFT lays them out.
//!
//! An adapted projection computes `W·x + b + scale · B·(A·dropout(x))` with A [r, in], B
//! [out, r] and scale = alpha / r. The fused q/k/v and gate/up variables stay fused (one GEMM
//! for the base); each targeted HF module among them (`q_proj`, `up_proj`, ...) gets its own A
//! and B, so the adapter maps name for name onto PEFT's. The variables live in the model's
//! VarStore under PEFT's names without the `base_model.model.` prefix
//! (`model.layers.0.self_attn.q_proj.lora_A.weight`), so saving an adapter is a rename.
//!
//! Initialization is PEFT's: A uniform in ±1/√in (`kaiming_uniform_(a=√5)`), drawn from
//! `seed_for(seed, Stream::LoraInit, i)` for adapter matrix i, and B zero, so a fresh adapter
//! leaves the model's outputs exactly those of its base.

use anyhow::{bail, ensure, Result};
use rto_rng::{SplitMix64, Stream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tch::{nn, Kind, Tensor};

/// The modules an adapter can target, by their Hugging Face names, in layer order.
pub const TARGET_MODULES: [&str; 7] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

/// Where adapter variables sit in a VarStore: `<module>.lora_A.weight` / `<module>.lora_B.weight`.
pub const LORA_A: &str = "lora_A";
pub const LORA_B: &str = "lora_B";

/// Whether the variable `name` belongs to an adapter (and not to the base model).
pub fn is_adapter_variable(name: &str) -> bool {
    name.contains(".lora_A.") || name.contains(".lora_B.")
}

/// What adapters a model carries.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    pub rank: i64,
    pub alpha: f64,
    /// Dropout on the adapter input, applied in training forwards only (as PEFT in train mode).
    pub dropout: f64,
    /// HF module names, a subset of [`TARGET_MODULES`], in that order.
    pub targets: Vec<String>,
}

impl LoraConfig {
    /// A config of `targets` (any order, duplicates allowed), checked and put in layer order.
    pub fn new(rank: i64, alpha: f64, dropout: f64, targets: &[String]) -> Result<Self> {
        ensure!(rank > 0, "LoRA rank must be > 0, got {rank}");
        ensure!(alpha.is_finite() && alpha > 0.0, "LoRA alpha must be a finite number > 0, got {alpha}");
        ensure!((0.0..1.0).contains(&dropout), "LoRA dropout must be in [0, 1), got {dropout}");
        for target in targets {
            if !TARGET_MODULES.contains(&target.as_str()) {
                bail!("unknown LoRA target module `{target}`: valid modules are {}", TARGET_MODULES.join(", "));
            }
        }
        ensure!(
            !targets.is_empty(),
            "LoRA needs at least one target module: valid modules are {}",
            TARGET_MODULES.join(", ")
        );
        let targets =
            TARGET_MODULES.iter().filter(|m| targets.iter().any(|t| t == *m)).map(|m| m.to_string()).collect();
        Ok(Self { rank, alpha, dropout, targets })
    }

    /// PEFT's scaling (without rsLoRA): alpha / r.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    pub fn targets(&self, module: &str) -> bool {
        self.targets.iter().any(|t| t == module)
    }
}

/// State every adapter of one model shares: the on/off switch and the dropout stream.
#[derive(Debug)]
pub(crate) struct LoraState {
    enabled: AtomicBool,
    dropout: f64,
    seed: AtomicU64,
    /// The high bits of the mask index: the optimizer step and rank the masks are drawn for
    /// (`CausalLm::begin_lora_step`).
    index_base: AtomicU64,
    /// Dropout masks drawn so far in this step: with `index_base`, the index of the next one in
    /// `Stream::LoraDropout`. Keyed by step, so a run resumed from a checkpoint draws the masks
    /// of the uninterrupted run without the counter being saved.
    draws: AtomicU64,
}

impl LoraState {
    pub(crate) fn new(dropout: f64, seed: u64) -> Self {
        Self {
            enabled: AtomicBool::new(true),
            dropout,
            seed: AtomicU64::new(seed),
            index_base: AtomicU64::new(0),
            draws: AtomicU64::new(0),
        }
    }

    /// Mask index = step · 2^32 + rank · 2^24 + draw: 2^24 masks per step and rank (one per
    /// adapted module and micro batch, far fewer), 256 ranks before indices could repeat.
    pub(crate) fn begin_step(&self, step: u64, rank: u64) {
        self.index_base.store((step << 32) | ((rank & 0xff) << 24), Ordering::SeqCst);
        self.draws.store(0, Ordering::SeqCst);
    }

    pub(crate) fn set_seed(&self, seed: u64) {
        self.seed.store(seed, Ordering::SeqCst);
    }

    pub(crate) fn set_enabled(&self, on: bool) -> bool {
        self.enabled.swap(on, Ordering::SeqCst)
    }

    fn enabled(&self) -> bool {
        self.enabled.load(Ordering::SeqCst)
    }

    /// `xs` with inverted dropout applied when `training` and dropout is set; the mask is drawn
    /// on the host from the model's own stream (never libtorch's generator).
    fn dropout(&self, xs: &Tensor, training: bool) -> Tensor {
        if self.dropout == 0.0 || !training {
            return xs.shallow_clone();
        }
        let index = self.index_base.load(Ordering::SeqCst) | self.draws.fetch_add(1, Ordering::SeqCst);
        let mut rng = SplitMix64::for_stream(self.seed.load(Ordering::SeqCst), Stream::LoraDropout, index);
        let keep = 1.0 - self.dropout;
        let mask: Vec<f32> =
            (0..xs.numel()).map(|_| if rng.next_f64() < keep { (1.0 / keep) as f32 } else { 0.0 }).collect();
        let mask = Tensor::from_slice(&mask).view(xs.size().as_slice()).to_kind(xs.kind()).to_device(xs.device());
        xs * mask
    }
}

/// One adapted HF module: A [r, in], B [out, r].
#[derive(Debug)]
pub(crate) struct Adapter {
    /// The adapted HF weight's checkpoint name (`model.layers.0.self_attn.q_proj.weight`).
    pub(crate) weight_name: String,
    a: Tensor,
    b: Tensor,
    scale: f64,
    state: Arc<LoraState>,
}

impl Adapter {
    /// Creates `<module>.lora_A.weight` and `<module>.lora_B.weight` under `module` in `kind`,
    /// A drawn from `rng` (PEFT's bound 1/√in), B zero.
    pub(crate) fn new(
        module: &nn::Path,
        shape: (i64, i64),
        config: &LoraConfig,
        state: &Arc<LoraState>,
        kind: Kind,
        mut rng: SplitMix64,
    ) -> Self {
        let (input, output) = shape;
        let bound = 1.0 / (input as f64).sqrt();
        let values: Vec<f32> =
            (0..config.rank * input).map(|_| ((2.0 * rng.next_f64() - 1.0) * bound) as f32).collect();
        let device = module.device();
        let a = Tensor::from_slice(&values).view([config.rank, input]).to_kind(kind).to_device(device);
        let b = Tensor::zeros([output, config.rank], (kind, device));
        let a = (module / LORA_A).add("weight", a, true);
        let b = (module / LORA_B).add("weight", b, true);
        Self { weight_name: module.path("weight"), a, b, scale: config.scale(), state: state.clone() }
    }

    /// scale · B·A·dropout(x), or `None` while the model's adapters are switched off.
    pub(crate) fn delta(&self, xs: &Tensor) -> Option<Tensor> {
        if !self.state.enabled() {
            return None;
        }
        let xs = self.state.dropout(xs, self.builds_graph());
        Some(xs.linear(&self.a, None::<Tensor>).linear(&self.b, None::<Tensor>) * self.scale)
    }

    /// Whether a forward through this adapter builds a graph: switched on, and a view of A
    /// requires grad (grad mode on, A trainable). These are the training forwards, where PEFT's
    /// modules are in train mode (dropout on).
    pub(crate) fn builds_graph(&self) -> bool {
        self.state.enabled() && crate::grad_mode::records_op(&[&self.a])
    }

    /// scale · B·A [out, in] in fp32: what merging adds to the base weight.
    pub(crate) fn merged_delta(&self) -> Tensor {
        self.b.to_kind(Kind::Float).matmul(&self.a.to_kind(Kind::Float)) * self.scale
    }

    /// Zeroes B: the adapter then adds nothing (after its product went into the base).
    pub(crate) fn reset(&self) {
        tch::no_grad(|| {
            let _ = self.b.shallow_clone().zero_();
        });
    }
}

/// The draws of adapter matrix `index` of a model seeded with `seed`.
pub(crate) fn init_rng(seed: u64, index: u64) -> SplitMix64 {
    SplitMix64::for_stream(seed, Stream::LoraInit, index)
}
