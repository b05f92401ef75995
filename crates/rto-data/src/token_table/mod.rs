//! The token-reward tables of DESIGN.md §3: `tokens.parquet` (one row per response token)
//! and `samples.parquet` (one row per sample), zstd-compressed, with file-level key-value
//! metadata. The column names and types below are the contract with users' pandas / polars /
//! duckdb code and with every stage, so they are defined once, here. The `rto.*` metadata keys
//! the stages write (what priced the tokens) are defined once too, by
//! `rto_stages::token_scoring::RewardMetadata`.

mod reader;
mod writer;

pub use reader::{read_metadata, read_samples, read_table, read_tokens, TokenTableReader};
pub use writer::{TableOptions, TableSummary, TokenTableWriter};

use arrow::datatypes::{DataType, Field, Schema};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Version of the table layout; stored as `rto.schema_version` in both files.
pub const TOKEN_TABLE_SCHEMA_VERSION: u32 = 1;
/// Metadata key of the layout version.
pub const SCHEMA_VERSION_KEY: &str = "rto.schema_version";
/// Metadata key naming which of the two tables a file is ("tokens" or "samples").
pub const TABLE_KIND_KEY: &str = "rto.table";
pub const TOKENS_FILE: &str = "tokens.parquet";
pub const SAMPLES_FILE: &str = "samples.parquet";

/// One response token. `sample_id`, `prompt_id`, `iteration` and `side` are per sample and
/// come from its [`SampleRecord`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// 0-based index within the response.
    pub position: u32,
    pub token_id: u32,
    /// The decoded piece.
    pub token: String,
    pub logp_ref: Option<f32>,
    pub logp_dpo: Option<f32>,
    pub logp_policy: Option<f32>,
    /// clip(β1·(logp_dpo − logp_ref), −c, c).
    pub dpo_reward: Option<f32>,
    /// −β2·(logp_policy − logp_ref).
    pub kl_penalty: Option<f32>,
    /// β3·clamp(r_RM, −10, 10) on the last token, 0 elsewhere.
    pub sentence_reward: Option<f32>,
    /// The total per-token reward the PPO stage uses.
    pub reward: f32,
    /// The gold judge's credit for this token (column `gold_credit`, only in tables written
    /// with `TableOptions::gold_credit`, e.g. `token-reward-annotate --judge toy`).
    pub gold_credit: Option<f32>,
    /// The advantage the PPO update pushed this token by, when the writer was created with
    /// `advantage` (rollouts of ppo-train).
    pub advantage: Option<f32>,
}

/// One sample (a prompt and a response).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    pub sample_id: u64,
    pub prompt_id: String,
    /// The prompt as text (rendered by the stage, e.g. through the chat template).
    pub prompt: String,
    pub response: String,
    /// Number of token rows of this sample.
    pub n_tokens: u32,
    /// Σ dpo_reward.
    pub dpo_return: Option<f32>,
    pub sentence_reward: Option<f32>,
    /// Σ reward over the sample's tokens (column `return`).
    #[serde(rename = "return")]
    pub ret: f32,
    /// Gold-judge score, when the writer was created with `gold_score`.
    pub gold_score: Option<f64>,
    /// PPO iteration, when the writer was created with `iteration`.
    pub iteration: Option<u32>,
    /// "chosen" / "rejected" for annotated preference data, when created with `side`.
    pub side: Option<String>,
    /// The prompt's index in its rollout batch, shared by the responses sampled for that
    /// prompt, when the writer was created with `group` (rollouts of ppo-train).
    pub group: Option<u32>,
}

/// Which optional columns a table has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableLayout {
    pub iteration: bool,
    pub side: bool,
    pub gold_score: bool,
    /// `group` in both files (an SQL keyword: duckdb reads it as `"group"`).
    pub group: bool,
    /// `advantage` in tokens.parquet.
    pub advantage: bool,
}

/// Element types of the table columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ColType {
    U64,
    U32,
    F32,
    F64,
    Str,
}

