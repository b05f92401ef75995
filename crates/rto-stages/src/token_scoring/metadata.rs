//! The `rto.*` file metadata of a token-reward table (DESIGN.md §3): what priced its tokens.
//! Written by [`RewardMetadata::to_kv`] (token-reward-annotate, ppo-train's rollouts) and read
//! back by [`RewardMetadata::from_kv`] (the `show` views, tests), so the key names and value
//! formats live here only. Keys:
//!
//! | key | value |
//! |---|---|
//! | `rto.stage` | the writing stage: `annotate`, `ppo` |
//! | `rto.mode` | the reward mode (`rto`, `ppo`, `dpo-only`, `ddpo`, `rs-ppo`) |
//! | `rto.beta1` `rto.clip` `rto.beta2` `rto.beta3` `rto.rm_clamp` | the weights the mode applied (β1 = 0 under `ppo`, β3 = 0 under `dpo-only`), as Rust prints an f64 (`0.05`, `inf`) |
//! | `rto.tokenizer` | blake3 of the tokenizer.json that encoded the text |
//! | `rto.model.<role>` | content key of each model folder (`reference`, `dpo`, `policy`, `reward_model`) |
//! | `rto.data` | content key of the annotated data file (annotate) |
//! | `rto.settings` | the stage settings as JSON (annotate) |
//! | `rto.iteration` | the PPO iteration of a rollout table (ppo) |
//!
//! The weight keys keep the formula's names (`clip`, `beta2`) rather than the flags'
//! (`--dpo-clip`, `--kl-coef`): users' pandas/duckdb code reads them.

use anyhow::{anyhow, Context, Result};
use rto_algo::{RewardMode, RewardWeights};
use rto_data::store::{hash_file, input_key};
use std::collections::BTreeMap;
use std::path::Path;

const STAGE: &str = "rto.stage";
const MODE: &str = "rto.mode";
const TOKENIZER: &str = "rto.tokenizer";
const DATA: &str = "rto.data";
const SETTINGS: &str = "rto.settings";
const ITERATION: &str = "rto.iteration";
const MODEL_PREFIX: &str = "rto.model.";

/// The typed form of a table's `rto.*` metadata (see the module docs for the keys).
#[derive(Debug, Clone, PartialEq)]
pub struct RewardMetadata {
    pub stage: String,
    pub mode: RewardMode,
    /// The weights the mode applied (`RewardMode::effective_weights`), not the configured ones.
    pub weights: RewardWeights,
    /// blake3 of the tokenizer.json.
    pub tokenizer: String,
    /// Content key of each model folder, by role.
    pub models: BTreeMap<String, String>,
    pub data: Option<String>,
    pub settings: Option<serde_json::Value>,
    pub iteration: Option<u32>,
}

/// The weight keys and their fields: the one list both directions use.
fn weight_fields(w: &mut RewardWeights) -> [(&'static str, &mut f64); 5] {
    [
        ("rto.beta1", &mut w.beta1),
        ("rto.clip", &mut w.clip),
        ("rto.beta2", &mut w.beta2),
        ("rto.beta3", &mut w.beta3),
        ("rto.rm_clamp", &mut w.rm_clamp),
    ]
}

impl RewardMetadata {
    /// The metadata of a table priced by `models` ((role, folder); absent ones skipped) under
    /// `mode` and the configured `weights`, its text encoded by `tokenizer_dir`'s tokenizer.
    pub fn new(
        stage: &str,
        mode: RewardMode,
        weights: &RewardWeights,
        tokenizer_dir: &Path,
        models: &[(&str, Option<&Path>)],
    ) -> Result<Self> {
        let mut keys = BTreeMap::new();
        for (role, folder) in models {
            if let Some(folder) = folder {
                keys.insert(role.to_string(), input_key(folder)?.as_str().to_string());
            }
        }
        Ok(Self {
            stage: stage.to_string(),
            mode,
            weights: mode.effective_weights(weights),
            tokenizer: hash_file(&tokenizer_dir.join("tokenizer.json"))?.as_str().to_string(),
            models: keys,
            data: None,
            settings: None,
            iteration: None,
        })
    }

    /// The key-value pairs to hand to the table writer (`TableOptions::metadata`).
    pub fn to_kv(&self) -> BTreeMap<String, String> {
        let mut kv = BTreeMap::from([
            (STAGE.to_string(), self.stage.clone()),
            (MODE.to_string(), self.mode.name().to_string()),
            (TOKENIZER.to_string(), self.tokenizer.clone()),
        ]);
        let mut weights = self.weights;
        kv.extend(weight_fields(&mut weights).map(|(key, value)| (key.to_string(), value.to_string())));
        kv.extend(self.models.iter().map(|(role, key)| (format!("{MODEL_PREFIX}{role}"), key.clone())));
        let optional = [
            (DATA, self.data.clone()),
            (SETTINGS, self.settings.as_ref().map(|s| s.to_string())),
            (ITERATION, self.iteration.map(|i| i.to_string())),
        ];
        kv.extend(optional.into_iter().filter_map(|(key, value)| Some((key.to_string(), value?))));
        kv
    }

    /// Reads the metadata back from a table's key-value map. `None` when the map has no
    /// `rto.stage` (a table written by other code); an error naming the key when a key the
    /// stages always write is missing or malformed.
    pub fn from_kv(kv: &BTreeMap<String, String>) -> Result<Option<Self>> {
        let Some(stage) = kv.get(STAGE) else { return Ok(None) };
        let get = |key: &str| kv.get(key).ok_or_else(|| anyhow!("no `{key}` in the table metadata"));
        let mode: RewardMode = get(MODE)?.parse().with_context(|| format!("metadata `{MODE}`"))?;
        let mut weights = RewardWeights::default();
        for (key, field) in weight_fields(&mut weights) {
            let text = get(key)?;
            *field = text.parse().map_err(|_| anyhow!("metadata `{key}` = {text:?} is not a number"))?;
        }
        let settings = kv
            .get(SETTINGS)
            .map(|text| serde_json::from_str(text).with_context(|| format!("metadata `{SETTINGS}` is not JSON")))
            .transpose()?;
        let iteration = kv
            .get(ITERATION)
            .map(|text| text.parse().map_err(|_| anyhow!("metadata `{ITERATION}` = {text:?} is not an iteration")))
            .transpose()?;
        let models = kv
            .iter()
            .filter_map(|(key, value)| Some((key.strip_prefix(MODEL_PREFIX)?.to_string(), value.clone())))
            .collect();
        Ok(Some(Self {
            stage: stage.clone(),
            mode,
            weights,
            tokenizer: get(TOKENIZER)?.clone(),
            models,
            data: kv.get(DATA).cloned(),
            settings,
            iteration,
        }))
    }

    /// Label/value pairs for a reader, in reading order: stage, mode, iteration, weights,
    /// then the content keys (tokenizer, data, models). `rto.settings` is left out (long JSON).
    pub fn display_entries(&self) -> Vec<(String, String)> {
        let label = |key: &str| key.trim_start_matches("rto.").to_string();
        let mut out = vec![(label(STAGE), self.stage.clone()), (label(MODE), self.mode.name().to_string())];
        out.extend(self.iteration.map(|i| (label(ITERATION), i.to_string())));
        let mut weights = self.weights;
        out.extend(weight_fields(&mut weights).map(|(key, value)| (label(key), value.to_string())));
        out.push((label(TOKENIZER), self.tokenizer.clone()));
        out.extend(self.data.clone().map(|d| (label(DATA), d)));
        out.extend(self.models.iter().map(|(role, key)| (format!("model.{role}"), key.clone())));
        out
    }
}
