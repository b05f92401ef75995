//! The model configuration, read from and written to Hugging Face `config.json`.
//!
//! Field names are transformers' own, so a folder we write loads in `transformers` and a hub
//! checkpoint loads here. Fields we do not interpret are kept in `extra` and written back, so a
//! round trip through our tools never drops what another tool put there.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::Path;

/// The config.json field holding a reward model's score normalization.
pub const REWARD_NORMALIZATION: &str = "reward_normalization";

/// Architectures this crate runs. Qwen2 is Llama with biases on the q/k/v projections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Qwen2,
}

/// How rotary frequencies are computed.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE with `rope_theta`.
    Default,
    /// Llama-3.1 style frequency-dependent scaling.
    Llama3 { factor: f64, low_freq_factor: f64, high_freq_factor: f64, original_max_position: f64 },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelConfig {
    pub model_type: String,
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<i64>,
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    /// transformers < 5 and hub checkpoints: top level. transformers 5 writes `rope_parameters`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<Value>,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: i64,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Llama's switch for q/k/v/o biases; Qwen2 always has q/k/v biases.
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_token_id: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architectures: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_labels: Option<i64>,
    /// Everything else, preserved verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn default_rms_norm_eps() -> f64 {
    1e-6
}
fn default_max_positions() -> i64 {
    4096
}

