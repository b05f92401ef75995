//! Preference pairs, prompts and (prompt, response) rows from Parquet or JSON lines, in the
//! shapes users actually have: plain string columns, or Hugging Face chat-message lists as in
//! `HuggingFaceH4/ultrafeedback_binarized` (`chosen`/`rejected` = [user, assistant] messages)
//! and `weqweasdas/ultra_train` (`context_messages`). Every error names the file, and where
//! it applies the row and the column, because these files are large and edited by hand.

mod source;
mod split;

pub use split::{shuffle, split, EvalSize, SplitMix64};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use source::{Cell, RawTable};
use std::collections::BTreeMap;
use std::path::Path;

/// One chat message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// A prompt: raw text, or a conversation for a chat template. Serializes as a JSON string
/// or a list of messages, the two shapes it is read from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Messages(Vec<Message>),
}

impl Prompt {
    /// The prompt as chat messages (raw text becomes one user turn).
    pub fn to_messages(&self) -> Vec<Message> {
        match self {
            Prompt::Text(t) => vec![Message { role: "user".into(), content: t.clone() }],
            Prompt::Messages(m) => m.clone(),
        }
    }

    /// Human-readable text: the text itself, or the last user turn of a conversation.
    pub fn display_text(&self) -> &str {
        match self {
            Prompt::Text(t) => t,
            Prompt::Messages(m) => {
                m.iter().rev().find(|m| m.role == "user").or(m.last()).map_or("", |m| m.content.as_str())
            }
        }
    }

    /// Stable id for joins across tables (`prompt_id` in token tables): the first 16 hex
    /// digits of blake3 over the prompt's JSON form. Equal prompts get equal ids.
    pub fn id(&self) -> String {
        let json = serde_json::to_string(self).expect("prompts always serialize");
        blake3::hash(json.as_bytes()).to_hex()[..16].to_string()
    }
}

/// A judged pair: `chosen` was preferred to `rejected` for `prompt`. `row` is the 0-based row
/// in the source file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreferencePair {
    pub row: usize,
    pub prompt: Prompt,
    pub chosen: String,
    pub rejected: String,
    pub score_chosen: Option<f64>,
    pub score_rejected: Option<f64>,
}

/// A prompt for generation, with an optional reference answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PromptRecord {
    pub row: usize,
    pub prompt: Prompt,
    pub reference: Option<String>,
}

/// A (prompt, response) row, e.g. for annotating responses with token rewards.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResponseRecord {
    pub row: usize,
    pub prompt: Prompt,
    pub response: String,
}

/// Names of the columns to read; defaults fit UltraFeedback and ultra_train. Flatten into a
/// stage's args to get `--prompt-column` and friends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
pub struct ColumnNames {
    /// Prompt column (string or message list).
    #[arg(long = "prompt-column", default_value = "prompt")]
    pub prompt: String,
    /// Preferred response (string, or messages ending in the assistant turn).
    #[arg(long = "chosen-column", default_value = "chosen")]
    pub chosen: String,
    /// Dispreferred response (string, or messages ending in the assistant turn).
    #[arg(long = "rejected-column", default_value = "rejected")]
    pub rejected: String,
    /// Response column of (prompt, response) data.
    #[arg(long = "response-column", default_value = "response")]
    pub response: String,
    /// Conversation-so-far column of prompt-only data; used before `prompt` when present.
    #[arg(long = "context-messages-column", default_value = "context_messages")]
    pub context_messages: String,
    /// Optional reference answer of prompt-only data.
    #[arg(long = "reference-column", default_value = "reference")]
    pub reference: String,
    /// Optional judge score of the chosen response.
    #[arg(long = "score-chosen-column", default_value = "score_chosen")]
    pub score_chosen: String,
    /// Optional judge score of the rejected response.
    #[arg(long = "score-rejected-column", default_value = "score_rejected")]
    pub score_rejected: String,
}

impl Default for ColumnNames {
    fn default() -> Self {
        Self {
            prompt: "prompt".into(),
            chosen: "chosen".into(),
            rejected: "rejected".into(),
            response: "response".into(),
            context_messages: "context_messages".into(),
            reference: "reference".into(),
            score_chosen: "score_chosen".into(),
            score_rejected: "score_rejected".into(),
        }
    }
}

/// What a stage did to its rows; it goes into the stage's manifest metrics so a user sees
/// how much data was dropped or cut and why. Truncation is token-level, so the stage that
/// tokenizes fills this in.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetStats {
    /// Rows read.
    pub rows: usize,
    /// Rows dropped, by reason ("prompt longer than max_prompt_len", ...).
    pub skipped: BTreeMap<String, usize>,
    pub truncated_prompt: usize,
    pub truncated_response: usize,
}

impl DatasetStats {
    pub fn new(rows: usize) -> Self {
        Self { rows, ..Self::default() }
    }

    /// Counts one dropped row under `reason`.
    pub fn skip(&mut self, reason: &str) {
        *self.skipped.entry(reason.to_string()).or_default() += 1;
    }

    /// Rows not dropped.
    pub fn kept(&self) -> usize {
        self.rows - self.skipped.values().sum::<usize>()
    }
}

const TEXT_OR_MESSAGES: &str = "text or a list of {role, content} messages";

fn describe(cell: &Cell) -> String {
    match cell {
        Cell::Null => "null".into(),
        Cell::Str(_) => "text".into(),
        Cell::Messages(_) => "a message list".into(),
        Cell::Num(_) => "a number".into(),
        Cell::Other(d) => d.clone(),
    }
}

fn non_empty(table: &RawTable) -> Result<()> {
    if table.n_rows == 0 {
        bail!("{}: the dataset has no rows", table.file.display());
    }
    Ok(())
}

