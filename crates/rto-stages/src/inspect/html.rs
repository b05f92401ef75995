//! `show --html`: one self-contained page (inline CSS and JS, no external assets, so it can be
//! mailed or opened offline): every token a coloured span whose tooltip (`title`) carries all
//! its values, per-sample totals, a legend, and buttons that sort the samples by return.

use super::{colour, fmt_opt, text_is_light, Selection};
use anyhow::{Context, Result};
use rto_data::token_table::{SampleRecord, TokenRecord};
use std::fmt::Write;
use std::path::Path;

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:1.5em 2em;color:#222;background:#f6f6f4}
h1{font-size:1.25em;margin:0 0 .3em}
.meta{font-size:.8em;color:#555;margin:.2em 0}
.meta code{background:#eee;padding:0 .3em;border-radius:3px}
.legend{display:flex;align-items:center;gap:.6em;font-size:.85em;margin:.8em 0}
.bar{width:280px;height:14px;border:1px solid #bbb;background:linear-gradient(to right,rgb(215,48,39),#fff,rgb(26,150,65))}
.controls{font-size:.85em;margin:.6em 0}
.controls button{margin-right:.4em;padding:.2em .7em;cursor:pointer}
.sample{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6em .9em;margin:.8em 0}
.head{font-size:.85em;margin-bottom:.35em}
.head .id{font-weight:600}
.head .side{padding:0 .4em;border-radius:3px;background:#e8e8f4}
.head .v{margin-left:1em;font-variant-numeric:tabular-nums}
.prompt{font-size:.8em;color:#777;white-space:pre-wrap;margin:.2em 0 .5em;border-left:3px solid #ddd;padding-left:.6em}
.resp{font-family:ui-monospace,'DejaVu Sans Mono',monospace;font-size:.95em;white-space:pre-wrap;line-height:1.8;word-break:break-word}
.t{border-radius:3px;padding:1px 0;border-right:1px solid rgba(255,255,255,.85)}
.t:hover{outline:2px solid #222}
";

/// Sorts the sample cards by a numeric data attribute; file order is `data-order`.
const SCRIPT: &str = "function sortSamples(key,dir){var box=document.getElementById('samples');
var cards=Array.prototype.slice.call(box.children);
cards.sort(function(a,b){return dir*(Number(a.dataset[key])-Number(b.dataset[key]));});
cards.forEach(function(c){box.appendChild(c);});}";

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
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style><script>{SCRIPT}</script></head><body>\n",
        escape(&title)
    );
    let _ = writeln!(out, "<h1>{}</h1>", escape(&title));
    out.push_str(&summary(selection));
    out.push_str("<div id=\"samples\">\n");
    for (order, (sample, tokens)) in selection.samples.iter().enumerate() {
        out.push_str(&card(order, sample, tokens, selection));
    }
    out.push_str("</div></body></html>\n");
    out
}

/// Table facts, the metadata that says what priced the tokens, the legend and sort buttons.
fn summary(selection: &Selection) -> String {
    let mut out = format!(
        "<p class=\"meta\">{} of {} samples shown. Hover a token for its values.</p>\n<p class=\"meta\">",
        selection.samples.len(),
        selection.table_samples
    );
    for (label, value) in selection.metadata_entries() {
        let _ = write!(out, "{} <code>{}</code> ", escape(&label), escape(&value));
    }
    let scale = selection.scale;
    let _ = write!(
        out,
        "</p>\n<div class=\"legend\"><span>{} colour</span><span>{:+.4}</span><span class=\"bar\"></span><span>{:+.4}</span><span>(white = 0; scaled by the table's max |{}|)</span></div>\n",
        selection.column.name(),
        -scale,
        scale,
        selection.column.name()
    );
    out.push_str(
        "<div class=\"controls\">Sort: <button onclick=\"sortSamples('order',1)\">file order</button>\
<button onclick=\"sortSamples('ret',-1)\">return ↓</button><button onclick=\"sortSamples('ret',1)\">return ↑</button>\
<button onclick=\"sortSamples('dpo',-1)\">dpo_return ↓</button><button onclick=\"sortSamples('dpo',1)\">dpo_return ↑</button></div>\n",
    );
    out
}

fn card(order: usize, sample: &SampleRecord, tokens: &[TokenRecord], selection: &Selection) -> String {
    let mut out = format!(
        "<div class=\"sample\" data-order=\"{order}\" data-ret=\"{}\" data-dpo=\"{}\">\n<div class=\"head\"><span class=\"id\">sample {}</span> ",
        sample.ret,
        sample.dpo_return.unwrap_or(0.0),
        sample.sample_id
    );
    if let Some(side) = &sample.side {
        let _ = write!(out, "<span class=\"side\">{}</span> ", escape(side));
    }
    let mut values = vec![("tokens", sample.n_tokens.to_string()), ("return", format!("{:+.5}", sample.ret))];
    values.push(("dpo_return", fmt_opt(sample.dpo_return)));
    values.push(("sentence_reward", fmt_opt(sample.sentence_reward)));
    if let Some(gold) = sample.gold_score {
        values.push(("gold_score", format!("{gold:.4}")));
    }
    for (name, value) in values {
        let _ = write!(out, "<span class=\"v\">{name} <b>{}</b></span>", escape(&value));
    }
    let _ = write!(out, "</div>\n<div class=\"prompt\">{}</div>\n<div class=\"resp\">", escape(&sample.prompt));
    for token in tokens {
        out.push_str(&span(token, selection));
    }
    out.push_str("</div></div>\n");
    out
}

/// One token: background from its value, every column in the tooltip.
fn span(token: &TokenRecord, selection: &Selection) -> String {
    let value = selection.column.of(token);
    let (r, g, b) = colour(value, selection.scale);
    let fg = if text_is_light(value, selection.scale) { ";color:#fff" } else { "" };
    let tip = [
        format!("position {} · token {:?} (id {})", token.position, token.token, token.token_id),
        format!("reward {:+.5}", token.reward),
        format!("dpo_reward {}", fmt_opt(token.dpo_reward)),
        format!("kl_penalty {}", fmt_opt(token.kl_penalty)),
        format!("sentence_reward {}", fmt_opt(token.sentence_reward)),
        format!("logp_ref {}", fmt_opt(token.logp_ref)),
        format!("logp_dpo {}", fmt_opt(token.logp_dpo)),
        format!("logp_policy {}", fmt_opt(token.logp_policy)),
    ]
    .map(|line| escape(&line))
    .join("&#10;");
    // A newline token would be an invisible line break and an empty piece no span at all.
    let text = match token.token.as_str() {
        "" => "∅".to_string(),
        t => escape(t).replace('\n', "↵\n"),
    };
    format!("<span class=\"t\" style=\"background:rgb({r},{g},{b}){fg}\" title=\"{tip}\">{text}</span>")
}
