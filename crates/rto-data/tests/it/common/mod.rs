//! Helpers shared by the integration tests of rto-data.
#![allow(dead_code)]

/// Runs Python source with arguments in the project venv (pyarrow is the peer our Parquet
/// output is checked against); returns stdout, panicking with stderr on failure.
pub use rto_test_support::python_code as run_python;

/// Full chain of an anyhow error as one string (what a user sees with `{:#}`).
pub fn chain(e: &anyhow::Error) -> String {
    format!("{e:#}")
}
