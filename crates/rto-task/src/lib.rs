//! A synthetic instruction task with a gold judge, for replicating RTO ("DPO Meets PPO",
//! arXiv 2404.18922) at machine scale: the judge replaces GPT-4, preference pairs are SFT
//! samples labelled by a Bradley–Terry draw on the gold score (like UltraFeedback), and
//! evaluation is the win rate against the SFT model on held-out prompts (like AlpacaEval).
//!
//! - [`vocab`]: the closed ~250-word vocabulary and word classes;
//! - [`prompt`]: prompt constraints ([`Spec`]), their grammar and parser;
//! - [`judge`]: [`gold_score`] and its [`Breakdown`];
//! - [`tokenizer`]: the WordLevel tokenizer, `tokenizer_config.json` and chat template;
//! - [`generator`]: the noisy demonstrator and [`generate_dataset`] (byte-reproducible);
//! - [`pairs`]: Bradley–Terry labelling and [`win_rate`].
//!
//! `data/README.md` explains the design.

pub mod generator;
pub mod judge;
pub mod pairs;
pub mod prompt;
pub mod tokenizer;
pub mod vocab;

pub use generator::{
    demonstration, generate_dataset, generate_dataset_with, generate_sft, PromptRow, ScoreStats, SftRow, Sizes,
    DEFAULT_SEED,
};
pub use judge::{gold_score, score_breakdown, token_credit, Breakdown, WordScore};
pub use pairs::{
    label_pair, label_samples, preference_probability, win_rate, write_pairs_jsonl, LabelStats, LabeledPair,
    BT_TEMPERATURE,
};
pub use prompt::{Avoid, Spec};
pub use tokenizer::{build_tokenizer, chat_prompt, tokenizer_config, CHAT_TEMPLATE};
