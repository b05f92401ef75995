//! The Llama-family model core: Hugging Face checkpoints in and out, batched forwards with
//! padding, per-token log-probabilities, KV-cache sampling, tokenizer and chat templates.
//!
//! Everything that touches libtorch for a *model* lives here; the algorithms (losses, rewards,
//! PPO) live in `rto-algo` and use only the functions exported below.

pub mod adapter;
pub mod allocator;
pub mod attention;
pub mod batch;
pub mod checkpointing;
pub mod config;
pub mod cuda_library;
pub mod cuda_memory;
pub mod decode_graph;
pub mod device;
pub mod grad_mode;
pub mod kv_cache;
pub mod llama;
pub mod lora;
pub mod memory;
pub mod model;
pub mod packing;
pub mod precision;
pub mod sampling;
pub mod tokenizer;
pub mod weights;

pub use batch::{response_logprobs, response_values, sequence_scores, SequenceBatch, TokenOutputs};
pub use config::ModelConfig;
pub use device::{parse_device, parse_kind};
pub use lora::LoraConfig;
pub use model::{CausalLm, Head};
pub use precision::Precision;
pub use sampling::{generate, Generation, SamplingConfig};
pub use tokenizer::{ChatTurn, TextTokenizer};
