//! Terminal output of `show`: ANSI 24-bit backgrounds for a terminal, aligned plain text with
//! every value for pipes and files (where escape codes would be noise).

use super::{colour, fmt_opt, text_is_light, Selection};
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
    format!(
        "sample {}{side}  prompt_id {}  tokens {}  return {:+.5}  dpo_return {}  sentence_reward {}",
        sample.sample_id,
        sample.prompt_id,
        sample.n_tokens,
        sample.ret,
        fmt_opt(sample.dpo_return),
        fmt_opt(sample.sentence_reward)
    )
}

fn paint(out: &mut String, text: &str, value: f32, scale: f32) {
    let (r, g, b) = colour(value, scale);
    let fg = if text_is_light(value, scale) { "255;255;255" } else { "0;0;0" };
    // Colour each line separately so a newline inside a token does not paint the line's rest.
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push_str("↵\n");
        }
        if !line.is_empty() {
            let _ = write!(out, "\x1b[48;2;{r};{g};{b}m\x1b[38;2;{fg}m{line}{RESET}");
        }
    }
}

/// Header, dim prompt, the response token by token on coloured backgrounds, and a legend.
pub fn coloured(sample: &SampleRecord, tokens: &[TokenRecord], selection: &Selection) -> String {
    let scale = selection.scale;
    let mut out = format!("{BOLD}{}{RESET}\n{DIM}{}{RESET}\n", header(sample), sanitize(&sample.prompt));
    for token in tokens {
        paint(&mut out, &sanitize(&token.token), selection.column.of(token), scale);
    }
    out.push_str("\n\n");
    let _ = write!(out, "{DIM}{} scale:{RESET} ", selection.column.name());
    for step in [-1.0f32, -0.5, 0.0, 0.5, 1.0] {
        paint(&mut out, &format!(" {:+.4} ", step * scale), step * scale, scale);
    }
    out.push_str("\n\n");
    out
}

/// Everything as aligned text: header, prompt, response, then one line per token.
pub fn plain(sample: &SampleRecord, tokens: &[TokenRecord]) -> String {
    let mut out = format!("{}\nprompt: {:?}\nresponse: {:?}\n", header(sample), sample.prompt, sample.response);
    let _ = writeln!(
        out,
        "{:>5}  {:<18} {:>8}  {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "pos", "token", "id", "reward", "dpo_reward", "kl_penalty", "sent_rew", "logp_ref", "logp_dpo", "logp_pol"
    );
    for t in tokens {
        let _ = writeln!(
            out,
            "{:>5}  {:<18} {:>8}  {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            t.position,
            format!("{:?}", t.token),
            t.token_id,
            format!("{:+.5}", t.reward),
            fmt_opt(t.dpo_reward),
            fmt_opt(t.kl_penalty),
            fmt_opt(t.sentence_reward),
            fmt_opt(t.logp_ref),
            fmt_opt(t.logp_dpo),
            fmt_opt(t.logp_policy)
        );
    }
    out.push('\n');
    out
}
