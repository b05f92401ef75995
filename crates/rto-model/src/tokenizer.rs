//! Text ↔ token ids from a model folder's `tokenizer.json`, and chat templates from its
//! `tokenizer_config.json`, rendered with minijinja the way transformers renders them.

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// One chat turn as the template sees it (`{role, content}` as in Hugging Face message lists).
/// Borrowed, so callers render their own message types without copying them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ChatTurn<'a> {
    pub role: &'a str,
    pub content: &'a str,
}

pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    chat_template: Option<String>,
    bos_token: Option<String>,
    eos_token: Option<String>,
    pub eos_id: Option<i64>,
    pub pad_id: i64,
    path: PathBuf,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer").field("path", &self.path).field("eos_id", &self.eos_id).finish()
    }
}

/// A special token in tokenizer_config.json is either a string or an AddedToken object.
fn token_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

impl TextTokenizer {
    /// Loads `tokenizer.json` and, when present, `tokenizer_config.json` / `chat_template.jinja`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| anyhow!("loading tokenizer {}: {e}", path.display()))?;
        let config_path = dir.join("tokenizer_config.json");
        let config: Value = if config_path.exists() {
            let text =
                std::fs::read_to_string(&config_path).with_context(|| format!("reading {}", config_path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("parsing {}", config_path.display()))?
        } else {
            Value::Null
        };
        let mut chat_template = match config.get("chat_template") {
            Some(Value::String(t)) => Some(t.clone()),
            Some(Value::Array(named)) => named
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
            _ => None,
        };
        let jinja = dir.join("chat_template.jinja");
        if chat_template.is_none() && jinja.exists() {
            chat_template =
                Some(std::fs::read_to_string(&jinja).with_context(|| format!("reading {}", jinja.display()))?);
        }
        let bos_token = token_text(config.get("bos_token"));
        let eos_token = token_text(config.get("eos_token"));
        let id_of = |t: &Option<String>| t.as_deref().and_then(|t| inner.token_to_id(t)).map(i64::from);
        let eos_id = id_of(&eos_token);
        let pad_id = id_of(&token_text(config.get("pad_token"))).or(eos_id).unwrap_or(0);
        Ok(Self { inner, chat_template, bos_token, eos_token, eos_id, pad_id, path })
    }

    /// Number of ids the tokenizer can produce (added tokens included).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Fails when the tokenizer can emit ids the model has no embedding for.
    pub fn check_fits(&self, model_vocab: i64, model_dir: &Path) -> Result<()> {
        self.check_fits_config(model_vocab, &model_dir.join("config.json"))
    }

    /// [`Self::check_fits`] naming the model's config file itself (e.g. an `--init-config`).
    pub fn check_fits_config(&self, model_vocab: i64, config: &Path) -> Result<()> {
        let max_id = self.inner.get_vocab(true).values().copied().max().unwrap_or(0) as i64;
        if max_id >= model_vocab {
            bail!(
                "tokenizer {} has ids up to {max_id}, but model {} has vocab_size {model_vocab}: they do not belong together (use the model's own tokenizer, or a config with vocab_size > {max_id})",
                self.path.display(),
                config.display()
            );
        }
        Ok(())
    }

    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<i64>> {
        let encoding = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| anyhow!("tokenizing with {}: {e}", self.path.display()))?;
        Ok(encoding.get_ids().iter().map(|&id| i64::from(id)).collect())
    }

    pub fn decode(&self, ids: &[i64], skip_special_tokens: bool) -> Result<String> {
        let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        self.inner.decode(&ids, skip_special_tokens).map_err(|e| anyhow!("decoding: {e}"))
    }

    /// The text one token stands for, for token-by-token display.
    pub fn token_piece(&self, id: i64) -> String {
        self.inner.decode(&[id as u32], false).unwrap_or_default()
    }

    pub fn has_chat_template(&self) -> bool {
        self.chat_template.is_some()
    }

    /// Renders messages through the folder's chat template, as transformers'
    /// `apply_chat_template(messages, tokenize=False, add_generation_prompt=...)`.
    pub fn apply_chat_template(&self, messages: &[ChatTurn<'_>], add_generation_prompt: bool) -> Result<String> {
        let template =
            self.chat_template.as_deref().with_context(|| format!("{}: no chat_template", self.path.display()))?;
        let mut env = minijinja::Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |message: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, message))
        });
        env.add_template("chat", template).context("parsing chat_template")?;
        let rendered = env
            .get_template("chat")?
            .render(minijinja::context! {
                messages => minijinja::Value::from(minijinja::value::Serde(messages)),
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos_token.clone().unwrap_or_default(),
                eos_token => self.eos_token.clone().unwrap_or_default(),
            })
            .context("rendering chat_template")?;
        Ok(rendered)
    }

    /// Prompt token ids: the chat template when there is one (the template adds BOS itself),
    /// the raw text with the tokenizer's own special tokens otherwise.
    pub fn encode_prompt(&self, messages: &[ChatTurn<'_>]) -> Result<Vec<i64>> {
        if self.has_chat_template() {
            self.encode(&self.apply_chat_template(messages, true)?, false)
        } else {
            let text: Vec<&str> = messages.iter().map(|m| m.content).collect();
            self.encode(&text.join("\n"), true)
        }
    }
}
