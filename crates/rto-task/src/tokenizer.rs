//! The task tokenizer: one token per vocabulary word (WordLevel) after splitting on
//! whitespace, no normalizer, no decoder. Without a decoder both the Rust and the Python
//! `tokenizers` join tokens with a single space, so `decode(encode(x)) == x` for task text
//! (single-spaced lowercase words), and transformers sees the very same file.
//!
//! Chat format: `<s><user> {prompt} <assistant>` then the response words and `</s>`. The
//! role markers are special added tokens, so they are matched before pre-tokenization and
//! dropped by `decode(.., skip_special_tokens=true)`.

use crate::vocab::{vocab, SPECIAL_TOKENS};
use anyhow::{anyhow, Result};
use serde::Serialize;
use serde_json::{json, Map, Value};

pub const BOS: &str = "<s>";
pub const EOS: &str = "</s>";
pub const PAD: &str = "<pad>";
pub const UNK: &str = "<unk>";

/// The chat template in `tokenizer_config.json`. One line and no whitespace control, so
/// jinja2 (transformers, with trim_blocks/lstrip_blocks) and minijinja render it identically.
pub const CHAT_TEMPLATE: &str = "{{ bos_token }}{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} {% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}";

/// What `CHAT_TEMPLATE` renders for one user turn with `add_generation_prompt=True`
/// (a test checks this against minijinja and transformers).
pub fn chat_prompt(user_text: &str) -> String {
    format!("{BOS}<user> {user_text} <assistant>")
}

/// The tokenizer as `tokenizer.json` content: a JSON value in the `tokenizers` file format.
fn tokenizer_json() -> Value {
    let words = &vocab().words;
    let vocab_map: Map<String, Value> = words.iter().enumerate().map(|(id, w)| (w.to_string(), json!(id))).collect();
    let added: Vec<Value> = SPECIAL_TOKENS
        .iter()
        .enumerate()
        .map(|(id, t)| {
            json!({"id": id, "content": t, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab_map, "unk_token": UNK},
    })
}

/// The task tokenizer (see the module docs).
pub fn build_tokenizer() -> tokenizers::Tokenizer {
    let text = tokenizer_json().to_string();
    // The JSON is built from static tables; failing to parse it is a bug, not an input error.
    text.parse::<tokenizers::Tokenizer>().expect("the task tokenizer JSON is valid")
}

/// `tokenizer.json` bytes as the `tokenizers` crate serializes them (vocab in id order).
pub fn tokenizer_file() -> Result<String> {
    build_tokenizer().to_string(true).map_err(|e| anyhow!("serializing the task tokenizer: {e}"))
}

/// `tokenizer_config.json` for transformers: which tokens are BOS/EOS/PAD, the chat
/// template, and no automatic BOS/EOS or space clean-up (the template adds BOS itself and
/// clean-up would glue words to punctuation-like tokens).
#[derive(Serialize)]
pub struct TokenizerConfig {
    pub tokenizer_class: &'static str,
    pub bos_token: &'static str,
    pub eos_token: &'static str,
    pub pad_token: &'static str,
    pub unk_token: &'static str,
    pub add_bos_token: bool,
    pub add_eos_token: bool,
    pub clean_up_tokenization_spaces: bool,
    pub model_max_length: usize,
    pub chat_template: &'static str,
}

pub fn tokenizer_config() -> TokenizerConfig {
    TokenizerConfig {
        tokenizer_class: "PreTrainedTokenizerFast",
        bos_token: BOS,
        eos_token: EOS,
        pad_token: PAD,
        unk_token: UNK,
        add_bos_token: false,
        add_eos_token: false,
        clean_up_tokenization_spaces: false,
        // Prompts ≤ 24 tokens + responses ≤ 48 + EOS fit easily.
        model_max_length: 128,
        chat_template: CHAT_TEMPLATE,
    }
}
