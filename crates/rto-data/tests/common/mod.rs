//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// The project venv's interpreter (holds pyarrow, the peer our Parquet output is checked
/// against). Panics with instructions when it is missing, rather than skipping silently.
pub fn python() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: create the project venv with pyarrow (see the Makefile) before running these tests",
        p.display()
    );
    p
}

/// Runs a Python script with arguments; returns stdout, panicking with stderr on failure.
pub fn run_python(script: &str, args: &[&str]) -> String {
    let out = Command::new(python()).arg("-c").arg(script).args(args).output().expect("cannot spawn the venv python");
    assert!(out.status.success(), "python failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("python printed non-UTF-8")
}

/// Full chain of an anyhow error as one string (what a user sees with `{:#}`).
pub fn chain(e: &anyhow::Error) -> String {
    format!("{e:#}")
}
