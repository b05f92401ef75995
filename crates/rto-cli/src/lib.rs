//! Shared pieces of the stage binaries (each binary in `src/bin/` stays a thin shell).

pub mod bench;

/// Runs a binary's body and turns an error into one readable message: `error: ` followed by
/// the whole context chain on one line, exit code 1. A plain `fn main() -> Result<()>` would
/// print the Debug form instead (a multi-line "Caused by" list, plus a backtrace whenever
/// RUST_BACKTRACE is set), which is noise for someone who only gave a wrong file.
pub fn main_with(body: impl FnOnce() -> anyhow::Result<()>) -> ! {
    let result = body();
    // process::exit skips the buffered-stdout flush that returning from main would do.
    let _ = std::io::Write::flush(&mut std::io::stdout());
    match result {
        Ok(()) => std::process::exit(0),
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::exit(1)
        }
    }
}
