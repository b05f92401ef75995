//! PEFT adapter folders: `adapter_config.json` + `adapter_model.safetensors` (PEFT's layout and
//! tensor names), written by the training stages under `--lora-rank` and read wherever a model
//! folder is accepted.
//!
//! An adapter folder also holds the tokenizer files and the `config.json` of the model it makes
//! (the base's, plus what the stage records, e.g. a reward model's normalization); PEFT ignores
//! that file, and the folder checks (tokenizer, vocabulary, context) read it as they read a
//! model folder's. The base is `base_model_name_or_path`: absolute, or relative to the adapter
//! folder.

use crate::config::ModelConfig;
use crate::lora::LoraConfig;
use crate::model::{CausalLm, Head};
use crate::weights;
use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// PEFT's prefix of every saved tensor name (`PeftModel.base_model.model`).
const PEFT_PREFIX: &str = "base_model.model.";

/// Whether `dir` is an adapter folder (rather than a full model folder).
pub fn is_adapter(dir: &Path) -> bool {
    dir.join(ADAPTER_CONFIG).is_file()
}

/// A parsed `adapter_config.json`.
#[derive(Debug, Clone)]
pub struct AdapterFolder {
    pub dir: PathBuf,
    /// The base model folder, resolved (absolute, or joined to the adapter folder).
    pub base: PathBuf,
    pub lora: LoraConfig,
    /// `CAUSAL_LM` or `SEQ_CLS`.
    pub task_type: String,
}

impl AdapterFolder {
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(ADAPTER_CONFIG);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let value: Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Self::from_json(dir, &value).with_context(|| format!("{}", path.display()))
    }

    fn from_json(dir: &Path, value: &Value) -> Result<Self> {
        let field = |name: &str| value.get(name).filter(|v| !v.is_null());
        let peft_type = field("peft_type").and_then(Value::as_str).unwrap_or("");
        ensure!(peft_type == "LORA", "peft_type is {peft_type:?}: only LORA adapters are supported");
        let bias = field("bias").and_then(Value::as_str).unwrap_or("none");
        ensure!(bias == "none", "bias is {bias:?}: only adapters with bias \"none\" are supported");
        for unsupported in ["use_rslora", "use_dora", "fan_in_fan_out"] {
            ensure!(!field(unsupported).and_then(Value::as_bool).unwrap_or(false), "{unsupported} is not supported");
        }
        for unsupported in ["layers_to_transform", "rank_pattern", "alpha_pattern"] {
            let set = field(unsupported).is_some_and(|v| v.as_object().is_none_or(|m| !m.is_empty()));
            ensure!(!set, "{unsupported} is not supported: every layer's targeted modules get one rank and alpha");
        }
        let targets: Vec<String> = match field("target_modules") {
            Some(Value::Array(items)) => items
                .iter()
                .map(|t| t.as_str().map(str::to_string).context("target_modules holds a non-string"))
                .collect::<Result<_>>()?,
            other => bail!("target_modules must be a list of module names, got {other:?}"),
        };
        let number = |name: &str| {
            field(name).and_then(Value::as_f64).with_context(|| format!("field `{name}` missing or not a number"))
        };
        let lora = LoraConfig::new(
            number("r")? as i64,
            number("lora_alpha")?,
            field("lora_dropout").and_then(Value::as_f64).unwrap_or(0.0),
            &targets,
        )?;
        let base = field("base_model_name_or_path")
            .and_then(Value::as_str)
            .context("field `base_model_name_or_path` missing")?;
        let task_type = field("task_type").and_then(Value::as_str).unwrap_or("CAUSAL_LM").to_string();
        ensure!(
            task_type == "CAUSAL_LM" || task_type == "SEQ_CLS",
            "task_type is {task_type:?}: only CAUSAL_LM and SEQ_CLS adapters are supported"
        );
        Ok(Self { dir: dir.to_path_buf(), base: resolve_base(dir, base)?, lora, task_type })
    }
}

