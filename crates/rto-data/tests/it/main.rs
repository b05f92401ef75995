//! The integration tests of rto-data: one test binary (one link, one process) instead of one per file.

mod cli;
mod common;
mod dataset;
mod gold_credit_column;
mod reproducible;
mod store;
mod store_publish_failures;
mod store_swap;
mod token_table;
