//! Terminal output of `show`: ANSI 24-bit backgrounds for a terminal (the page's colouring rule
//! and scale, tokens between `│` boundaries), aligned plain text with every value for pipes
//! and files (where escape codes would be noise).

use super::piece::Piece;
use super::scale::ValueColumn;
use super::{colour, fmt_opt, fmt_value, gold_rest, text_is_light, Selection};
use rto_data::token_table::{SampleRecord, TokenRecord};
use std::fmt::Write;

const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";

/// Control characters from a token or prompt could move the cursor or recolour the terminal;
/// show them as escapes instead (newlines and tabs stay, they are layout).
fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() && c != '\n' && c != '\t' { c.escape_unicode().to_string() } else { c.to_string() })
        .collect()
}

/// One line saying what priced the table's tokens (stage, mode, weights, content keys), dim
/// on a terminal; empty for a table without that metadata.
pub fn table_line(selection: &Selection, coloured: bool) -> String {
    let entries: Vec<String> =
        selection.metadata_entries().into_iter().map(|(label, value)| format!("{label} {value}")).collect();
    if entries.is_empty() {
        return String::new();
    }
    let line = sanitize(&entries.join("  "));
    if coloured {
        format!("{DIM}{line}{RESET}\n\n")
    } else {
        format!("{line}\n\n")
    }
}

fn header(sample: &SampleRecord) -> String {
    let side = sample.side.as_deref().map(|s| format!(" ({s})")).unwrap_or_default();
    let iteration = sample.iteration.map(|i| format!("  iteration {i}")).unwrap_or_default();
    let gold = sample.gold_score.map(|g| format!("  gold_score {g:.2}")).unwrap_or_default();
    format!(
        "sample {}{side}{iteration}  prompt_id {}  tokens {}  return {}  dpo_return {}  sentence_reward {}{gold}",
        sample.sample_id,
        sample.prompt_id,
        sample.n_tokens,
        fmt_value(sample.ret),
        fmt_opt(sample.dpo_return),
        fmt_opt(sample.sentence_reward)
    )
}

fn paint(out: &mut String, text: &str, value: f32, scale: f32) {
    let (r, g, b) = colour(value, scale);
    let fg = if text_is_light(value, scale) { "255;255;255" } else { "0;0;0" };
    let _ = write!(out, "\x1b[48;2;{r};{g};{b}m\x1b[38;2;{fg}m{text}{RESET}");
}

/// Header, dim prompt, the response token by token on coloured backgrounds between dim `│`
/// boundaries, the sentence-reward badge, and a legend.
pub fn coloured(sample: &SampleRecord, tokens: &[TokenRecord], selection: &Selection) -> String {
    let scale = selection.scale();
    let mut out = format!("{BOLD}{}{RESET}\n{DIM}{}{RESET}\n", header(sample), sanitize(&sample.prompt));
    for (i, token) in tokens.iter().enumerate() {
        if i > 0 {
            out.push_str(&format!("{DIM}│{RESET}"));
        }
        let piece = Piece::of(&token.token);
        paint(&mut out, &piece.shown(), selection.column.of(token).unwrap_or(0.0), scale);
        if piece.newline {
            out.push('\n');
        }
    }
    for (label, value, badge_scale) in badges(sample, tokens, selection) {
        out.push_str("  ");
        paint(&mut out, &format!(" {label} {} ", fmt_value(value)), value, badge_scale);
    }
    let _ = write!(out, "\n\n{DIM}{}: {}{RESET}\n", selection.column.label(), legend_rule(selection));
    for step in [-1.0f32, -0.5, 0.0, 0.5, 1.0] {
        paint(&mut out, &format!(" {:+.4} ", step * scale), step * scale, scale);
    }
    out.push_str("\n\n");
    out
}

fn legend_rule(selection: &Selection) -> String {
    selection.scales.columns.get(&selection.column).map_or_else(String::new, |s| s.describe())
}

/// The per-sample values shown apart from the tokens, as (label, value, scale): the sentence
/// reward (on its own scale), and under `gold_credit` the gold score's part that sits on no
/// token (gold_score − Σ gold_credit: the length term), on the tokens' scale.
pub fn badges(sample: &SampleRecord, tokens: &[TokenRecord], selection: &Selection) -> Vec<(&'static str, f32, f32)> {
    let mut out = Vec::new();
    if let (Some(value), Some(scale)) = (sample.sentence_reward, selection.scales.sentence) {
        out.push(("sentence_reward", value, scale.value));
    }
    if selection.column == ValueColumn::GoldCredit {
        if let Some(rest) = gold_rest(sample, tokens) {
            out.push(("gold not on tokens", rest, selection.scale()));
        }
    }
    out
}

/// Everything as aligned text: header, prompt, response, then one line per token.
pub fn plain(sample: &SampleRecord, tokens: &[TokenRecord]) -> String {
    let mut out = format!("{}\nprompt: {:?}\nresponse: {:?}\n", header(sample), sample.prompt, sample.response);
    let _ = writeln!(
        out,
        "{:>5}  {:<18} {:>8}  {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "pos",
        "token",
        "id",
        "reward",
        "dpo_reward",
        "kl_penalty",
        "sent_rew",
        "logp_ref",
        "logp_dpo",
        "logp_pol",
        "gold_cred"
    );
    for t in tokens {
        let _ = writeln!(
            out,
            "{:>5}  {:<18} {:>8}  {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            t.position,
            format!("{:?}", t.token),
            t.token_id,
            fmt_value(t.reward),
            fmt_opt(t.dpo_reward),
            fmt_opt(t.kl_penalty),
            fmt_opt(t.sentence_reward),
            fmt_opt(t.logp_ref),
            fmt_opt(t.logp_dpo),
            fmt_opt(t.logp_policy),
            fmt_opt(t.gold_credit)
        );
    }
    out.push('\n');
    out
}
