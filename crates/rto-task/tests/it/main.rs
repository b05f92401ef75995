//! The integration tests of rto-task: one test binary (one link, one process) instead of one per file.

mod common;
mod dataset;
mod gold_credit;
mod judge;
mod pairs;
mod pipeline_stats;
mod regenerate;
mod tokenizer;
