//! The integration tests of rto-model: one test binary (one link, one process) instead of one per file.

mod attention;
mod checkpointing;
mod common;
mod cuda_library;
mod logprobs_and_errors;
mod lora;
mod memory;
mod packing;
mod parity;
