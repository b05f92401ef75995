//! The integration tests of rto-algo: one test binary (one link, one process) instead of one per file.

mod advantage;
mod common;
mod group_advantage;
mod masked;
mod ppo_loss;
mod preference_loss;
mod schedule;
mod token_reward;
