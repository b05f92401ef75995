//! `show --html`: one self-contained page (inline CSS and JS, no external assets, so it can be
//! mailed or opened offline). The samples travel as compact JSON in the page and a script
//! draws one page of them at a time, so a page of thousands of samples stays responsive; the
//! filters (side, text, iteration, return range), sorting, the pair view and the colour-by
//! switch all work on that data.
//!
//! What the script is handed is decided here, so the page applies the rules of the other
//! modules rather than repeating them: each token's piece already split by [`Piece`], each
//! colour column's values and scale ([`super::scale`]), and a palette of [`colour`] samples the
//! script only indexes into.

use super::piece::Piece;
use super::scale::{Scale, ValueColumn};
use super::{colour, gold_rest, text_is_light, Selection};
use anyhow::{Context, Result};
use rto_data::token_table::{SampleRecord, TokenRecord};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

const TEMPLATE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("page.js");
/// Palette entries on each side of 0: 1% steps of the scale.
pub const PALETTE_STEPS: usize = 100;

/// Escapes text for element content and double-quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    out
}

/// Writes the page for `selection` to `path`.
pub fn write(path: &Path, selection: &Selection) -> Result<()> {
    std::fs::write(path, page(selection)).with_context(|| format!("cannot write {}", path.display()))
}

/// The whole page as a string.
pub fn page(selection: &Selection) -> String {
    let title = format!("Token rewards — {}", selection.source.display());
    // `<` is escaped inside the JSON so no string in it can close the script element.
    let json =
        serde_json::to_string(&page_data(selection, &title)).expect("page data serializes").replace('<', "\\u003c");
    let (head, tail) = TEMPLATE.split_once("{{DATA}}").expect("page.html has a {{DATA}} slot");
    let head = head.replace("{{TITLE}}", &escape(&title));
    let tail = tail.replace("{{SCRIPT}}", SCRIPT);
    format!("{head}{json}{tail}")
}

/// A value rounded to 5 significant digits: the display precision, and compact JSON.
#[derive(Clone, Copy)]
struct Num(f32);

impl Serialize for Num {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let rounded: f64 = format!("{:.4e}", self.0).parse().unwrap_or(0.0);
        s.serialize_f64(rounded)
    }
}

#[derive(Serialize)]
struct PageData<'a> {
    title: &'a str,
    meta: Vec<(String, String)>,
    table_samples: u64,
    table_tokens: u64,
    /// `[colour, white text]` from full red (-scale) through white (0) to full green (+scale).
    palette: Vec<(String, bool)>,
    columns: Vec<ColumnInfo>,
    initial: &'static str,
    /// Scale of the sentence-reward badge.
    badge: Option<f32>,
    /// The token tooltip's rows: (label, "c" for a colour column or "v" for a raw one, key).
    hover: Vec<(&'static str, &'static str, &'static str)>,
    prompts: Vec<&'a str>,
    samples: Vec<SampleData<'a>>,
}

#[derive(Serialize)]
struct ColumnInfo {
    name: &'static str,
    label: &'static str,
    scale: f32,
    rule: String,
}

#[derive(Serialize)]
struct SampleData<'a> {
    id: u64,
    /// Index into `prompts` (the two sides of a pair share one).
    p: usize,
    side: Option<&'a str>,
    it: Option<u32>,
    resp: &'a str,
    ret: Num,
    dret: Option<Num>,
    sr: Option<Num>,
    gold: Option<f64>,
    /// gold_score − Σ gold_credit.
    grest: Option<Num>,
    /// Each token's piece text ([`Piece::text`]).
    tok: Vec<String>,
    /// One digit per token: 1 = starts with a space, 2 = breaks the line after, 3 = both.
    f: String,
    tid: Vec<u32>,
    /// The values of every colour column, by column name.
    c: BTreeMap<&'static str, Vec<Option<Num>>>,
    /// The raw columns the tooltip shows that are not colour columns, by name.
    v: BTreeMap<&'static str, Vec<Option<Num>>>,
}

