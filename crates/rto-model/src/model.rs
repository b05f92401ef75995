//! A checkpoint folder as a runnable model: the decoder, its heads, and the folder I/O.

use crate::config::ModelConfig;
use crate::llama::{linear, positions_from_mask, with_shared_variables, Llama, LoraAttach};
use crate::lora::{is_adapter_variable, LoraConfig, LoraState};
use crate::weights;
use anyhow::{bail, Context, Result};
use rto_rng::{SplitMix64, Stream};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// Files copied along with the weights so a saved folder is self-contained.
pub const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "chat_template.jinja",
];

/// Which output heads a model carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// `lm_head` (or the tied embedding): next-token logits, for policies and references.
    LanguageModel,
    /// `score` [1, hidden]: a scalar per position, for reward and value models.
    Score,
}

/// A Llama-family model with one head, its variables in a `VarStore` named as in HF checkpoints.
pub struct CausalLm {
    pub config: ModelConfig,
    pub vs: nn::VarStore,
    pub decoder: Llama,
    head: Head,
    lm_head: Option<nn::Linear>,
    score: Option<nn::Linear>,
    /// The adapters' config and shared switch, once [`CausalLm::add_lora`] ran.
    lora: Option<(LoraConfig, Arc<LoraState>)>,
}

impl std::fmt::Debug for CausalLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CausalLm").field("config", &self.config).field("head", &self.head).finish()
    }
}

/// The `config.json` of model folder `dir`; a folder that does not exist gets its own message
/// (a bare "No such file" about config.json hides that the whole path is wrong).
fn folder_config(dir: &Path) -> Result<ModelConfig> {
    if !dir.is_dir() {
        bail!(
            "model folder {} does not exist: give a folder printed by a training stage or a Hugging Face model folder",
            dir.display()
        );
    }
    ModelConfig::from_file(&dir.join("config.json"))
}

impl CausalLm {
    /// The variables of a model, not yet filled: weights zero, norms one, in f32.
    /// The model's variables, created in `kind` (zeros, norms one): a model about to be loaded
    /// never holds an fp32 copy of itself (16 GB more than the bf16 weights at 8B).
    fn build(config: ModelConfig, head: Head, device: Device, kind: Kind) -> Result<Self> {
        config.validate()?;
        // Every process that builds a model runs tensor work worth keeping memory for.
        crate::allocator::retain_freed_memory();
        let mut vs = nn::VarStore::new(device);
        // On an empty store this only sets the kind new variables are created in.
        vs.set_kind(kind);
        let root = vs.root();
        let decoder = Llama::new(&root / "model", &config)?;
        let zeros = nn::LinearConfig { ws_init: nn::Init::Const(0.0), bs_init: None, bias: false };
        let (lm_head, score) = match head {
            Head::LanguageModel if config.tie_word_embeddings => (None, None),
            Head::LanguageModel => {
                (Some(linear(&root / "lm_head", config.hidden_size, config.vocab_size, false)), None)
            }
            Head::Score => (None, Some(nn::linear(&root / "score", config.hidden_size, 1, zeros))),
        };
        Ok(Self { config, vs, decoder, head, lm_head, score, lora: None })
    }

    /// A model with random weights: every matrix (HF names, in name order; tensor `i` drawn
    /// from `seed_for(seed, Stream::Init, i)`) normal with std 0.02, transformers'
    /// `initializer_range` default; biases zero, norms one. The same seed gives the same
    /// weights on every device and whatever else the process has drawn.
    pub fn random(config: ModelConfig, head: Head, device: Device, kind: Kind, seed: u64) -> Result<Self> {
        // Drawn in fp32 and rounded once, so a bf16 model is its fp32 twin rounded.
        let mut model = Self::build(config, head, device, Kind::Float)?;
        for (index, (_, tensor)) in model.named_tensors().into_iter().enumerate() {
            if tensor.dim() == 2 {
                fill_normal(&tensor, 0.02, SplitMix64::for_stream(seed, Stream::Init, index as u64));
            }
        }
        if kind != Kind::Float {
            model.vs.set_kind(kind);
        }
        Ok(model)
    }

