//! The memory plan: what a stage will hold, from `config.json` sizes alone, before any model is
//! loaded, and whether the device can hold it.
//!
//! Each model a stage holds is a [`Role`]: trained (weights, gradients and two fp32 Adam
//! moments, plus fp32 master weights when it is held in bf16, plus activations kept for the
//! backward pass) or frozen (weights, and one forward's transient activations). Weights,
//! gradients, activations and the KV cache take the bytes of the stage's [`Precision`].
//! Rollout sampling adds its KV cache. The numbers are estimates with
//! stated formulas, not measurements: the stages record what they actually peaked at
//! (`peak_rss_bytes` in the manifest) so a user can compare the two.

use crate::config::ModelConfig;
use crate::lora::LoraConfig;
use crate::model::Head;
use crate::precision::Precision;
use std::fmt::Write;

const MIB: f64 = 1024.0 * 1024.0;

/// How a model takes part in a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Trained with AdamW: weights + gradients + 2 fp32 moments, activations for backward.
    Trained,
    /// Only forwards without gradients (reference, DPO model, reward model).
    Frozen,
}

/// The batch shape a model sees: rows and tokens per row, per micro batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchShape {
    pub rows: u64,
    pub tokens: u64,
    /// Positions per row the LM head runs on (the response columns, where stages read only
    /// those); None: every position.
    pub head_tokens: Option<u64>,
}

/// One model of a stage's plan.
#[derive(Debug, Clone)]
pub struct PlannedModel {
    pub name: String,
    pub config: ModelConfig,
    pub head: Head,
    pub role: Role,
    pub batch: BatchShape,
    pub precision: Precision,
    /// Trained with `--gradient-checkpointing`: activations are recomputed layer by layer.
    pub gradient_checkpointing: bool,
    /// Trained as LoRA adapters on a frozen base: gradients, masters and moments cover only
    /// the adapters (and a score head).
    pub lora: Option<LoraConfig>,
    /// A frozen model standing on another model's base weights (named here; see
    /// `CausalLm::sharing_base`): it holds only its adapters (`lora`), if any.
    pub shares_base_with: Option<String>,
    /// Ranks the fp32 masters and AdamW moments are sharded over (ZeRO-1); 1 = not sharded.
    pub optimizer_shards: u64,
}

impl PlannedModel {
    /// The same model, on the base weights of the model `other` (no weights line of its own).
    pub fn sharing_base_with(self, other: &str) -> Self {
        Self { shares_base_with: Some(other.to_string()), ..self }
    }

    /// The same model, trained as the adapters of `lora` when given.
    pub fn with_lora(self, lora: Option<LoraConfig>) -> Self {
        Self { lora, ..self }
    }

    /// The same model, its optimizer state sharded over `ranks` (ZeRO-1; 1 = every rank holds it all).
    pub fn with_optimizer_shards(self, ranks: u64) -> Self {
        Self { optimizer_shards: ranks.max(1), ..self }
    }

    /// The same model, its LM head run on `tokens` positions per row (the responses).
    pub fn with_head_tokens(self, tokens: u64) -> Self {
        Self { batch: BatchShape { head_tokens: Some(tokens.min(self.batch.tokens)), ..self.batch }, ..self }
    }

    /// The same model, trained with gradient checkpointing when `on`.
    pub fn with_gradient_checkpointing(self, on: bool) -> Self {
        Self { gradient_checkpointing: on, ..self }
    }
}

/// The bytes of one line of the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanLine {
    pub what: String,
    pub bytes: u64,
    /// Held only during one phase (a forward's or backward's activations, the optimizer step,
    /// sampling's KV cache). Phases run one after another, so the plan counts the largest
    /// transient line once on top of everything resident.
    pub transient: bool,
}

/// What a stage will hold, line by line.
#[derive(Debug, Clone, Default)]
pub struct MemoryPlan {
    pub lines: Vec<PlanLine>,
}

