//! Reproducible mode (`--reproducible`, or `RTO_REPRODUCIBLE=1`): pins the CPU code paths of
//! libtorch whose choice depends on the machine's instruction set, so that two x86-64 machines
//! with AVX2 compute the same bytes. Without it libtorch picks the widest kernels the CPU has
//! (AVX-512 where present), whose floats differ in the last bits from the AVX2 ones.
//!
//! The pins are environment variables read by libtorch's libraries when they first run a
//! kernel, so [`pin_process`] must run before any tensor is made: `parse_with_config` calls it
//! right after parsing the flags, before a stage starts. `bench/bench_pins.py` measured which
//! variables change the bytes and what the pins cost (ARCHITECTURE.md, "Reproducible mode").
//!
//! Precedence: a pinned variable already set to another value in the environment is an error
//! naming it (a user who set `ATEN_CPU_CAPABILITY=avx512` and asked for reproducibility wants
//! one of the two, not a silent choice); set to the pinned value, it is accepted.

use anyhow::{bail, Result};
use serde_json::Value;

/// The environment variable that turns the mode on for every stage binary (what `make demo`
/// and `make replicate` set): `1` on, `0` or empty off.
pub const SWITCH: &str = "RTO_REPRODUCIBLE";

/// The pins, (variable, value): ATen's kernel dispatch, MKL's conditional numerical
/// reproducibility branch and oneDNN's widest instruction set, all at AVX2 (the widest set
/// every x86-64 CPU since 2013-2015 has; a CPU without AVX2 falls back and may differ).
/// Changing this table changes every key made in the mode, as it should.
pub const PINS: [(&str, &str); 3] =
    [("ATEN_CPU_CAPABILITY", "avx2"), ("MKL_CBWR", "AVX2"), ("ONEDNN_MAX_CPU_ISA", "AVX2")];

/// The pins as the JSON object stage keys and manifests record.
pub fn pins_json() -> Value {
    PINS.iter().map(|(var, value)| (var.to_string(), Value::from(*value))).collect::<serde_json::Map<_, _>>().into()
}

/// Whether [`SWITCH`] asks for the mode, given its value in the environment.
pub fn switch_on(value: Option<&str>) -> Result<bool> {
    match value.map(str::trim) {
        None | Some("") | Some("0") => Ok(false),
        Some("1") => Ok(true),
        Some(other) => bail!("{SWITCH}={other}: expected 1 (reproducible mode on) or 0 (off)"),
    }
}

/// The pins still to set, given how the environment reads (`lookup(var)`); an error names
/// every pinned variable already set to another value.
pub fn pins_to_set(lookup: impl Fn(&str) -> Option<String>) -> Result<Vec<(&'static str, &'static str)>> {
    let mut to_set = Vec::new();
    let mut conflicts = Vec::new();
    for (var, want) in PINS {
        match lookup(var) {
            None => to_set.push((var, want)),
            Some(have) if have == want => {}
            Some(have) => conflicts.push(format!("{var}={have} (the mode needs {var}={want})")),
        }
    }
    if !conflicts.is_empty() {
        bail!(
            "reproducible mode (--reproducible or {SWITCH}=1) pins CPU code paths, but the environment sets {}; \
             unset {} or run without the mode",
            conflicts.join(", "),
            if conflicts.len() == 1 { "it" } else { "them" }
        );
    }
    Ok(to_set)
}

/// Sets the pins in this process's environment. Call it before any libtorch kernel runs (the
/// libraries read the variables once, at their first kernel) and while the process has one
/// thread: setting environment variables races with other threads reading them.
pub fn pin_process() -> Result<()> {
    for (var, value) in pins_to_set(|var| std::env::var(var).ok())? {
        std::env::set_var(var, value);
    }
    Ok(())
}