    /// Loads an HF folder (`config.json` + safetensors) with the requested head, converting the
    /// weights to `kind`. A missing head tensor is an error naming the folder and tensor.
    pub fn load(dir: &Path, head: Head, device: Device, kind: Kind) -> Result<Self> {
        let config = folder_config(dir)?;
        let model = Self::build(config, head, device, kind)?;
        let targets: HashMap<String, Tensor> = model.named_tensors().into_iter().collect();
        weights::load_into(dir, &targets).with_context(|| format!("loading model {}", dir.display()))?;
        Ok(model)
    }

    /// Loads a causal-LM folder as a value model in `kind`: the decoder from the folder and a
    /// fresh score head of zeros, or the folder's own `score` when it has one (a reward model).
    pub fn load_as_value_model(dir: &Path, device: Device, kind: Kind) -> Result<Self> {
        let config = folder_config(dir)?;
        let model = Self::build(config, Head::Score, device, kind)?;
        let mut targets: HashMap<String, Tensor> = model.named_tensors().into_iter().collect();
        let has_score = weights::tensor_locations(dir)?.contains_key("score.weight");
        if !has_score {
            // The built score head is already zero.
            targets.remove("score.weight");
        }
        weights::load_into(dir, &targets).with_context(|| format!("loading model {}", dir.display()))?;
        Ok(model)
    }

    /// A model with `head` standing on `base`'s weights: every variable of `base` but its
    /// adapters is shared (the same tensors, frozen; no copy), so it is `base` with its
    /// adapters off, and adapters added to it (`add_lora`, or a loaded adapter folder) are its
    /// own. For the frozen models (reference, DPO model) over the base of a LoRA policy: the
    /// caller must not train or merge into `base`'s base weights while this model is used.
    pub fn sharing_base(base: &CausalLm, head: Head) -> Result<Self> {
        let variables: HashMap<String, Tensor> =
            base.vs.variables().into_iter().filter(|(name, _)| !is_adapter_variable(name)).collect();
        let shared = variables.iter().map(|(name, t)| (name.clone(), t.data_ptr())).collect::<HashMap<_, _>>();
        let mut model =
            with_shared_variables(variables, || Self::build(base.config.clone(), head, base.device(), Kind::Float))?;
        model.vs.set_kind(base.vs.kind());
        // Only a score head of its own may be new (a value model over a causal LM's base).
        for (name, tensor) in model.vs.variables() {
            if name != "score.weight" && shared.get(&name) != Some(&tensor.data_ptr()) {
                bail!("sharing the base weights of a {:?}-headed model: `{name}` is not among them", base.head);
            }
        }
        Ok(model)
    }