/// A response cell: text as is, or messages whose last turn is the assistant's, split into
/// (conversation before it, its content).
fn response_of(table: &RawTable, row: usize, column: &str) -> Result<(Vec<Message>, String)> {
    match table.cell(column, row) {
        Cell::Str(s) => Ok((Vec::new(), s.clone())),
        Cell::Messages(msgs) => match msgs.split_last() {
            Some((last, before)) if last.role == "assistant" => Ok((before.to_vec(), last.content.clone())),
            Some((last, _)) => Err(table.err(
                row,
                column,
                format!("the last message has role `{}`; expected the `assistant` response", last.role),
            )),
            None => Err(table.err(row, column, "empty message list")),
        },
        other => Err(table.err(row, column, format!("expected {TEXT_OR_MESSAGES}, found {}", describe(other)))),
    }
}

fn prompt_of(table: &RawTable, row: usize, column: &str) -> Result<Prompt> {
    if !table.has(column) {
        return Err(table.missing(column));
    }
    match table.cell(column, row) {
        Cell::Str(s) => Ok(Prompt::Text(s.clone())),
        Cell::Messages(m) if !m.is_empty() => Ok(Prompt::Messages(m.clone())),
        Cell::Messages(_) => Err(table.err(row, column, "empty message list")),
        other => Err(table.err(row, column, format!("expected {TEXT_OR_MESSAGES}, found {}", describe(other)))),
    }
}

fn optional_number(table: &RawTable, row: usize, column: &str) -> Result<Option<f64>> {
    match table.cell(column, row) {
        Cell::Null => Ok(None),
        // A NaN or infinite score would poison every average and label computed from it.
        Cell::Num(x) if !x.is_finite() => {
            Err(table.err(row, column, format!("{x} is not a finite number; fix the value or leave it empty (null)")))
        }
        Cell::Num(x) => Ok(Some(*x)),
        other => Err(table.err(row, column, format!("expected a number, found {}", describe(other)))),
    }
}

fn optional_text(table: &RawTable, row: usize, column: &str) -> Result<Option<String>> {
    match table.cell(column, row) {
        Cell::Null => Ok(None),
        Cell::Str(s) => Ok(Some(s.clone())),
        other => Err(table.err(row, column, format!("expected text, found {}", describe(other)))),
    }
}

/// Reads preference pairs. With message-list responses the prompt is the conversation
/// before the last assistant turn (it must be the same for chosen and rejected); with plain
/// text responses, or a bare [assistant] list, it comes from the prompt column.
pub fn read_preference_pairs(path: &Path, cols: &ColumnNames) -> Result<Vec<PreferencePair>> {
    let wanted = [&cols.prompt, &cols.chosen, &cols.rejected, &cols.score_chosen, &cols.score_rejected];
    let table = RawTable::load(path, &wanted.map(String::as_str))?;
    for c in [&cols.chosen, &cols.rejected] {
        if !table.has(c) {
            return Err(table.missing(c));
        }
    }
    non_empty(&table)?;
    let mut out = Vec::with_capacity(table.n_rows);
    for row in 0..table.n_rows {
        let (chosen_ctx, chosen) = response_of(&table, row, &cols.chosen)?;
        let (rejected_ctx, rejected) = response_of(&table, row, &cols.rejected)?;
        let prompt = if chosen_ctx.is_empty() && rejected_ctx.is_empty() {
            prompt_of(&table, row, &cols.prompt)?
        } else if chosen_ctx == rejected_ctx {
            Prompt::Messages(chosen_ctx)
        } else {
            return Err(table.err(
                row,
                &cols.rejected,
                format!("the conversation before the response differs from column `{}`'s", cols.chosen),
            ));
        };
        out.push(PreferencePair {
            row,
            prompt,
            chosen,
            rejected,
            score_chosen: optional_number(&table, row, &cols.score_chosen)?,
            score_rejected: optional_number(&table, row, &cols.score_rejected)?,
        });
    }
    Ok(out)
}

/// Reads prompts: from the context-messages column when the file has it, else from the
/// prompt column; the reference column is optional.
pub fn read_prompts(path: &Path, cols: &ColumnNames) -> Result<Vec<PromptRecord>> {
    let wanted = [&cols.context_messages, &cols.prompt, &cols.reference];
    let table = RawTable::load(path, &wanted.map(String::as_str))?;
    let column = if table.has(&cols.context_messages) {
        &cols.context_messages
    } else if table.has(&cols.prompt) {
        &cols.prompt
    } else {
        bail!(
            "{}: no column `{}` or `{}`; the file has columns: {} (name the prompt column with --prompt-column)",
            path.display(),
            cols.context_messages,
            cols.prompt,
            table.available.join(", ")
        );
    };
    non_empty(&table)?;
    (0..table.n_rows)
        .map(|row| {
            Ok(PromptRecord {
                row,
                prompt: prompt_of(&table, row, column)?,
                reference: optional_text(&table, row, &cols.reference)?,
            })
        })
        .collect()
}

/// Reads (prompt, response) rows; a message-list response carries its own prompt.
pub fn read_responses(path: &Path, cols: &ColumnNames) -> Result<Vec<ResponseRecord>> {
    let table = RawTable::load(path, &[cols.prompt.as_str(), cols.response.as_str()])?;
    if !table.has(&cols.response) {
        return Err(table.missing(&cols.response));
    }
    non_empty(&table)?;
    (0..table.n_rows)
        .map(|row| {
            let (ctx, response) = response_of(&table, row, &cols.response)?;
            let prompt = if ctx.is_empty() { prompt_of(&table, row, &cols.prompt)? } else { Prompt::Messages(ctx) };
            Ok(ResponseRecord { row, prompt, response })
        })
        .collect()
}