/// The base folder named `name` by the adapter in `dir`: an absolute path, or one relative to
/// the adapter folder. It must be a full model folder (adapters do not stack).
fn resolve_base(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = Path::new(name);
    let base = if path.is_absolute() { path.to_path_buf() } else { dir.join(path) };
    ensure!(
        base.join("config.json").is_file(),
        "base_model_name_or_path {name:?} is not a model folder ({} has no config.json): give the base as an absolute path or one relative to the adapter folder",
        base.display()
    );
    ensure!(
        !is_adapter(&base),
        "base_model_name_or_path {name:?} is itself an adapter: adapters over adapters are not supported"
    );
    Ok(base)
}

/// The folder holding the weights a model folder stands on: `dir` itself, or an adapter's base.
pub fn weights_folder(dir: &Path) -> Result<PathBuf> {
    if is_adapter(dir) {
        Ok(AdapterFolder::read(dir)?.base)
    } else {
        Ok(dir.to_path_buf())
    }
}

/// Whether model folders `a` and `b` stand on the same base weights: their weights folders
/// ([`weights_folder`]) are one folder.
pub fn same_base(a: &Path, b: &Path) -> Result<bool> {
    let canonical = |dir: &Path| -> Result<PathBuf> {
        let base = weights_folder(dir)?;
        base.canonicalize().with_context(|| format!("resolving the model folder {}", base.display()))
    };
    Ok(canonical(a)? == canonical(b)?)
}

/// The folder whose `config.json` and tokenizer files describe the model of `dir`: `dir`
/// itself when it has a config.json (model folders, and adapters written here), else the
/// adapter's base (an adapter saved by PEFT alone).
pub fn config_folder(dir: &Path) -> Result<PathBuf> {
    if dir.join("config.json").is_file() || !is_adapter(dir) {
        return Ok(dir.to_path_buf());
    }
    weights_folder(dir)
}

/// Loads a model folder or an adapter folder (base + adapter) with `head` in `kind`.
pub fn load(dir: &Path, head: Head, device: Device, kind: Kind) -> Result<CausalLm> {
    match (is_adapter(dir), head) {
        (false, _) => CausalLm::load(dir, head, device, kind),
        // The base of a SEQ_CLS adapter is a causal LM: the score head is the adapter's.
        (true, Head::Score) => load_value_model(dir, device, kind),
        (true, Head::LanguageModel) => load_adapter(dir, |base| CausalLm::load(base, head, device, kind)),
    }
}

/// [`CausalLm::load_as_value_model`] of a model folder or an adapter folder.
pub fn load_value_model(dir: &Path, device: Device, kind: Kind) -> Result<CausalLm> {
    if !is_adapter(dir) {
        return CausalLm::load_as_value_model(dir, device, kind);
    }
    load_adapter(dir, |base| CausalLm::load_as_value_model(base, device, kind))
}

/// Loads the model folder or adapter folder `dir` standing on `base`'s weights (see
/// [`CausalLm::sharing_base`]): a full folder is `base` with adapters off, an adapter folder
/// `base`'s base plus its own adapter. The caller knows `dir` stands on the base `base` was
/// loaded from ([`weights_folder`]); only the adapter's tensors are read.
pub fn load_sharing(dir: &Path, base: &CausalLm, head: Head) -> Result<CausalLm> {
    if !is_adapter(dir) {
        return CausalLm::sharing_base(base, head);
    }
    load_adapter(dir, |_| CausalLm::sharing_base(base, head))
}

