//! A file edited inside a cached stage folder is detected before use (DESIGN.md §3, issue 9
//! part 6): by a downstream stage or tool that reads the folder, and by a rerun of the stage
//! that produced it (which must not silently reuse the damaged folder, and recomputes it
//! under --force). Each case tampers with a private copy of the fixture's store.

use crate::support;

use crate::support::files::{flip_middle_byte, truncate_half};
use crate::support::{fixture, snapshot, snapshot_diff, StoreCopy, ANNOTATE_FLAGS, PREF_FLAGS};
use std::fs;
use std::path::Path;

/// A private copy of the fixture's store (its artifacts' paths through `Deref`), removed on drop.
struct Copy {
    _tmp: tempfile::TempDir,
    stored: StoreCopy,
}

impl std::ops::Deref for Copy {
    type Target = StoreCopy;
    fn deref(&self) -> &StoreCopy {
        &self.stored
    }
}

impl Copy {
    fn new() -> Copy {
        let tmp = support::scratch();
        Copy { stored: StoreCopy::at(tmp.path().join("store")), _tmp: tmp }
    }

    /// The exact flags the fixture ran a stage with, pointed at this copy (paths never enter
    /// keys, so the copy's stages have the fixture's keys).
    fn dpo_args(&self) -> Vec<String> {
        let mut v: Vec<String> = PREF_FLAGS.iter().map(|s| s.to_string()).collect();
        v.extend(["--store", p(&self.store), "--model", p(&self.sft), "--data", p(&self.pairs_file)].map(String::from));
        v
    }

    fn annotate_args(&self) -> Vec<String> {
        let mut v: Vec<String> = ANNOTATE_FLAGS.iter().map(|s| s.to_string()).collect();
        v.extend(
            [
                "--store",
                p(&self.store),
                "--ref",
                p(&self.sft),
                "--dpo",
                p(&self.dpo),
                "--reward-model",
                p(&self.rm),
                "--data",
                p(&self.pairs_file),
            ]
            .map(String::from),
        );
        v
    }
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Runs `bin`, expecting a clean refusal that contains every `expect` substring, with the
/// store left exactly as the tampering left it.
fn assert_refused(copy: &Copy, bin: &str, args: &[String], expect: &[&str]) {
    let before = snapshot(&copy.store);
    let out = support::run(bin, args);
    let diff = snapshot_diff(&before, &snapshot(&copy.store));
    assert!(!out.status.success(), "{bin} accepted a tampered input:\n{}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{bin} panicked:\n{}", out.stderr);
    for want in expect {
        assert!(out.stderr.contains(want), "{bin}: stderr lacks `{want}`:\n{}", out.stderr);
    }
    assert!(diff.is_empty(), "{bin} changed the store: {diff:?}");
}

#[test]
fn downstream_users_reject_an_edited_checkpoint() {
    let copy = Copy::new();
    flip_middle_byte(&copy.dpo.join("model.safetensors"));
    let expect = ["model.safetensors", "modified after the stage wrote it"];
    assert_refused(&copy, "token-reward-annotate", &copy.annotate_args(), &expect);
    assert_refused(
        &copy,
        "rto-sample",
        &["--model".into(), p(&copy.dpo).into(), "--max-new-tokens".into(), "2".into()],
        &expect,
    );
    let eval = [
        "--store",
        p(&copy.store),
        "--model",
        p(&copy.dpo),
        "--baseline",
        p(&copy.sft),
        "--prompts",
        p(&fixture().prompts),
        "--judge",
        "toy",
        "--max-new-tokens",
        "4",
    ]
    .map(String::from);
    assert_refused(&copy, "rto-eval", &eval, &expect);
    let ppo = [
        "--store",
        p(&copy.store),
        "--policy",
        p(&copy.sft),
        "--dpo",
        p(&copy.dpo),
        "--reward-model",
        p(&copy.rm),
        "--prompts",
        p(&fixture().prompts),
        "--judge",
        "toy",
        "--rollout-batch-size",
        "4",
        "--train-batch-size",
        "4",
        "--iterations",
        "1",
        "--max-new-tokens",
        "4",
    ]
    .map(String::from);
    assert_refused(&copy, "ppo-train", &ppo, &expect);
}

#[test]
fn rerunning_the_producer_detects_a_damaged_output_and_force_recomputes_it() {
    let copy = Copy::new();
    truncate_half(&copy.dpo.join("model.safetensors"), &copy.dpo.join("model.safetensors"));
    assert_refused(&copy, "dpo-train", &copy.dpo_args(), &["damaged", "--force", "model.safetensors"]);

    let mut forced = copy.dpo_args();
    forced.push("--force".into());
    let out = support::run_ok("dpo-train", &forced);
    assert_eq!(out, copy.dpo, "--force recomputes into the same key's folder");
    // The repaired folder verifies again: a plain rerun reuses it.
    let again = support::run("dpo-train", &copy.dpo_args());
    assert!(again.status.success() && again.stderr.contains("reusing"), "{}", again.stderr);
}

#[test]
fn an_edited_token_table_is_caught_by_show_and_by_a_rerun() {
    let copy = Copy::new();
    let table = copy.annotate.join("tokens.parquet");
    truncate_half(&table, &table);
    assert_refused(
        &copy,
        "token-reward-annotate",
        &["show".into(), p(&copy.annotate).into()],
        &["tokens.parquet", "no longer matches its manifest"],
    );
    assert_refused(&copy, "token-reward-annotate", &copy.annotate_args(), &["damaged", "tokens.parquet"]);
}

#[test]
fn a_file_taken_from_a_stage_folder_must_still_match_its_manifest() {
    let copy = Copy::new();
    let mut text = fs::read_to_string(&copy.pairs_file).unwrap();
    text.push_str("{\"prompt\":\"x\",\"chosen\":\"a b\",\"rejected\":\"c\"}\n");
    fs::write(&copy.pairs_file, text).unwrap();
    assert_refused(
        &copy,
        "dpo-train",
        &copy.dpo_args(),
        &["pairs.jsonl", "modified after stage pairs wrote it", "--force"],
    );
}

#[test]
fn added_and_removed_files_are_caught() {
    let copy = Copy::new();
    fs::write(copy.sft.join("extra.bin"), b"stray").unwrap();
    assert_refused(&copy, "dpo-train", &copy.dpo_args(), &["extra.bin", "not listed in the manifest"]);
    fs::remove_file(copy.sft.join("extra.bin")).unwrap();
    fs::remove_file(copy.rm.join("tokenizer.json")).unwrap();
    // annotate compares the models' tokenizers before it hashes its inputs, so the message
    // comes from that read; it still names the file.
    assert_refused(&copy, "token-reward-annotate", &copy.annotate_args(), &["tokenizer.json"]);
}