/// Parameters of a model of `config` with `head`, counted as the tensors it holds
/// (embeddings, per layer q/k/v/o with their biases, the gated MLP and two norms, the final
/// norm, and `lm_head` unless tied or the `score` row).
pub fn parameter_count(config: &ModelConfig, head: Head) -> u64 {
    let (hidden, inter) = (config.hidden_size as u64, config.intermediate_size as u64);
    let (heads, kv, head_dim) =
        (config.num_attention_heads as u64, config.num_kv_heads() as u64, config.head_dim() as u64);
    let qkv_out = (heads + 2 * kv) * head_dim;
    let attention = hidden * qkv_out
        + heads * head_dim * hidden
        + if config.qkv_bias() { qkv_out } else { 0 }
        + if config.o_bias() { hidden } else { 0 };
    let layer = attention + 3 * hidden * inter + 2 * hidden;
    let embeddings = config.vocab_size as u64 * hidden;
    let output = match head {
        Head::LanguageModel if config.tie_word_embeddings => 0,
        Head::LanguageModel => embeddings,
        Head::Score => hidden,
    };
    embeddings + config.num_hidden_layers as u64 * layer + hidden + output
}

/// Parameters of the adapters `lora` puts on a model of `config`: r·(in + out) per targeted
/// module and layer, plus the `score` row of a score-headed model (trained in full).
pub fn lora_parameter_count(config: &ModelConfig, head: Head, lora: &LoraConfig) -> u64 {
    let (hidden, inter) = (config.hidden_size as u64, config.intermediate_size as u64);
    let (heads, kv, head_dim) =
        (config.num_attention_heads as u64, config.num_kv_heads() as u64, config.head_dim() as u64);
    let shape = |module: &str| match module {
        "q_proj" => (hidden, heads * head_dim),
        "k_proj" | "v_proj" => (hidden, kv * head_dim),
        "o_proj" => (heads * head_dim, hidden),
        "gate_proj" | "up_proj" => (hidden, inter),
        _ => (inter, hidden),
    };
    let per_layer: u64 = lora.targets.iter().map(|m| shape(m)).map(|(i, o)| lora.rank as u64 * (i + o)).sum();
    let score = if head == Head::Score { hidden } else { 0 };
    config.num_hidden_layers as u64 * per_layer + score
}

/// Activations a training micro batch keeps for backward, per model: per layer and token about
/// 18 hidden-sized values (norm inputs and outputs, q/k/v, attention output, residuals) and 4
/// intermediate-sized ones (gate, up, their product, the SiLU), plus the attention
/// probabilities (heads × tokens per token), all in `bytes` each; and at an LM head the fp32
/// logits with their log-softmax and its gradient (3 × vocab per head position; a score head's
/// one value per position is nothing beside them). With gradient checkpointing the layers keep
/// only their input (one hidden-sized value per token each) and the backward holds one layer's
/// full activations at a time, recomputed.
fn training_activations(config: &ModelConfig, head: Head, batch: BatchShape, bytes: u64, checkpointing: bool) -> u64 {
    let tokens = batch.rows * batch.tokens;
    let (hidden, inter, heads) =
        (config.hidden_size as u64, config.intermediate_size as u64, config.num_attention_heads as u64);
    let per_layer = tokens * (18 * hidden + 4 * inter + heads * batch.tokens) * bytes;
    let layers = config.num_hidden_layers as u64;
    let stack = if checkpointing { layers * tokens * hidden * bytes + per_layer } else { layers * per_layer };
    stack + head_positions(head, batch) * 3 * config.vocab_size as u64 * 4
}

/// A forward without gradients holds about one layer's activations at a time, plus, at an LM
/// head, the fp32 logits and their log-softmax.
fn forward_activations(config: &ModelConfig, head: Head, batch: BatchShape, bytes: u64) -> u64 {
    let tokens = batch.rows * batch.tokens;
    let (hidden, inter, heads) =
        (config.hidden_size as u64, config.intermediate_size as u64, config.num_attention_heads as u64);
    tokens * (6 * hidden + 3 * inter + heads * batch.tokens) * bytes
        + head_positions(head, batch) * 2 * config.vocab_size as u64 * 4
}

/// Positions of a micro batch whose vocabulary-wide logits exist at once: none for a score head.
fn head_positions(head: Head, batch: BatchShape) -> u64 {
    match head {
        Head::Score => 0,
        Head::LanguageModel => batch.rows * batch.head_tokens.unwrap_or(batch.tokens),
    }
}

/// Elements of the largest parameter tensor: the embedding (or `lm_head`), or a fused q/k/v or
/// gate/up matrix in a model with a small vocabulary.
fn largest_tensor(config: &ModelConfig) -> u64 {
    let hidden = config.hidden_size as u64;
    let qkv = (config.num_attention_heads as u64 + 2 * config.num_kv_heads() as u64) * config.head_dim() as u64;
    let gate_up = 2 * config.intermediate_size as u64;
    [config.vocab_size as u64, qkv, gate_up].into_iter().max().unwrap_or(0) * hidden
}

