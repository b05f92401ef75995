//! Binary-level suites of the stage binaries on a tiny real pipeline: one test binary (one link, one process) instead of one per file.

mod bad_input;
mod concurrency;
mod data_parallel;
mod determinism;
mod eval_names;
mod kill_resume;
mod libtorch_errors;
mod lock_handover;
mod lora_pipeline;
mod memory_plan;
mod nonfinite;
mod paper_plan;
mod ppo_data_parallel;
mod reproducible;
mod sharded_inference;
mod support;
mod tampering;
mod train_world_sizes;
mod zero;
