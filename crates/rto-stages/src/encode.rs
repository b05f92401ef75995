//! Dataset records → token ids, with the truncation rules every stage shares.
//!
//! Rules (counted in [`DatasetStats`], which each stage puts in its manifest):
//! - a prompt longer than `max_prompt_len` tokens is skipped (`prompt_too_long`): cutting a
//!   prompt changes the question, so no stage trains on a silently different one;
//! - a response gets EOS appended, then is cut to `max_response_len` (`truncated_response`);
//!   a cut response has no EOS, as a generation that ran out of budget;
//! - an empty response is skipped (`empty_response`); a pair whose chosen and rejected texts are
//!   equal carries no preference and is skipped (`chosen_equals_rejected`);
//! - a sequence (prompt + response) longer than the stage's models can hold is skipped
//!   (`sequence_too_long`, see [`fits_context`]): the limits are checked against the rows
//!   actually there, so a model with a short context takes every row that fits it.

use anyhow::{bail, Context, Result};
use rto_data::dataset::{DatasetStats, PreferencePair, Prompt};
use rto_model::{ChatTurn, TextTokenizer};
use serde::{Deserialize, Serialize};

/// Length limits, shared by every stage's flags.
#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
pub struct LengthLimits {
    /// Prompts longer than this many tokens are skipped (and counted).
    #[arg(long, default_value_t = 256)]
    pub max_prompt_len: usize,
    /// Responses are cut to this many tokens (EOS included).
    #[arg(long, default_value_t = 256)]
    pub max_response_len: usize,
}

pub struct Encoder<'a> {
    pub tokenizer: &'a TextTokenizer,
    pub limits: LengthLimits,
}

/// One preference pair in token ids.
#[derive(Debug, Clone)]
pub struct EncodedPair {
    pub row: usize,
    pub prompt: Vec<i64>,
    pub chosen: Vec<i64>,
    pub rejected: Vec<i64>,
}

/// The skip reason of a sequence longer than the models' context.
pub const SEQUENCE_TOO_LONG: &str = "sequence_too_long";

/// Whether `prompt` + `response` tokens fit `max_positions` (the smallest
/// max_position_embeddings of the stage's models, from `compat::check_models`); a sequence
/// that does not is counted as [`SEQUENCE_TOO_LONG`] in `stats`.
pub fn fits_context(prompt: usize, response: usize, max_positions: usize, stats: &mut DatasetStats) -> bool {
    let fits = prompt + response <= max_positions;
    if !fits {
        stats.skip(SEQUENCE_TOO_LONG);
    }
    fits
}

/// Fails unless every batch a training stage can build fits the model's context. A batch is
/// `[left-padded prompt | right-padded response]`, so its width is the longest prompt plus the
/// longest response among its rows, and a seeded shuffle can put any rows together: the
/// widest prompt and the widest response of the data must fit together. Checked before the
/// first step, so the user gets this message instead of a failure deep in a forward.
pub fn check_batch_width(
    widest_prompt: usize,
    widest_response: usize,
    max_positions: i64,
    model_dir: &std::path::Path,
) -> Result<()> {
    let width = widest_prompt + widest_response;
    anyhow::ensure!(
        width as i64 <= max_positions,
        "{}: the longest prompt ({widest_prompt} tokens) and the longest response ({widest_response}) need {width} positions, more than the model's max_position_embeddings {max_positions}: lower --max-prompt-len and --max-response-len to sum to at most {max_positions}",
        model_dir.display()
    );
    Ok(())
}

/// What to change when every row was skipped, from the skip reasons; appended to the
/// "no usable rows" errors so the message says the fix, not only the counts.
pub fn skip_hint(stats: &DatasetStats) -> String {
    let hints: Vec<&str> = stats
        .skipped
        .keys()
        .filter_map(|reason| match reason.as_str() {
            "prompt_too_long" => {
                Some("raise --max-prompt-len (within the model's max_position_embeddings) or shorten the prompts")
            }
            "empty_response" => Some("fill the response column (or name another with --response-column)"),
            "chosen_equals_rejected" => Some("chosen and rejected must differ"),
            "empty_prompt" => Some("fill the prompt column (or name another with --prompt-column)"),
            SEQUENCE_TOO_LONG => Some(
                "prompt + response must fit the models' max_position_embeddings: lower --max-response-len (or --max-new-tokens) or use models with a longer context",
            ),
            _ => None,
        })
        .collect();
    if hints.is_empty() {
        String::new()
    } else {
        format!(": {}", hints.join("; "))
    }
}

impl<'a> Encoder<'a> {
    pub fn new(tokenizer: &'a TextTokenizer, limits: LengthLimits) -> Result<Self> {
        if limits.max_prompt_len == 0 || limits.max_response_len == 0 {
            bail!("max_prompt_len and max_response_len must be at least 1");
        }
        Ok(Self { tokenizer, limits })
    }

    /// Prompt ids through the chat template (when the tokenizer has one); `None` when too long.
    pub fn prompt(&self, prompt: &Prompt, stats: &mut DatasetStats) -> Result<Option<Vec<i64>>> {
        let messages = prompt.to_messages();
        let turns: Vec<ChatTurn<'_>> =
            messages.iter().map(|m| ChatTurn { role: &m.role, content: &m.content }).collect();
        let ids = self.tokenizer.encode_prompt(&turns)?;
        if ids.len() > self.limits.max_prompt_len {
            stats.skip("prompt_too_long");
            return Ok(None);
        }
        Ok(Some(ids))
    }

    /// Response ids with EOS appended, cut to the limit; `None` for an empty response.
    pub fn response(&self, text: &str, stats: &mut DatasetStats) -> Result<Option<Vec<i64>>> {
        if text.trim().is_empty() {
            stats.skip("empty_response");
            return Ok(None);
        }
        let mut ids = self.tokenizer.encode(text, false)?;
        ids.extend(self.tokenizer.eos_id);
        if ids.len() > self.limits.max_response_len {
            ids.truncate(self.limits.max_response_len);
            stats.truncated_response += 1;
        }
        Ok(Some(ids))
    }

    /// Every usable pair, with the skip counts in `stats`. Fails when nothing is left.
    pub fn pairs(&self, pairs: &[PreferencePair], source: &str) -> Result<(Vec<EncodedPair>, DatasetStats)> {
        let mut stats = DatasetStats::new(pairs.len());
        let mut out = Vec::with_capacity(pairs.len());
        for pair in pairs {
            let context = || format!("{source} row {}", pair.row);
            if pair.chosen.trim() == pair.rejected.trim() {
                stats.skip("chosen_equals_rejected");
                continue;
            }
            let Some(prompt) = self.prompt(&pair.prompt, &mut stats).with_context(context)? else { continue };
            let Some(chosen) = self.response(&pair.chosen, &mut stats).with_context(context)? else { continue };
            let Some(rejected) = self.response(&pair.rejected, &mut stats).with_context(context)? else { continue };
            out.push(EncodedPair { row: pair.row, prompt, chosen, rejected });
        }
        if out.is_empty() {
            bail!(
                "{source}: no usable preference pairs out of {} rows (skipped: {:?}){}",
                pairs.len(),
                stats.skipped,
                skip_hint(&stats)
            );
        }
        Ok((out, stats))
    }
}
