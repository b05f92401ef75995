//! `token-reward-annotate show`: a token-reward table for people who would rather look than
//! read. A terminal gets the response with each token's background coloured ([`terminal`]);
//! a pipe or file gets plain text with the values; `--html` writes one self-contained page
//! with filters, paging and a pair view ([`html`]).
//!
//! Both views colour by the same column (`--color-by`, [`scale::ValueColumn`]) on the same
//! symmetric scale fit over the whole table ([`scale`] has the rule), and draw token
//! boundaries the same way ([`piece`]). A folder of tables (ppo-train's `rollouts/`, one
//! `iter-*` table per iteration) is read as one table.

pub mod html;
pub mod piece;
pub mod scale;
pub mod terminal;

use crate::token_scoring::RewardMetadata;
use anyhow::{bail, Context, Result};
use rto_data::token_table::{SampleRecord, TokenRecord, TokenTableReader, TOKENS_FILE};
use scale::{ScaleInputs, Scales, ValueColumn};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, clap::Args)]
pub struct ShowArgs {
    /// A token-reward table folder (or its tokens.parquet / samples.parquet), or a folder of
    /// tables such as ppo-train's rollouts/.
    pub folder: PathBuf,
    /// The sample_id to show (default: the first sample; with --html: the first --max-samples).
    #[arg(long)]
    pub sample: Option<u64>,
    /// Write one self-contained HTML page here instead of printing.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Samples in the HTML page, from the start of the table (the page shows them a page at a
    /// time; filters and sorting work on these).
    #[arg(long, default_value_t = 2000)]
    pub max_samples: usize,
    /// The per-token value that colours the tokens [default: dpo_reward when the table has
    /// it, else reward].
    #[arg(long = "color-by", alias = "by", value_enum, value_name = "COLUMN")]
    pub color_by: Option<ValueColumn>,
}

/// The samples to display and what their colours are scaled by.
pub struct Selection {
    pub samples: Vec<(SampleRecord, Vec<TokenRecord>)>,
    /// The scale of every column the table can be coloured by (fit over all its tokens).
    pub scales: Scales,
    /// The column the tokens are coloured by.
    pub column: ValueColumn,
    /// What priced the tokens (`None` for a table written by other code).
    pub reward: Option<RewardMetadata>,
    pub table_samples: u64,
    pub table_tokens: u64,
    pub source: PathBuf,
}

impl Selection {
    /// What priced the tokens as (label, value) pairs for display; content keys (64 hex
    /// characters) cut to the 12 that identify them.
    pub fn metadata_entries(&self) -> Vec<(String, String)> {
        let entries = self.reward.iter().flat_map(RewardMetadata::display_entries);
        entries.map(|(label, value)| (label, value.chars().take(12).collect())).collect()
    }

    /// The scale of the column the tokens are coloured by.
    pub fn scale(&self) -> f32 {
        self.scales.of(self.column)
    }
}

/// The tables under `path`: the table itself, or (when `path` is a folder without a
/// tokens.parquet) the tables of its subfolders in name order. Anything else goes to the
/// reader, whose error names what is missing.
fn table_folders(path: &Path) -> Result<Vec<PathBuf>> {
    if !path.is_dir() || path.join(TOKENS_FILE).exists() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path).with_context(|| format!("cannot list {}", path.display()))?;
    let mut tables: Vec<PathBuf> =
        entries.filter_map(|e| Some(e.ok()?.path())).filter(|p| p.join(TOKENS_FILE).is_file()).collect();
    tables.sort();
    if tables.is_empty() {
        tables.push(path.to_path_buf());
    }
    Ok(tables)
}

/// A store folder is verified first: an edited table must not be shown as the stage's.
fn verify_store_folder(folder: &Path) -> Result<()> {
    if folder.join(rto_data::store::MANIFEST_FILE).is_file() {
        rto_data::store::verify(folder).with_context(|| {
            format!("{} no longer matches its manifest; recompute it (rerun the stage with --force)", folder.display())
        })?;
    }
    Ok(())
}

fn read_metadata(reader: &TokenTableReader, folder: &Path) -> Result<Option<RewardMetadata>> {
    RewardMetadata::from_kv(reader.metadata()).with_context(|| {
        format!("{}: the rto.* metadata of tokens.parquet is damaged; rewrite the table", folder.display())
    })
}

/// Reads the tables once, streaming: the scales need every token, the display only a few.
pub fn select(args: &ShowArgs) -> Result<Selection> {
    verify_store_folder(&args.folder)?;
    let folders = table_folders(&args.folder)?;
    let keep = if args.html.is_some() { args.max_samples } else { 1 };
    let (mut samples, mut inputs, mut reward) = (Vec::new(), ScaleInputs::default(), None);
    let (mut table_samples, mut table_tokens) = (0u64, 0u64);
    for (i, folder) in folders.iter().enumerate() {
        let reader = TokenTableReader::open(folder)?;
        if i == 0 {
            reward = read_metadata(&reader, folder)?;
        }
        for item in reader {
            let (sample, tokens) = item?;
            table_samples += 1;
            table_tokens += tokens.len() as u64;
            inputs.add(&sample, &tokens);
            let wanted = match args.sample {
                Some(id) => sample.sample_id == id,
                None => samples.len() < keep,
            };
            if wanted {
                samples.push((sample, tokens));
            }
        }
    }
    if let (Some(id), true) = (args.sample, samples.is_empty()) {
        bail!("{}: no sample_id {id} among its {table_samples} samples", args.folder.display());
    }
    if samples.is_empty() {
        bail!("{}: the table has no samples", args.folder.display());
    }
    // One table's iteration does not describe several.
    if let (Some(meta), true) = (reward.as_mut(), folders.len() > 1) {
        meta.iteration = None;
    }
    let scales = inputs.finish(reward.as_ref().map(|m| m.weights.clip));
    let column = scales.resolve(args.color_by, &args.folder.display().to_string())?;
    Ok(Selection { samples, scales, column, reward, table_samples, table_tokens, source: args.folder.clone() })
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

/// A number for display, to 5 decimals; a value that rounds to 0 is `+0.00000`, not the
/// `-0.00000` of float noise (e.g. a gold score less its credits summed in f32).
pub fn fmt_value(value: f32) -> String {
    let value = if value.abs() < 5e-6 { 0.0 } else { value };
    format!("{value:+.5}")
}

/// [`fmt_value`]; `-` for a null column.
pub fn fmt_opt(value: Option<f32>) -> String {
    value.map_or_else(|| "-".to_string(), fmt_value)
}

/// The part of the gold score that sits on no token (gold_score − Σ gold_credit: the judge's
/// length term), when the sample has both.
pub fn gold_rest(sample: &SampleRecord, tokens: &[TokenRecord]) -> Option<f32> {
    let credit: Option<f64> = tokens.iter().map(|t| t.gold_credit.map(f64::from)).sum();
    Some((sample.gold_score? - credit?) as f32)
}
