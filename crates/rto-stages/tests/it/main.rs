//! The integration tests of rto-stages: one test binary (one link, one process) instead of one per file.

mod annotate_common;
mod annotate_context;
mod annotate_errors;
mod annotate_gold_credit;
mod annotate_inspect;
mod annotate_tables;
mod checkpoint_kill_window;
mod dpo_common;
mod dpo_train;
mod gradient_checkpointing;
mod help_text;
mod metrics_events;
mod metrics_plot;
mod metrics_show;
mod metrics_stages;
mod model_compat;
mod optim;
mod paper_config;
mod ppo_common;
mod ppo_inputs;
mod ppo_reward;
mod ppo_train;
mod reward_flags;
mod reward_metadata;
mod rm_train;
mod token_views;
