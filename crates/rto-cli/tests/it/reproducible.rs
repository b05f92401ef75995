//! Reproducible mode (`--reproducible` / `RTO_REPRODUCIBLE=1`) at the binary level: the pins
//! join the key and the manifest, `RTO_REPRODUCIBLE=1` is the flag, two runs under the mode give
//! the same bytes, and a pinned variable set otherwise in the environment is refused before
//! anything is written. The sft-train run is the fixture's (3 steps of a tiny model).

use crate::support::compare::assert_same_outputs;
use crate::support::{bin, fixture, repo_root, scratch, snapshot, snapshot_diff, Output, SFT_FLAGS};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every variable the mode reads or sets; each run starts from none of them, plus `env`.
const MODE_VARS: [&str; 4] = ["RTO_REPRODUCIBLE", "ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA"];

fn sft(store: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let f = fixture();
    let mut cmd = Command::new(bin("sft-train"));
    cmd.current_dir(repo_root()).args(SFT_FLAGS).arg("--store").arg(store);
    cmd.arg("--init-config").arg(&f.model_config).arg("--tokenizer").arg(&f.tokenizer).arg("--data").arg(&f.sft_data);
    cmd.args(extra);
    for var in MODE_VARS {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("sft-train starts");
    Output {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn sft_ok(store: &Path, extra: &[&str], env: &[(&str, &str)]) -> PathBuf {
    let out = sft(store, extra, env);
    assert!(out.status.success(), "sft-train failed:\n{}", out.stderr);
    PathBuf::from(out.last_line())
}

fn manifest(folder: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(folder.join("manifest.json")).unwrap()).unwrap()
}

fn key(folder: &Path) -> String {
    folder.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn the_mode_joins_key_and_manifest_and_repeats_its_bytes() {
    let work = scratch();
    let (plain, a, b) = (work.path().join("plain"), work.path().join("a"), work.path().join("b"));
    let off = sft_ok(&plain, &[], &[]);
    let on = sft_ok(&a, &["--reproducible"], &[]);
    assert_ne!(key(&off), key(&on), "the pins change the bytes, so they must change the key");
    // The off key is the one the fixture (the same run without the mode) already has.
    assert_eq!(key(&off), key(&fixture().sft));
    let pins = json!({"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"});
    assert_eq!(manifest(&on)["settings"]["common"]["reproducible"], pins);
    assert!(manifest(&off)["settings"]["common"].get("reproducible").is_none());
    // The switch variable is the flag: same key, and (being the same computation) same bytes.
    let by_env = sft_ok(&b, &[], &[("RTO_REPRODUCIBLE", "1")]);
    assert_eq!(key(&by_env), key(&on));
    assert_same_outputs(&on, &a, &by_env, &b);
    // A pin already set to its own value is accepted and computes the same.
    let preset = sft_ok(&work.path().join("c"), &["--reproducible"], &[("MKL_CBWR", "AVX2")]);
    assert_same_outputs(&on, &a, &preset, &work.path().join("c"));
}

#[test]
fn a_pin_set_otherwise_or_a_bad_switch_is_refused_before_any_write() {
    let work = scratch();
    let store = work.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let before = snapshot(&store);
    let out = sft(&store, &["--reproducible"], &[("ATEN_CPU_CAPABILITY", "avx512")]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    let line = out.stderr.trim();
    assert!(line.starts_with("error: ") && !line.contains('\n'), "{line}");
    assert!(line.contains("ATEN_CPU_CAPABILITY=avx512") && line.contains("ATEN_CPU_CAPABILITY=avx2"), "{line}");
    let out = sft(&store, &[], &[("RTO_REPRODUCIBLE", "yes")]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("RTO_REPRODUCIBLE=yes") && out.stderr.contains("expected 1"), "{}", out.stderr);
    assert_eq!(snapshot_diff(&before, &snapshot(&store)), Vec::<String>::new());
}
