//! The pipeline stages of the RTO toolkit. Each stage module holds its settings (clap + serde,
//! so they come from flags or YAML and enter the cache key) and a `run` function; the binaries
//! in `rto-cli` only parse flags and call them.
//!
//! Shared machinery: [`encode`] (records → token ids, truncation rules), [`optim`] (AdamW with
//! saveable state), [`checkpoint`] (resumable checkpoints, metrics log), [`trainer`] (the
//! supervised loop), [`stage`] (cache frame), [`progress`], [`compat`] (the one check that
//! models combined by a stage belong together), [`token_scoring`] (the token reward: its
//! settings, forwards, table rows and table metadata, shared by annotate and ppo), [`metrics`]
//! (TensorBoard event files, metrics.png and `show` of the training stages).

pub mod annotate;
pub mod checkpoint;
pub mod compat;
pub mod dist;
pub mod dpo;
pub mod encode;
pub mod evaluate;
pub mod generation;
pub mod inspect;
pub mod metrics;
pub mod optim;
pub mod pairs;
pub mod ppo;
pub mod preference;
pub mod progress;
pub mod rm;
pub mod rollout;
pub mod sft;
pub mod stage;
pub mod token_scoring;
pub mod trainer;
