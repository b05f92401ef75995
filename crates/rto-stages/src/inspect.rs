//! `token-reward-annotate show`: a token-reward table for people who would rather look than
//! read. A terminal gets the response with each token's background coloured by its reward
//! ([`terminal`]); a pipe or file gets plain text with the values; `--html` writes one
//! self-contained page ([`html`]).
//!
//! Colours are scaled by the largest |value| in the whole table (not per sample), so the same
//! colour means the same reward across samples and between the terminal and the page.

pub mod html;
pub mod terminal;

use crate::token_scoring::RewardMetadata;
use anyhow::{bail, Context, Result};
use rto_data::token_table::{SampleRecord, TokenRecord, TokenTableReader};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct ShowArgs {
    /// A token-reward table folder (or its tokens.parquet / samples.parquet).
    pub folder: PathBuf,
    /// The sample_id to show (default: the first sample; with --html: the first --max-samples).
    #[arg(long)]
    pub sample: Option<u64>,
    /// Write one self-contained HTML page here instead of printing.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Samples on the HTML page, from the start of the table.
    #[arg(long, default_value_t = 200)]
    pub max_samples: usize,
    /// The column that colours the tokens.
    #[arg(long, value_enum, default_value_t = ValueColumn::Reward)]
    pub by: ValueColumn,
}

/// Per-token columns a colour can stand for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ValueColumn {
    Reward,
    DpoReward,
    KlPenalty,
}

impl ValueColumn {
    pub fn name(self) -> &'static str {
        match self {
            ValueColumn::Reward => "reward",
            ValueColumn::DpoReward => "dpo_reward",
            ValueColumn::KlPenalty => "kl_penalty",
        }
    }

    /// The token's value; a null column counts as 0 (no colour).
    pub fn of(self, token: &TokenRecord) -> f32 {
        match self {
            ValueColumn::Reward => token.reward,
            ValueColumn::DpoReward => token.dpo_reward.unwrap_or(0.0),
            ValueColumn::KlPenalty => token.kl_penalty.unwrap_or(0.0),
        }
    }
}

/// The samples to display and what their colours are scaled by.
pub struct Selection {
    pub samples: Vec<(SampleRecord, Vec<TokenRecord>)>,
    /// max |value| over every token of the table (the colour scale).
    pub scale: f32,
    pub column: ValueColumn,
    /// What priced the tokens (`None` for a table written by other code).
    pub reward: Option<RewardMetadata>,
    pub table_samples: u64,
    pub source: PathBuf,
}

impl Selection {
    /// What priced the tokens as (label, value) pairs for display; content keys (64 hex
    /// characters) cut to the 12 that identify them.
    pub fn metadata_entries(&self) -> Vec<(String, String)> {
        let entries = self.reward.iter().flat_map(RewardMetadata::display_entries);
        entries.map(|(label, value)| (label, value.chars().take(12).collect())).collect()
    }
}

/// Reads the table once, streaming: the scale needs every token, the display only a few.
pub fn select(args: &ShowArgs) -> Result<Selection> {
    // A store folder is verified first: an edited table must not be shown as annotate's.
    if args.folder.join(rto_data::store::MANIFEST_FILE).is_file() {
        rto_data::store::verify(&args.folder).with_context(|| {
            format!(
                "{} no longer matches its manifest; recompute it (rerun the stage with --force)",
                args.folder.display()
            )
        })?;
    }
    let reader = TokenTableReader::open(&args.folder)?;
    let reward = RewardMetadata::from_kv(reader.metadata()).with_context(|| {
        format!("{}: the rto.* metadata of tokens.parquet is damaged; rewrite the table", args.folder.display())
    })?;
    let keep = if args.html.is_some() { args.max_samples } else { 1 };
    let (mut samples, mut scale, mut table_samples) = (Vec::new(), 0f32, 0u64);
    for item in reader {
        let (sample, tokens) = item?;
        table_samples += 1;
        scale = tokens.iter().map(|t| args.by.of(t).abs()).fold(scale, f32::max);
        let wanted = match args.sample {
            Some(id) => sample.sample_id == id,
            None => samples.len() < keep,
        };
        if wanted {
            samples.push((sample, tokens));
        }
    }
    if let (Some(id), true) = (args.sample, samples.is_empty()) {
        bail!("{}: no sample_id {id} among its {table_samples} samples", args.folder.display());
    }
    if samples.is_empty() {
        bail!("{}: the table has no samples", args.folder.display());
    }
    Ok(Selection { samples, scale, column: args.by, reward, table_samples, source: args.folder.clone() })
}

/// Entry point of `token-reward-annotate show`.
pub fn show(args: &ShowArgs) -> Result<()> {
    let selection = select(args)?;
    if let Some(path) = &args.html {
        html::write(path, &selection)?;
        eprintln!("wrote {} ({} of {} samples)", path.display(), selection.samples.len(), selection.table_samples);
        return Ok(());
    }
    let stdout = std::io::stdout();
    let coloured = stdout.is_terminal();
    let mut out = stdout.lock();
    out.write_all(terminal::table_line(&selection, coloured).as_bytes())?;
    for (sample, tokens) in &selection.samples {
        let text =
            if coloured { terminal::coloured(sample, tokens, &selection) } else { terminal::plain(sample, tokens) };
        out.write_all(text.as_bytes())?;
    }
    Ok(())
}

/// Background colour of a value: white at 0, towards green (positive) or red (negative),
/// full strength at |value| = scale.
pub fn colour(value: f32, scale: f32) -> (u8, u8, u8) {
    let t = if scale > 0.0 && value.is_finite() { (value.abs() / scale).clamp(0.0, 1.0) } else { 0.0 };
    let target = if value >= 0.0 { (26.0, 150.0, 65.0) } else { (215.0, 48.0, 39.0) };
    let mix = |to: f32| (255.0 + (to - 255.0) * t).round() as u8;
    (mix(target.0), mix(target.1), mix(target.2))
}

/// Dark text on light backgrounds, white on strong ones.
pub fn text_is_light(value: f32, scale: f32) -> bool {
    scale > 0.0 && (value.abs() / scale) > 0.6
}

/// A number for display; `-` for a null column.
pub fn fmt_opt(value: Option<f32>) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:+.5}"))
}