impl ModelConfig {
    /// Reads and validates `config.json`; every error names the file and the field.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading model config {}", path.display()))?;
        let config: ModelConfig =
            serde_json::from_str(&text).with_context(|| format!("parsing model config {}", path.display()))?;
        config.validate().with_context(|| format!("invalid model config {}", path.display()))?;
        Ok(config)
    }

    pub fn to_file(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }

    /// A small Llama config, for random-init models (tests, benchmarks, the toy task).
    #[allow(clippy::too_many_arguments)]
    pub fn small_llama(
        vocab: i64,
        hidden: i64,
        intermediate: i64,
        layers: i64,
        heads: i64,
        kv_heads: i64,
        max_positions: i64,
    ) -> Self {
        let value = serde_json::json!({
            "model_type": "llama", "architectures": ["LlamaForCausalLM"],
            "vocab_size": vocab, "hidden_size": hidden, "intermediate_size": intermediate,
            "num_hidden_layers": layers, "num_attention_heads": heads,
            "num_key_value_heads": kv_heads, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "max_position_embeddings": max_positions, "tie_word_embeddings": false,
            "hidden_act": "silu", "attention_bias": false,
        });
        serde_json::from_value(value).expect("static config is valid")
    }

    pub fn validate(&self) -> Result<()> {
        self.architecture()?;
        self.rope()?;
        let act = self.extra.get("hidden_act").and_then(Value::as_str).unwrap_or("silu");
        if act != "silu" {
            bail!("field `hidden_act`: only \"silu\" is supported, got {act:?}");
        }
        for (field, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
        ] {
            if v <= 0 {
                bail!("field `{field}` must be positive, got {v}");
            }
        }
        let kv = self.num_kv_heads();
        if kv <= 0 || self.num_attention_heads % kv != 0 {
            bail!(
                "field `num_key_value_heads` ({kv}) must divide `num_attention_heads` ({})",
                self.num_attention_heads
            );
        }
        if self.head_dim.is_none() && self.hidden_size % self.num_attention_heads != 0 {
            bail!("field `hidden_size` must be divisible by `num_attention_heads`");
        }
        if self.head_dim() % 2 != 0 {
            bail!("head dimension {} must be even for rotary embeddings", self.head_dim());
        }
        Ok(())
    }

    pub fn architecture(&self) -> Result<Architecture> {
        match self.model_type.as_str() {
            "llama" => Ok(Architecture::Llama),
            "qwen2" => Ok(Architecture::Qwen2),
            other => bail!("field `model_type`: unsupported {other:?} (supported: llama, qwen2)"),
        }
    }

    pub fn num_kv_heads(&self) -> i64 {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> i64 {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// Whether q/k/v projections carry a bias (Qwen2 always; Llama when `attention_bias`).
    pub fn qkv_bias(&self) -> bool {
        self.attention_bias || self.model_type == "qwen2"
    }

    /// Whether the output projection carries a bias (Llama's `attention_bias` only).
    pub fn o_bias(&self) -> bool {
        self.attention_bias && self.model_type == "llama"
    }

    /// The rope base and scaling, from either place transformers writes them.
    pub fn rope(&self) -> Result<(f64, RopeScaling)> {
        let params = self.rope_parameters.as_ref().and_then(Value::as_object);
        let theta = self
            .rope_theta
            .or_else(|| params.and_then(|p| p.get("rope_theta")).and_then(Value::as_f64))
            .unwrap_or(10000.0);
        let scaling = self.rope_scaling.as_ref().filter(|v| !v.is_null()).or(self.rope_parameters.as_ref());
        let Some(scaling) = scaling.and_then(Value::as_object) else {
            return Ok((theta, RopeScaling::Default));
        };
        let kind =
            scaling.get("rope_type").or_else(|| scaling.get("type")).and_then(Value::as_str).unwrap_or("default");
        let number = |key: &str| {
            scaling
                .get(key)
                .and_then(Value::as_f64)
                .with_context(|| format!("field `rope_scaling.{key}` is required for rope_type {kind:?}"))
        };
        match kind {
            "default" => Ok((theta, RopeScaling::Default)),
            "llama3" => Ok((
                theta,
                RopeScaling::Llama3 {
                    factor: number("factor")?,
                    low_freq_factor: number("low_freq_factor")?,
                    high_freq_factor: number("high_freq_factor")?,
                    original_max_position: number("original_max_position_embeddings")?,
                },
            )),
            other => bail!("field `rope_scaling`: rope_type {other:?} is not supported (default, llama3)"),
        }
    }

    /// End-of-sequence ids: config.json allows one id or a list.
    /// The dtype the weights were saved in, from `dtype` (transformers ≥ 4.56) or the older
    /// `torch_dtype`; `None` when the config names neither or names another dtype.
    pub fn stored_kind(&self) -> Option<tch::Kind> {
        let name = self.extra.get("dtype").or_else(|| self.extra.get("torch_dtype"))?.as_str()?;
        match name {
            "float32" => Some(tch::Kind::Float),
            "bfloat16" => Some(tch::Kind::BFloat16),
            "float16" => Some(tch::Kind::Half),
            _ => None,
        }
    }

    pub fn eos_token_ids(&self) -> Vec<i64> {
        ids_of(self.eos_token_id.as_ref())
    }

    pub fn bos_token_id(&self) -> Option<i64> {
        ids_of(self.bos_token_id.as_ref()).first().copied()
    }

    /// Marks the folder as a reward/value model that transformers loads as
    /// `LlamaForSequenceClassification` with one label.
    pub fn set_sequence_classification(&mut self) {
        let arch = match self.model_type.as_str() {
            "qwen2" => "Qwen2ForSequenceClassification",
            _ => "LlamaForSequenceClassification",
        };
        self.architectures = Some(vec![arch.to_string()]);
        self.num_labels = Some(1);
        self.extra.remove("id2label");
        self.extra.remove("label2id");
    }

    /// Mean and std of the reward model's scores on its eval split, stored by rm-train so that
    /// users of the model can normalize (DESIGN.md §4, normalize_reward).
    pub fn reward_normalization(&self) -> Option<(f64, f64)> {
        let value = self.extra.get(REWARD_NORMALIZATION)?;
        Some((value.get("mean")?.as_f64()?, value.get("std")?.as_f64()?))
    }

    pub fn set_reward_normalization(&mut self, mean: f64, std: f64) {
        self.extra.insert(REWARD_NORMALIZATION.into(), serde_json::json!({"mean": mean, "std": std}));
    }

    pub fn is_sequence_classification(&self) -> bool {
        self.architectures.as_ref().is_some_and(|a| a.iter().any(|s| s.ends_with("ForSequenceClassification")))
    }
}

fn ids_of(value: Option<&Value>) -> Vec<i64> {
    match value {
        Some(Value::Number(n)) => n.as_i64().into_iter().collect(),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_i64).collect(),
        _ => vec![],
    }
}
