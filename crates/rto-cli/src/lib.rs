//! Shared pieces of the stage binaries (each binary in `src/bin/` stays a thin shell).

pub mod bench;
