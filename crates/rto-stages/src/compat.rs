//! The one model-compatibility check of the stages that combine models (dpo-train: policy and
//! reference; token-reward-annotate: reference, DPO, policy, reward model; ppo-train: policy,
//! DPO, reward model, critic). Each of them feeds one sequence of token ids to every model, so
//! the ids must mean the same thing everywhere and the sequence must fit every model.
//!
//! Rules, checked from the folders' files before any weights are loaded (so a mismatch fails
//! before the store is touched):
//! - every folder is a model folder (has `config.json`); an adapter folder's base is one,
//!   with the shapes the adapter's own `config.json` describes;
//! - every `tokenizer.json` equals the first one's *as parsed JSON*: a re-serialized file
//!   (other whitespace, key order or escapes) passes, a changed token, id, merge or
//!   normalizer fails;
//! - every `vocab_size` equals the first one's, and the (shared) tokenizer's ids fit it;
//! - the smallest `max_position_embeddings` is returned, for the stage to check its sequences
//!   against ([`SharedModels::max_positions`]).

use anyhow::{bail, Context, Result};
use rto_model::{ModelConfig, TextTokenizer};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// What a checked set of models has in common.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedModels {
    pub vocab_size: i64,
    /// The smallest `max_position_embeddings` among the models: no sequence (prompt +
    /// response) may be longer.
    pub max_positions: usize,
    /// The `config.json` that sets `max_positions`, for messages.
    pub max_positions_config: PathBuf,
}

/// Checks `models` — (role, folder) pairs, the first one the reference the others are compared
/// with — against the rules of the module docs. Messages name both folders' files.
pub fn check_models(models: &[(&str, &Path)]) -> Result<SharedModels> {
    // An adapter folder is checked through the folder describing its model (its own
    // config.json and tokenizer, or its base's).
    for (role, dir) in models {
        rto_model::adapter::check_folder(dir).with_context(|| format!("the {role} model {}", dir.display()))?;
    }
    let folders: Vec<(&str, PathBuf)> =
        models.iter().map(|&(role, dir)| Ok((role, rto_model::adapter::config_folder(dir)?))).collect::<Result<_>>()?;
    let models: Vec<(&str, &Path)> = folders.iter().map(|(role, dir)| (*role, dir.as_path())).collect();
    let models = models.as_slice();
    let Some(&(first_role, first)) = models.first() else { bail!("check_models needs at least one model folder") };
    for (_, dir) in models {
        if !dir.join("config.json").is_file() {
            bail!("{} is not a model folder (no config.json): give a folder printed by a training stage or a Hugging Face model folder", dir.display());
        }
    }
    let tokenizer = read_tokenizer(first)?;
    let config = ModelConfig::from_file(&first.join("config.json"))?;
    let mut shared = SharedModels {
        vocab_size: config.vocab_size,
        max_positions: config.max_position_embeddings.max(0) as usize,
        max_positions_config: first.join("config.json"),
    };
    for &(role, dir) in &models[1..] {
        if read_tokenizer(dir)? != tokenizer {
            bail!(
                "{} ({role}) and {} ({first_role}) differ (compared as parsed JSON, so formatting does not matter): the models were trained with different tokenizers; use models that share one",
                dir.join("tokenizer.json").display(),
                first.join("tokenizer.json").display()
            );
        }
        let other = ModelConfig::from_file(&dir.join("config.json"))?;
        if other.vocab_size != shared.vocab_size {
            bail!(
                "{} ({role}) has vocab_size {}, {} ({first_role}) has {}: the models do not share a vocabulary",
                dir.join("config.json").display(),
                other.vocab_size,
                first.join("config.json").display(),
                shared.vocab_size
            );
        }
        let positions = other.max_position_embeddings.max(0) as usize;
        if positions < shared.max_positions {
            shared.max_positions = positions;
            shared.max_positions_config = dir.join("config.json");
        }
    }
    TextTokenizer::from_dir(first)?.check_fits(shared.vocab_size, first)?;
    Ok(shared)
}

/// `dir/tokenizer.json` as a JSON value.
fn read_tokenizer(dir: &Path) -> Result<Value> {
    let path = dir.join("tokenizer.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!("reading {}: every model folder must hold the tokenizer it was trained with", path.display())
    })?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}