/// A raw token column: its name and how to read it.
type RawColumn = (&'static str, fn(&TokenRecord) -> Option<f32>);

/// Raw token columns the tooltip shows besides the colour columns.
const RAW: [RawColumn; 5] = [
    ("reward", |t| Some(t.reward)),
    ("sentence_reward", |t| t.sentence_reward),
    ("logp_ref", |t| t.logp_ref),
    ("logp_dpo", |t| t.logp_dpo),
    ("logp_policy", |t| t.logp_policy),
];

fn page_data<'a>(selection: &'a Selection, title: &'a str) -> PageData<'a> {
    let columns: Vec<ColumnInfo> = selection.scales.columns.iter().map(|(c, s)| column_info(*c, s)).collect();
    let colour_columns: Vec<ValueColumn> = selection.scales.available();
    let tokens = || selection.samples.iter().flat_map(|(_, t)| t);
    let raw: Vec<RawColumn> = RAW.into_iter().filter(|(_, get)| tokens().any(|t| get(t).is_some())).collect();
    let mut prompt_index: HashMap<&str, usize> = HashMap::new();
    let mut prompts = Vec::new();
    let samples = selection
        .samples
        .iter()
        .map(|(sample, tokens)| {
            let p = *prompt_index.entry(sample.prompt.as_str()).or_insert_with(|| {
                prompts.push(sample.prompt.as_str());
                prompts.len() - 1
            });
            sample_data(sample, tokens, p, &colour_columns, &raw)
        })
        .collect();
    PageData {
        title,
        meta: selection.metadata_entries(),
        table_samples: selection.table_samples,
        table_tokens: selection.table_tokens,
        palette: palette(),
        columns,
        initial: selection.column.name(),
        badge: selection.scales.sentence.map(|s| s.value),
        hover: hover_rows(&colour_columns, &raw),
        prompts,
        samples,
    }
}

fn column_info(column: ValueColumn, scale: &Scale) -> ColumnInfo {
    ColumnInfo { name: column.name(), label: column.label(), scale: scale.value, rule: scale.describe() }
}

/// The palette: `colour` at every step from -1 to +1 of a unit scale.
pub fn palette() -> Vec<(String, bool)> {
    let n = PALETTE_STEPS as f32;
    (0..=2 * PALETTE_STEPS)
        .map(|i| {
            let value = (i as f32 - n) / n;
            let (r, g, b) = colour(value, 1.0);
            (format!("#{r:02x}{g:02x}{b:02x}"), text_is_light(value, 1.0))
        })
        .collect()
}

/// The tooltip rows in reading order: the total reward and its terms, the log-probs, then
/// what is derived from them.
fn hover_rows(colour_columns: &[ValueColumn], raw: &[RawColumn]) -> Vec<(&'static str, &'static str, &'static str)> {
    let has_raw = |name: &str| raw.iter().any(|(n, _)| *n == name);
    let order: [(&str, &str, &str); 11] = [
        ("reward", "v", "reward"),
        ("dpo_reward", "c", "dpo_reward"),
        ("kl_penalty", "c", "kl_penalty"),
        ("sentence_reward", "v", "sentence_reward"),
        ("logp_ref", "v", "logp_ref"),
        ("logp_dpo", "v", "logp_dpo"),
        ("logp_policy", "v", "logp_policy"),
        ("logp_policy − logp_ref", "c", "policy_log_ratio"),
        ("gold_credit", "c", "gold_credit"),
        ("advantage", "c", "advantage"),
        ("reward − sentence_reward", "c", "reward"),
    ];
    order
        .into_iter()
        .filter(|(_, kind, key)| match *kind {
            "v" => has_raw(key),
            _ => colour_columns.iter().any(|c| c.name() == *key),
        })
        .collect()
}

fn sample_data<'a>(
    sample: &'a SampleRecord,
    tokens: &[TokenRecord],
    p: usize,
    colour_columns: &[ValueColumn],
    raw: &[RawColumn],
) -> SampleData<'a> {
    let pieces: Vec<Piece> = tokens.iter().map(|t| Piece::of(&t.token)).collect();
    let flags = pieces.iter().map(|p| char::from(b'0' + u8::from(p.space) + 2 * u8::from(p.newline))).collect();
    let values = |get: &dyn Fn(&TokenRecord) -> Option<f32>| tokens.iter().map(|t| get(t).map(Num)).collect();
    SampleData {
        id: sample.sample_id,
        p,
        side: sample.side.as_deref(),
        it: sample.iteration,
        resp: &sample.response,
        ret: Num(sample.ret),
        dret: sample.dpo_return.map(Num),
        sr: sample.sentence_reward.map(Num),
        gold: sample.gold_score,
        grest: gold_rest(sample, tokens).map(Num),
        f: flags,
        tok: pieces.into_iter().map(|p| p.text).collect(),
        tid: tokens.iter().map(|t| t.token_id).collect(),
        c: colour_columns.iter().map(|c| (c.name(), values(&|t| c.of(t)))).collect(),
        v: raw.iter().map(|(name, get)| (*name, values(get))).collect(),
    }
}
