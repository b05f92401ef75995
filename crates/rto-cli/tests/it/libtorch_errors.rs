//! The panic boundary of `rto_cli::main_with`: a libtorch exception (tch panics on one) from a
//! parseable but inconsistent input becomes one `error:` line naming the binary, exit code 1,
//! and the store is left exactly as it was.

use crate::support::{copy_dir, fixture, run, scratch, snapshot, snapshot_diff, PREF_FLAGS};
use std::fs;

#[test]
fn an_allocation_libtorch_refuses_is_one_error_line_and_stores_nothing() {
    let fx = fixture();
    let tmp = scratch();
    // A model folder whose config claims 4·10¹² positions: it parses and validates, and the
    // rotary table libtorch is asked for (16 TB) cannot be allocated.
    let model = tmp.path().join("model");
    copy_dir(&fx.sft, &model);
    fs::remove_file(model.join("manifest.json")).unwrap();
    let config_path = model.join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&fs::read_to_string(&config_path).unwrap()).unwrap();
    config["max_position_embeddings"] = serde_json::json!(4_000_000_000_000i64);
    fs::write(&config_path, config.to_string()).unwrap();
    let store = tmp.path().join("runs");
    fs::create_dir_all(&store).unwrap();
    let before = snapshot(&store);

    let mut args: Vec<String> = vec!["--store".into(), store.display().to_string()];
    args.extend(["--model".into(), model.display().to_string(), "--data".into(), fx.pairs_file.display().to_string()]);
    args.extend(PREF_FLAGS.iter().map(|f| f.to_string()));
    let out = run("dpo-train", &args);

    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    let lines: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(lines.len(), 1, "one error line expected:\n{}", out.stderr);
    let line = lines[0];
    assert!(line.starts_with("error: dpo-train"), "{line}");
    assert!(line.contains("libtorch error") && line.contains("allocate"), "{line}");
    assert!(line.contains("no output was stored"), "{line}");
    for noise in ["panicked", "frame #", "Exception raised from", "RUST_BACKTRACE"] {
        assert!(!out.stderr.contains(noise), "stderr contains `{noise}`:\n{}", out.stderr);
    }
    assert_eq!(snapshot_diff(&before, &snapshot(&store)), Vec::<String>::new(), "the store changed");
}
