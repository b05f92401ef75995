//! YAML configs and common flags.

use crate::common::chain;
use clap::Parser;
use rto_data::cli::{parse_with_config_from, CommonArgs};
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

#[derive(Parser, Debug, PartialEq)]
struct StageArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[arg(long, default_value_t = 0.1)]
    beta: f64,
    #[arg(long)]
    eval_fraction: Option<f64>,
    #[arg(long)]
    stop: Vec<String>,
    #[arg(long)]
    ipo: bool,
    #[arg(long, default_value = "data/prefs.parquet")]
    data: PathBuf,
    /// Renamed from --old-clip, which stays an alias.
    #[arg(long, default_value_t = 1.0, alias = "old-clip")]
    new_clip: f64,
}

fn args(list: &[&str]) -> Vec<OsString> {
    std::iter::once("stage").chain(list.iter().copied()).map(OsString::from).collect()
}

fn config(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("stage.yaml");
    fs::write(&p, text).unwrap();
    p
}

#[test]
fn defaults_without_config() {
    let a: StageArgs = parse_with_config_from(args(&[])).unwrap();
    assert_eq!(a.common.store, PathBuf::from("runs"));
    assert_eq!(a.common.seed, 42);
    assert_eq!(a.common.device, "cpu");
    assert!(!a.common.force);
    assert_eq!(a.common.config, None);
    assert_eq!(a.common.link, None);
    assert_eq!(a.beta, 0.1);
}

#[test]
fn config_values_apply_and_flags_override_them() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(
        tmp.path(),
        "beta: 0.5\neval_fraction: 0.05\nstop: [\"</s>\", \"###\"]\nipo: true\nforce: false\nseed: 7\ndevice: cuda:0\nlink: dpo\nstore: /tmp/store\n",
    );
    let c = cfg.to_str().unwrap();

    let a: StageArgs = parse_with_config_from(args(&["--config", c])).unwrap();
    assert_eq!(a.beta, 0.5);
    assert_eq!(a.eval_fraction, Some(0.05));
    assert_eq!(a.stop, vec!["</s>", "###"]);
    assert!(a.ipo);
    assert!(!a.common.force);
    assert_eq!(a.common.seed, 7);
    assert_eq!(a.common.device, "cuda:0");
    assert_eq!(a.common.link.as_deref(), Some("dpo"));
    assert_eq!(a.common.store, PathBuf::from("/tmp/store"));
    assert_eq!(a.common.config.as_deref(), Some(cfg.as_path()));
    assert_eq!(a.common.key_settings(), serde_json::json!({"seed": 7, "device": "cuda:0"}));

    // Flags on the command line win, before or after --config; a list flag replaces the list.
    let b: StageArgs = parse_with_config_from(args(&[
        "--beta",
        "0.9",
        &format!("--config={c}"),
        "--stop",
        "END",
        "--seed=1",
        "--force",
    ]))
    .unwrap();
    assert_eq!(b.beta, 0.9);
    assert_eq!(b.stop, vec!["END"]);
    assert_eq!(b.common.seed, 1);
    assert!(b.common.force);
    assert_eq!(b.eval_fraction, Some(0.05), "untouched keys still come from the file");
}

#[test]
fn unknown_key_names_key_and_file() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "beta: 0.5\nbeta_2: 3\n");
    let err = parse_with_config_from::<StageArgs>(args(&["--config", cfg.to_str().unwrap()])).unwrap_err();
    let msg = chain(&err);
    assert!(msg.contains("beta_2"), "{msg}");
    assert!(msg.contains(&cfg.display().to_string()), "{msg}");
    assert!(msg.contains("eval_fraction"), "lists the valid keys: {msg}");
}

#[test]
fn non_mapping_and_bad_values_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "- beta\n- 0.5\n");
    let msg = chain(&parse_with_config_from::<StageArgs>(args(&["--config", cfg.to_str().unwrap()])).unwrap_err());
    assert!(msg.contains(&cfg.display().to_string()) && msg.contains("mapping"), "{msg}");

    let cfg = config(tmp.path(), "ipo: \"yes please\"\n");
    let msg = chain(&parse_with_config_from::<StageArgs>(args(&["--config", cfg.to_str().unwrap()])).unwrap_err());
    assert!(msg.contains("ipo") && msg.contains(&cfg.display().to_string()), "{msg}");

    let cfg = config(tmp.path(), "beta: {nested: 1}\n");
    let msg = chain(&parse_with_config_from::<StageArgs>(args(&["--config", cfg.to_str().unwrap()])).unwrap_err());
    assert!(msg.contains("beta"), "{msg}");

    // A value clap rejects is a usage error, as if typed on the command line.
    let cfg = config(tmp.path(), "beta: high\n");
    let err = parse_with_config_from::<StageArgs>(args(&["--config", cfg.to_str().unwrap()])).unwrap_err();
    assert!(err.downcast_ref::<clap::Error>().is_some(), "{err:#}");

    let missing = tmp.path().join("nope.yaml");
    let msg = chain(&parse_with_config_from::<StageArgs>(args(&["--config", missing.to_str().unwrap()])).unwrap_err());
    assert!(msg.contains("nope.yaml"), "{msg}");

    let cfg = config(tmp.path(), "config: other.yaml\n");
    assert!(parse_with_config_from::<StageArgs>(args(&["--config", cfg.to_str().unwrap()])).is_err());
}

#[test]
fn empty_config_sets_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "# nothing yet\n");
    let a: StageArgs = parse_with_config_from(args(&["--config", cfg.to_str().unwrap()])).unwrap();
    assert_eq!(a.beta, 0.1);
}

#[test]
fn an_alias_is_a_config_key_and_either_name_on_the_command_line_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let old = config(tmp.path(), "old_clip: 0.25\n");
    let old = old.to_str().unwrap();
    let a: StageArgs = parse_with_config_from(args(&["--config", old])).unwrap();
    assert_eq!(a.new_clip, 0.25);
    let a: StageArgs = parse_with_config_from(args(&["--config", old, "--new-clip", "0.5"])).unwrap();
    assert_eq!(a.new_clip, 0.5, "the command line's new name replaces the file's old name");

    let new = tmp.path().join("new.yaml");
    fs::write(&new, "new_clip: 0.25\n").unwrap();
    let new = new.to_str().unwrap();
    let a: StageArgs = parse_with_config_from(args(&["--config", new, "--old-clip=0.75"])).unwrap();
    assert_eq!(a.new_clip, 0.75, "the command line's old name replaces the file's new name");
    let mut b: StageArgs = parse_with_config_from(args(&["--config", old])).unwrap();
    let c: StageArgs = parse_with_config_from(args(&["--config", new])).unwrap();
    b.common.config = c.common.config.clone();
    assert_eq!(b, c, "old and new keys give the same arguments (the file names aside)");
}