impl ColType {
    pub(crate) fn arrow(self) -> DataType {
        match self {
            ColType::U64 => DataType::UInt64,
            ColType::U32 => DataType::UInt32,
            ColType::F32 => DataType::Float32,
            ColType::F64 => DataType::Float64,
            ColType::Str => DataType::Utf8,
        }
    }

    pub(crate) fn accepts(self, dt: &DataType) -> bool {
        match self {
            ColType::Str => matches!(dt, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View),
            other => &other.arrow() == dt,
        }
    }
}

/// (name, type, nullable) of each column, in file order.
pub(crate) type Columns = Vec<(&'static str, ColType, bool)>;

pub(crate) fn token_columns(layout: TableLayout) -> Columns {
    use ColType::*;
    let mut c = vec![
        ("sample_id", U64, false),
        ("prompt_id", Str, false),
        ("position", U32, false),
        ("token_id", U32, false),
        ("token", Str, false),
        ("logp_ref", F32, true),
        ("logp_dpo", F32, true),
        ("logp_policy", F32, true),
        ("dpo_reward", F32, true),
        ("kl_penalty", F32, true),
        ("sentence_reward", F32, true),
        ("reward", F32, false),
    ];
    if layout.iteration {
        c.push(("iteration", U32, false));
    }
    if layout.side {
        c.push(("side", Str, false));
    }
    if layout.group {
        c.push(("group", U32, false));
    }
    if layout.advantage {
        c.push(("advantage", F32, false));
    }
    c
}

/// The optional token column of the gold judge's per-token credit. Not part of
/// [`TableLayout`]: it is a token column only, and tables without it keep their schema.
pub const GOLD_CREDIT_COLUMN: &str = "gold_credit";

/// Token columns a table may have on top of [`token_columns`], checked when present.
pub(crate) const OPTIONAL_TOKEN_COLUMNS: [(&str, ColType); 1] = [(GOLD_CREDIT_COLUMN, ColType::F32)];

pub(crate) fn sample_columns(layout: TableLayout) -> Columns {
    use ColType::*;
    let mut c = vec![
        ("sample_id", U64, false),
        ("prompt_id", Str, false),
        ("prompt", Str, false),
        ("response", Str, false),
        ("n_tokens", U32, false),
        ("dpo_return", F32, true),
        ("sentence_reward", F32, true),
        ("return", F32, false),
    ];
    if layout.gold_score {
        c.push(("gold_score", F64, true));
    }
    if layout.iteration {
        c.push(("iteration", U32, false));
    }
    if layout.side {
        c.push(("side", Str, false));
    }
    if layout.group {
        c.push(("group", U32, false));
    }
    c
}

pub(crate) fn arrow_schema(columns: &Columns, metadata: &BTreeMap<String, String>) -> Arc<Schema> {
    let fields: Vec<Field> = columns.iter().map(|(n, t, null)| Field::new(*n, t.arrow(), *null)).collect();
    Arc::new(Schema::new(fields).with_metadata(metadata.clone()))
}

/// The table folder for a path that is the folder itself or one of its two files.
pub(crate) fn table_dir(path: &Path) -> PathBuf {
    match path.file_name().and_then(|n| n.to_str()) {
        Some(TOKENS_FILE) | Some(SAMPLES_FILE) => path.parent().unwrap_or(Path::new(".")).to_path_buf(),
        _ => path.to_path_buf(),
    }
}

/// Σ of the tokens' rewards, accumulated in f64 (the value `SampleRecord::ret` must hold).
pub fn sum_rewards(tokens: &[TokenRecord]) -> f32 {
    tokens.iter().map(|t| t.reward as f64).sum::<f64>() as f32
}

/// Σ of the tokens' DPO rewards, or `None` if any token lacks one.
pub fn sum_dpo_rewards(tokens: &[TokenRecord]) -> Option<f32> {
    tokens.iter().map(|t| t.dpo_reward.map(f64::from)).sum::<Option<f64>>().map(|s| s as f32)
}
