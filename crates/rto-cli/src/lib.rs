//! Shared pieces of the stage binaries (each binary in `src/bin/` stays a thin shell).

pub mod bench;

use std::panic::{self, AssertUnwindSafe};
use std::sync::Mutex;

/// Where the last panic happened (file:line), recorded by the hook `main_with` installs.
static PANIC_LOCATION: Mutex<Option<String>> = Mutex::new(None);

/// Runs a binary's body and turns an error into one readable message: `error: ` followed by
/// the whole context chain on one line, exit code 1. A plain `fn main() -> Result<()>` would
/// print the Debug form instead (a multi-line "Caused by" list, plus a backtrace whenever
/// RUST_BACKTRACE is set), which is noise for someone who only gave a wrong file.
///
/// It is also the panic boundary. tch turns a libtorch exception (shapes that a parseable but
/// inconsistent input makes disagree, an allocation that fails) into a panic; unwinding runs
/// the store's guards (nothing half-written is accepted), and the panic becomes the same kind
/// of one-line error, naming the binary and, when the stage recorded it, the step.
pub fn main_with(body: impl FnOnce() -> anyhow::Result<()>) -> ! {
    panic::set_hook(Box::new(|info| {
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line()));
        *PANIC_LOCATION.lock().unwrap_or_else(|e| e.into_inner()) = location;
    }));
    let result = panic::catch_unwind(AssertUnwindSafe(body));
    let message = match result {
        Ok(Ok(())) => exit_now(0),
        Ok(Err(err)) => format!("{err:#}"),
        Err(payload) => panic_message(&binary_name(), payload_text(payload.as_ref())),
    };
    eprintln!("error: {message}");
    exit_now(1)
}

/// Ends the process without running C++ static destructors or atexit handlers: libtorch's
/// deregister its ~2 000 operators one by one, ~0.1 s of every run (a third of a `--help`).
/// Nothing of ours waits for them: by the time `body` has returned or unwound, every artifact
/// is written and renamed into place and every guard has run; only stdout's buffer is left.
fn exit_now(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    extern "C" {
        fn _exit(status: i32) -> !;
    }
    // SAFETY: _exit(2) takes any int and does not return.
    unsafe { _exit(code) }
}

fn binary_name() -> String {
    let arg0 = std::env::args_os().next().unwrap_or_default();
    std::path::Path::new(&arg0).file_name().map_or("rto".into(), |n| n.to_string_lossy().into_owned())
}

fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    match (payload.downcast_ref::<String>(), payload.downcast_ref::<&str>()) {
        (Some(s), _) => s.clone(),
        (_, Some(s)) => s.to_string(),
        _ => "a panic without a message".into(),
    }
}

/// The one error line of a panic: a libtorch exception by its first line (its C++ frames are
/// noise to a user), anything else as the internal error it is, with where it happened.
pub fn panic_message(binary: &str, text: String) -> String {
    let at = rto_stages::progress::activity().map(|a| format!(" at {a}")).unwrap_or_default();
    match libtorch_message(&text) {
        Some(torch) => format!(
            "{binary}{at}: libtorch error: {torch} (an input whose sizes disagree with the model, or memory ran out); no output was stored"
        ),
        None => {
            let location = PANIC_LOCATION.lock().unwrap_or_else(|e| e.into_inner()).take();
            let location = location.map(|l| format!(" ({l})")).unwrap_or_default();
            let first = text.lines().next().unwrap_or_default();
            format!("{binary}{at}: internal error, please report it: {first}{location}; no output was stored")
        }
    }
}

/// The message of a `TchError::Torch` inside a panic text (`...: Torch("what\nframes...")`),
/// unescaped, first line only.
fn libtorch_message(text: &str) -> Option<String> {
    let start = text.find("Torch(\"")? + "Torch(\"".len();
    let escaped = &text[start..];
    let mut out = String::new();
    let mut chars = escaped.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => match chars.next() {
                Some('n') => break,
                Some(other) => out.push(other),
                None => break,
            },
            c => out.push(c),
        }
    }
    Some(out.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_libtorch_panic_becomes_its_first_line() {
        let text = r#"called `Result::unwrap()` on an `Err` value: Torch("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)\nException raised from meta at /pytorch/aten/src/ATen/native/LinearAlgebra.cpp:197 (most recent call first):\nframe #0: ...")"#;
        assert_eq!(libtorch_message(text).as_deref(), Some("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)"));
        let line = panic_message("dpo-train", text.to_string());
        assert!(line.starts_with("dpo-train: libtorch error: mat1 and mat2"), "{line}");
        assert!(!line.contains('\n') && !line.contains("frame #0"), "{line}");
    }

    #[test]
    fn other_panics_are_internal_errors() {
        assert_eq!(libtorch_message("index out of bounds: the len is 3 but the index is 7"), None);
        let line = panic_message("ppo-train", "index out of bounds: the len is 3\nmore".into());
        assert!(line.starts_with("ppo-train: internal error, please report it: index out of bounds"), "{line}");
        assert!(!line.contains('\n'));
    }
}