    pub fn head(&self) -> Head {
        self.head
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Recompute each decoder layer's activations in the backward pass instead of keeping
    /// them (`--gradient-checkpointing`); see [`crate::checkpointing`] for the contract.
    pub fn set_gradient_checkpointing(&mut self, on: bool) {
        self.decoder.set_gradient_checkpointing(on);
    }

    /// The backward of a loss computed with this model's training forwards: `loss.backward()`,
    /// then, with gradient checkpointing, the recomputation of the layers. Every backward on a
    /// trained model goes through here.
    pub fn backward(&self, loss: &Tensor) {
        loss.backward();
        self.decoder.replay_checkpoints();
    }

    /// Final hidden states [B, T, H]; positions are derived from the padding mask.
    pub fn hidden_states(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Tensor {
        let positions = positions_from_mask(attention_mask);
        self.decoder.forward(input_ids, attention_mask, &positions, None)
    }

    /// Next-token logits for hidden states [.., H] → [.., V].
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        match (&self.lm_head, self.head) {
            (Some(lm_head), _) => lm_head.forward(hidden),
            (None, Head::LanguageModel) => hidden.matmul(&self.decoder.embedding().tr()),
            (None, Head::Score) => panic!("logits() called on a model with a score head"),
        }
    }

    /// Scalar per position [.., H] → [..] from the `score` head.
    pub fn score(&self, hidden: &Tensor) -> Tensor {
        let score = self.score.as_ref().expect("score() called on a model without a score head");
        score.forward(hidden).squeeze_dim(-1)
    }

    /// Full-sequence logits [B, T, V] (tests and small batches; stages use response-only paths).
    pub fn forward_logits(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Tensor {
        self.logits(&self.hidden_states(input_ids, attention_mask))
    }

    /// Adds LoRA adapters on the `config.targets` modules of every layer and freezes the base:
    /// afterwards only the adapters train, plus the `score` head of a reward or value model
    /// (PEFT's `modules_to_save`). A fresh adapter leaves the outputs unchanged (B = 0); A is
    /// drawn from `seed` (see [`crate::lora`]), dropout masks too.
    pub fn add_lora(&mut self, config: LoraConfig, seed: u64) -> Result<()> {
        if self.lora.is_some() {
            bail!("the model already carries LoRA adapters");
        }
        self.vs.freeze();
        let state = Arc::new(LoraState::new(config.dropout, seed));
        let attach = LoraAttach::new(config.clone(), state.clone(), seed, self.vs.kind());
        self.decoder.attach_lora(&(self.vs.root() / "model"), &attach);
        if let Some(score) = &self.score {
            let _ = score.ws.set_requires_grad(true);
        }
        self.lora = Some((config, state));
        Ok(())
    }

    /// Seeds the adapters' dropout masks (a loaded adapter starts at seed 0; a training stage
    /// gives its `--seed`).
    pub fn set_lora_seed(&self, seed: u64) {
        if let Some((_, state)) = &self.lora {
            state.set_seed(seed);
        }
    }

    /// Starts the dropout masks of optimizer step `step` on data-parallel rank `rank` (training
    /// loops call it before each step's first forward): masks depend on (seed, step, rank, draw
    /// within the step) only, so a resumed run draws the uninterrupted run's and ranks differ.
    pub fn begin_lora_step(&self, step: u64, rank: u64) {
        if let Some((_, state)) = &self.lora {
            state.begin_step(step, rank);
        }
    }

    /// The adapters' config, when the model carries LoRA adapters.
    pub fn lora(&self) -> Option<&LoraConfig> {
        self.lora.as_ref().map(|(config, _)| config)
    }

    /// Runs `f` with the adapters switched off: the forwards of the base model (the reference
    /// of DPO and PPO without a second copy of it). Without adapters, just `f()`.
    pub fn with_adapters_disabled<T>(&self, f: impl FnOnce() -> T) -> T {
        let Some((_, state)) = &self.lora else { return f() };
        struct Restore<'a>(&'a LoraState, bool);
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                self.0.set_enabled(self.1);
            }
        }
        let _restore = Restore(state, state.set_enabled(false));
        f()
    }

    /// The adapter's tensors under their VarStore names (`model.layers.0.self_attn.q_proj.lora_A.weight`),
    /// plus `score.weight` of a score-headed model (trained in full, PEFT's `modules_to_save`).
    pub fn adapter_tensors(&self) -> BTreeMap<String, Tensor> {
        let mut tensors: BTreeMap<String, Tensor> =
            self.vs.variables().into_iter().filter(|(name, _)| is_adapter_variable(name)).collect();
        if let (Some(score), true) = (&self.score, self.lora.is_some()) {
            tensors.insert("score.weight".into(), score.ws.shallow_clone());
        }
        tensors
    }

    /// The base tensors with every adapter merged in (W + scale·B·A, computed in fp32), under
    /// checkpoint names: what a merged HF folder holds. Without adapters, [`Self::named_tensors`].
    pub fn merged_tensors(&self) -> BTreeMap<String, Tensor> {
        let mut tensors = self.named_tensors();
        for adapter in self.decoder.adapters() {
            let base = &tensors[&adapter.weight_name];
            let merged = tch::no_grad(|| base.to_kind(Kind::Float) + adapter.merged_delta());
            tensors.insert(adapter.weight_name.clone(), merged);
        }
        tensors
    }

    /// Merges every adapter into its base weight (in the base's dtype) and zeroes its B, so
    /// the outputs stay those of base + adapter while the adapters add nothing more.
    pub fn merge_lora(&mut self) {
        let tensors = self.named_tensors();
        for adapter in self.decoder.adapters() {
            let base = &tensors[&adapter.weight_name];
            tch::no_grad(|| {
                let merged = (base.to_kind(Kind::Float) + adapter.merged_delta()).to_kind(base.kind());
                base.shallow_clone().copy_(&merged);
            });
            adapter.reset();
        }
    }

    /// The variables under their checkpoint names. Fused variables appear as views of their
    /// parts (`q_proj`, `k_proj`, ...), so copying into these views loads a checkpoint and
    /// serializing them saves one. Adapters are not among them (see [`Self::adapter_tensors`]).
    pub fn named_tensors(&self) -> BTreeMap<String, Tensor> {
        let mut tensors: BTreeMap<String, Tensor> =
            self.vs.variables().into_iter().filter(|(name, _)| !is_adapter_variable(name)).collect();
        for part in self.decoder.fused_parts() {
            let fused = tensors.get(&part.variable).map(|t| t.narrow(0, part.offset, part.len));
            if let Some(view) = fused {
                tensors.insert(part.checkpoint_name.clone(), view);
            }
        }
        for part in self.decoder.fused_parts() {
            tensors.remove(&part.variable);
        }
        tensors
    }

    /// Writes an HF folder: `config.json`, weights in `kind`, and the tokenizer files found in
    /// `tokenizer_from` (normally the folder the model was loaded from).
    pub fn save(&self, dir: &Path, kind: Kind, tokenizer_from: Option<&Path>) -> Result<()> {
        self.save_tensors(dir, &self.named_tensors(), kind, tokenizer_from)
    }

    /// [`Self::save`] of the model with its adapters merged in: a full HF folder.
    pub fn save_merged(&self, dir: &Path, kind: Kind, tokenizer_from: Option<&Path>) -> Result<()> {
        self.save_tensors(dir, &self.merged_tensors(), kind, tokenizer_from)
    }

    fn save_tensors(
        &self,
        dir: &Path,
        tensors: &BTreeMap<String, Tensor>,
        kind: Kind,
        tokenizer_from: Option<&Path>,
    ) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        self.save_config(dir, kind)?;
        weights::save(dir, tensors, kind, 4 << 30)?;
        if let Some(source) = tokenizer_from {
            copy_tokenizer_files(source, dir)?;
        }
        Ok(())
    }

    /// Writes `dir/config.json`: the model's config with `dtype` for weights saved in `kind`
    /// (and the sequence-classification fields of a score-headed model).
    pub fn save_config(&self, dir: &Path, kind: Kind) -> Result<()> {
        let mut config = self.config.clone();
        let dtype = match kind {
            Kind::Float => "float32",
            Kind::BFloat16 => "bfloat16",
            Kind::Half => "float16",
            other => bail!("cannot save weights as {other:?}"),
        };
        config.extra.insert("dtype".into(), dtype.into());
        config.extra.remove("torch_dtype");
        if self.head == Head::Score {
            config.set_sequence_classification();
        }
        config.to_file(&dir.join("config.json"))
    }
}

/// Copies whichever tokenizer files exist in `from` into `to`.
pub fn copy_tokenizer_files(from: &Path, to: &Path) -> Result<()> {
    for name in TOKENIZER_FILES {
        let src = from.join(name);
        if src.exists() {
            std::fs::copy(&src, to.join(name))
                .with_context(|| format!("copying {} to {}", src.display(), to.display()))?;
        }
    }
    Ok(())
}

/// Overwrites `tensor` (a variable or a view of one) with normal(0, std) draws from `rng`.
fn fill_normal(tensor: &Tensor, std: f64, mut rng: SplitMix64) {
    let mut values = vec![0f32; tensor.numel()];
    rng.fill_normal(&mut values, 0.0, std);
    let source = Tensor::from_slice(&values).view(tensor.size().as_slice()).to_device(tensor.device());
    tch::no_grad(|| tensor.shallow_clone().copy_(&source));
}