/// What a training step holds besides the steady state, at its largest tensor: the AdamW
/// update's two fp32 buffers (the denominator and the update) plus the gradient upcast to fp32
/// when the weights are bf16; and with tied embeddings, the second [vocab, hidden] gradient
/// (from the LM head) that backward adds into the embedding's.
fn step_transient(config: &ModelConfig, head: Head, precision: Precision) -> u64 {
    let largest = largest_tensor(config);
    let buffers = if precision == Precision::Fp32 { 2 } else { 3 };
    let tied = head == Head::LanguageModel && config.tie_word_embeddings;
    let tied_grad = if tied { config.vocab_size as u64 * config.hidden_size as u64 * precision.bytes() } else { 0 };
    buffers * largest * 4 + tied_grad
}

/// Bytes of a KV cache for `rows` sequences of `positions` tokens.
pub fn kv_cache_bytes(config: &ModelConfig, rows: u64, positions: u64, bytes: u64) -> u64 {
    let per_token = 2 * config.num_kv_heads() as u64 * config.head_dim() as u64 * bytes;
    config.num_hidden_layers as u64 * rows * positions * per_token
}

impl MemoryPlan {
    /// Adds the lines of one model, in its precision.
    pub fn add_model(&mut self, model: &PlannedModel) {
        let params = parameter_count(&model.config, model.head);
        let (precision, bytes) = (model.precision.name(), model.precision.bytes());
        let weights = params * bytes;
        let name = &model.name;
        match (&model.shares_base_with, &model.lora) {
            (None, _) => {
                self.push(format!("{name}: weights ({:.1} M parameters, {precision})", params as f64 / 1e6), weights)
            }
            (Some(other), Some(lora)) if model.role == Role::Frozen => {
                let count = lora_parameter_count(&model.config, model.head, lora);
                self.push(
                    format!(
                        "{name}: LoRA adapters over {other}'s base weights (r={}, {:.2} M parameters, {precision})",
                        lora.rank,
                        count as f64 / 1e6
                    ),
                    count * bytes,
                );
            }
            (Some(_), _) => {}
        }
        match model.role {
            Role::Trained => {
                let (trained, what) = match &model.lora {
                    Some(lora) => {
                        let count = lora_parameter_count(&model.config, model.head, lora);
                        self.push(
                            format!(
                                "{name}: LoRA adapters (r={}, {:.2} M parameters, {precision})",
                                lora.rank,
                                count as f64 / 1e6
                            ),
                            count * bytes,
                        );
                        (count, " of the adapters")
                    }
                    None => (params, ""),
                };
                self.push(format!("{name}: gradients{what} ({precision})"), trained * bytes);
                // ZeRO-1: each rank holds its 1/ranks shard (rounded up, as the shards are).
                let (ranks, sharded) = match model.optimizer_shards {
                    0 | 1 => (1, String::new()),
                    n => (n, format!(", sharded over {n} ranks (ZeRO-1)")),
                };
                let shard = trained.div_ceil(ranks);
                if model.precision != Precision::Fp32 {
                    self.push(format!("{name}: fp32 master weights{what}{sharded}"), shard * 4);
                }
                self.push(format!("{name}: AdamW moments{what} (2 × fp32){sharded}"), 2 * shard * 4);
                // With LoRA only small adapters are updated: their step needs no
                // embedding-sized buffers.
                if model.lora.is_none() {
                    self.push_transient(
                        format!("{name}: optimizer step and gradient accumulation"),
                        step_transient(&model.config, model.head, model.precision),
                    );
                }
                let recomputed = if model.gradient_checkpointing { ", gradient checkpointing" } else { "" };
                self.push_transient(
                    format!(
                        "{name}: activations ({} × {} tokens per micro batch{recomputed})",
                        model.batch.rows, model.batch.tokens
                    ),
                    training_activations(&model.config, model.head, model.batch, bytes, model.gradient_checkpointing),
                );
            }
            Role::Frozen => self.push_transient(
                format!("{name}: forward activations ({} × {} tokens)", model.batch.rows, model.batch.tokens),
                forward_activations(&model.config, model.head, model.batch, bytes),
            ),
        }
    }

    /// Adds the KV cache of rollout sampling, held in the sampling model's precision.
    pub fn add_kv_cache(&mut self, config: &ModelConfig, rows: u64, positions: u64, precision: Precision) {
        self.push_transient(
            format!("rollout KV cache ({rows} × {positions} positions, {})", precision.name()),
            kv_cache_bytes(config, rows, positions, precision.bytes()),
        );
    }