fn load_adapter(dir: &Path, load_base: impl FnOnce(&Path) -> Result<CausalLm>) -> Result<CausalLm> {
    let adapter = AdapterFolder::read(dir)?;
    let context = || {
        format!(
            "loading adapter {} over base {} (is the adapter made for this base?)",
            dir.display(),
            adapter.base.display()
        )
    };
    let mut model = load_base(&adapter.base).with_context(context)?;
    adopt_config(&mut model, dir).with_context(context)?;
    model.add_lora(adapter.lora.clone(), 0)?;
    let targets: HashMap<String, Tensor> =
        model.adapter_tensors().into_iter().map(|(name, t)| (format!("{PEFT_PREFIX}{name}"), t)).collect();
    let file = dir.join(ADAPTER_WEIGHTS);
    let in_file = weights::file_tensor_names(&file).with_context(context)?;
    if let Some(extra) = in_file.iter().find(|name| !targets.contains_key(*name)) {
        bail!(
            "{}: tensor `{extra}` matches no module of the base (targets {:?}, head {:?}): the adapter was made for another model or with options this loader does not support",
            file.display(),
            adapter.lora.targets,
            model.head()
        );
    }
    weights::load_file_into(&file, &targets).with_context(context)?;
    Ok(model)
}

/// Takes the adapter folder's own `config.json` (what its stage recorded, e.g. a reward
/// model's normalization) after checking it describes the base's shapes.
fn adopt_config(model: &mut CausalLm, dir: &Path) -> Result<()> {
    let path = dir.join("config.json");
    if !path.is_file() {
        return Ok(());
    }
    let own = ModelConfig::from_file(&path)?;
    check_shapes(&own, &path, &model.config)?;
    model.config = own;
    Ok(())
}

/// Fails unless `own` (read from `path`, an adapter folder's config.json) describes the shapes
/// of `base`.
fn check_shapes(own: &ModelConfig, path: &Path, base: &ModelConfig) -> Result<()> {
    let shape = |c: &ModelConfig| {
        (c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.num_attention_heads, c.num_kv_heads(), c.vocab_size)
    };
    ensure!(
        shape(own) == shape(base),
        "{} describes (hidden, intermediate, layers, heads, kv heads, vocab) = {:?} but its base has {:?}: the adapter does not belong to this base (base_model_name_or_path in adapter_config.json)",
        path.display(),
        shape(own),
        shape(base)
    );
    Ok(())
}

/// The checks of an adapter folder that need no weights: its adapter_config.json parses, its
/// base is a model folder, and its own config.json (when it has one) has the base's shapes.
/// Stages run it before the store is touched. A full model folder passes.
pub fn check_folder(dir: &Path) -> Result<()> {
    if !is_adapter(dir) {
        return Ok(());
    }
    let adapter = AdapterFolder::read(dir)?;
    let path = dir.join("config.json");
    if path.is_file() {
        let base = ModelConfig::from_file(&adapter.base.join("config.json"))?;
        check_shapes(&ModelConfig::from_file(&path)?, &path, &base)?;
    }
    Ok(())
}

/// Writes `model`'s adapter as a PEFT folder in `dir`: `adapter_config.json` naming `base`
/// (written as given), `adapter_model.safetensors` in `kind`, the model's `config.json` and
/// the tokenizer files of `tokenizer_from`.
pub fn save(model: &CausalLm, dir: &Path, base: &Path, kind: Kind, tokenizer_from: Option<&Path>) -> Result<()> {
    let lora = model.lora().context("saving an adapter of a model without LoRA adapters")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let score = model.head() == Head::Score;
    let config = json!({
        "base_model_name_or_path": base.display().to_string(),
        "peft_type": "LORA",
        "task_type": if score { "SEQ_CLS" } else { "CAUSAL_LM" },
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": lora.targets,
        "bias": "none",
        "modules_to_save": if score { json!(["score"]) } else { Value::Null },
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "use_rslora": false,
        "use_dora": false,
    });
    let path = dir.join(ADAPTER_CONFIG);
    std::fs::write(&path, serde_json::to_string_pretty(&config)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    let tensors = model.adapter_tensors().into_iter().map(|(name, t)| (format!("{PEFT_PREFIX}{name}"), t)).collect();
    weights::save_file(&dir.join(ADAPTER_WEIGHTS), &tensors, kind)?;
    model.save_config(dir, kind)?;
    if let Some(source) = tokenizer_from {
        crate::model::copy_tokenizer_files(source, dir)?;
    }
    Ok(())
}
