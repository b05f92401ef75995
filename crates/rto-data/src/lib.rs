//! Data plumbing of the RTO toolkit, free of any tensor library: the content-hash cache that
//! makes every stage output reproducible and reusable ([`store`]), the flags and YAML configs
//! every stage binary shares ([`cli`]), the reproducible mode's CPU pins ([`reproducible`]), preference/prompt datasets ([`dataset`]) and the
//! token-reward Parquet tables ([`token_table`]).

pub mod cli;
pub mod dataset;
pub mod records;
pub mod reproducible;
pub mod store;
pub mod token_table;