    /// Adds the process itself: libtorch, MKL and the allocator's pools before any model.
    pub fn add_runtime(&mut self, bytes: u64) {
        self.push("runtime (libtorch, buffers)".into(), bytes);
    }

    fn push(&mut self, what: String, bytes: u64) {
        self.lines.push(PlanLine { what, bytes, transient: false });
    }

    fn push_transient(&mut self, what: String, bytes: u64) {
        self.lines.push(PlanLine { what, bytes, transient: true });
    }

    /// Everything resident plus the largest transient line.
    pub fn total(&self) -> u64 {
        let resident: u64 = self.lines.iter().filter(|l| !l.transient).map(|l| l.bytes).sum();
        resident + self.lines.iter().filter(|l| l.transient).map(|l| l.bytes).max().unwrap_or(0)
    }

    /// The plan as the lines a stage prints.
    pub fn render(&self, stage: &str) -> String {
        let mut out = format!(
            "{stage}: memory plan (estimate from config.json sizes; the total is every resident line plus the largest transient one)\n"
        );
        for line in &self.lines {
            let phase = if line.transient { " (transient)" } else { "" };
            let _ = writeln!(out, "  {:>10.1} MiB  {}{phase}", line.bytes as f64 / MIB, line.what);
        }
        let _ = write!(out, "  {:>10.1} MiB  total", self.total() as f64 / MIB);
        out
    }

    /// Fails with one line saying what would fit when `available` bytes cannot hold the plan.
    pub fn check_fits(&self, stage: &str, available: u64, device: &str) -> anyhow::Result<()> {
        self.check_fits_ranks(stage, available, device, 1)
    }

    /// [`Self::check_fits`] for `ranks` processes that each hold this plan in the same memory
    /// (the ranks of one CPU node share its RAM; on CUDA each rank has its own GPU: 1). The
    /// error names the largest lines, the ones worth cutting.
    pub fn check_fits_ranks(&self, stage: &str, available: u64, device: &str, ranks: u64) -> anyhow::Result<()> {
        if self.fits_ranks(available, ranks) {
            return Ok(());
        }
        let needed = self.total() * ranks.max(1);
        let gib = |bytes: u64| bytes as f64 / (MIB * 1024.0);
        let per_rank =
            if ranks > 1 { format!(" ({ranks} ranks × {:.1} GiB)", gib(self.total())) } else { String::new() };
        anyhow::bail!(
            "{stage}: the memory plan needs {:.1} GiB{per_rank} but {device} has {:.1} GiB available; largest lines: {}: use a smaller --micro-batch-size or shorter --max-prompt-len/--max-response-len, --bf16, --gradient-checkpointing, --zero-stage 1 over more ranks or --lora-rank (training stages), or a smaller model; --dry-run prints the plan without loading anything",
            gib(needed),
            gib(available),
            self.largest_lines(3)
        )
    }

    /// Whether `available` bytes hold `ranks` copies of this plan (see [`Self::check_fits_ranks`]).
    pub fn fits_ranks(&self, available: u64, ranks: u64) -> bool {
        self.total() * ranks.max(1) <= available
    }

    /// The `n` largest lines, largest first, as `what (X GiB)` joined by `; `.
    pub fn largest_lines(&self, n: usize) -> String {
        let mut lines: Vec<&PlanLine> = self.lines.iter().collect();
        lines.sort_by_key(|l| std::cmp::Reverse(l.bytes));
        let named: Vec<String> =
            lines.iter().take(n).map(|l| format!("{} ({:.1} GiB)", l.what, l.bytes as f64 / (MIB * 1024.0))).collect();
        named.join("; ")
    }
}

/// Bytes of RAM the kernel says are available now (`MemAvailable` of /proc/meminfo).
pub fn cpu_available_bytes() -> Option<u64> {
    proc_bytes("/proc/meminfo", "MemAvailable:")
}

/// This process's resident-set high-water mark (`VmHWM` of /proc/self/status), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    proc_bytes("/proc/self/status", "VmHWM:")
}

/// This process's resident set now (`VmRSS`): what it holds before it loads a model is the
/// runtime line of a plan.
pub fn current_rss_bytes() -> Option<u64> {
    proc_bytes("/proc/self/status", "VmRSS:")
}

/// A `<key> <n> kB` line of a /proc file, in bytes.
fn proc_bytes(file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
