//! token-reward-annotate on models with a short context (max_position_embeddings 16) under the
//! default limits (256 + 256): the limits are checked against the rows, so rows that fit are
//! annotated exactly as on a long-context copy of the same models, rows that do not are
//! skipped and counted, and a batch is never wider than the context.
//!
//! The models are ppo_common's (word-level tokenizer: one token per word, EOS appended to a
//! response, no BOS), so every length below is counted by hand.

use crate::annotate_common::{manifest, output, run_cli, write_jsonl};
use crate::ppo_common::{dpo_model, policy, word};
use rto_data::token_table::read_table;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// A copy of the model folder `from` whose config says `positions` max_position_embeddings
/// (the weights are the same; rotary tables for the first positions do not depend on it).
fn with_context(from: &Path, to: &Path, positions: i64) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    let path = to.join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(config["max_position_embeddings"], 128, "the fixture's context");
    config["max_position_embeddings"] = positions.into();
    std::fs::write(&path, config.to_string()).unwrap();
    to.to_path_buf()
}

/// A (prompt, response) row of `prompt` + `response` words: that many prompt tokens and
/// `response` + 1 response tokens.
fn row(prompt: usize, response: usize, seed: i64) -> Value {
    let words =
        |n: usize, offset: i64| (0..n as i64).map(|i| word(20 + (seed * 7 + offset + i) % 40)).collect::<Vec<_>>();
    json!({"prompt": words(prompt, 0).join(" "), "response": words(response, 3).join(" ")})
}

struct Models {
    _dir: tempfile::TempDir,
    root: PathBuf,
    reference: PathBuf,
    dpo: PathBuf,
}

impl Models {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        // Scaled-up weights, so log-probs differ from token to token.
        let reference = policy(&root.join("ref"), 7, 5.0);
        let dpo = dpo_model(&root.join("dpo"));
        Self { _dir: dir, root, reference, dpo }
    }

    fn short(&self, name: &str, from: &Path) -> PathBuf {
        with_context(from, &self.root.join(name), 16)
    }

    /// Annotates `rows` with `reference` and `dpo` into a fresh store; the output folder.
    fn annotate(&self, name: &str, rows: &[Value], reference: &Path, dpo: &Path) -> anyhow::Result<PathBuf> {
        let (data, store) = (self.root.join(format!("{name}.jsonl")), self.root.join(format!("store-{name}")));
        write_jsonl(&data, rows);
        let args = [
            "--ref",
            reference.to_str().unwrap(),
            "--dpo",
            dpo.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--store",
            store.to_str().unwrap(),
        ];
        run_cli(&args)?;
        Ok(output(&store))
    }
}

/// Every sample of `short` is the same-id sample of `long`, token for token, values to 1e-5
/// (batches differ, so padding and matmul shapes do).
fn assert_same_values(short: &Path, long: &Path) {
    let long: Vec<_> = read_table(long).unwrap();
    for (sample, tokens) in read_table(short).unwrap() {
        let (_, expected) = long.iter().find(|(s, _)| s.sample_id == sample.sample_id).expect("sample in both");
        let ids = |t: &[rto_data::token_table::TokenRecord]| t.iter().map(|t| t.token_id).collect::<Vec<_>>();
        assert_eq!(ids(&tokens), ids(expected), "sample {}", sample.sample_id);
        for (ours, theirs) in tokens.iter().zip(expected) {
            assert!((ours.reward - theirs.reward).abs() < 1e-5, "sample {}: {ours:?} vs {theirs:?}", sample.sample_id);
            let gap = (ours.logp_ref.unwrap() - theirs.logp_ref.unwrap()).abs();
            assert!(gap < 1e-5, "sample {}: logp_ref {ours:?} vs {theirs:?}", sample.sample_id);
        }
    }
}

#[test]
fn rows_that_fit_a_short_context_are_annotated_under_the_default_limits() {
    let models = Models::new();
    let (reference, dpo) = (models.short("ref16", &models.reference), models.short("dpo16", &models.dpo));
    // Lengths 4+6, 3+7, 6+3, 2+10: each ≤ 16, and one batch is 6 + 10 = 16 wide.
    let rows = [row(4, 5, 1), row(3, 6, 2), row(6, 2, 3), row(2, 9, 4)];
    let short = models.annotate("fits", &rows, &reference, &dpo).unwrap();
    let dataset = &manifest(&short)["metrics"]["dataset"];
    assert_eq!((dataset["rows"].as_u64(), dataset["skipped"].as_object().map(|s| s.len())), (Some(4), Some(0)));
    let samples = read_table(&short).unwrap();
    let lengths: Vec<u32> = samples.iter().map(|(s, _)| s.n_tokens).collect();
    assert_eq!(lengths, [6, 7, 3, 10], "responses with EOS, none cut");

    let long = models.annotate("fits-long", &rows, &models.reference, &models.dpo).unwrap();
    assert_same_values(&short, &long);
}

#[test]
fn rows_too_long_for_the_context_are_skipped_and_batches_stay_within_it() {
    let models = Models::new();
    // Only the DPO model is short: the smallest context of the models is the limit.
    let dpo = models.short("dpo16", &models.dpo);
    // A: 10 + 4 = 14 and B: 2 + 12 = 14 fit alone, but side by side the batch would be
    // 10 + 12 = 22 wide; C: 4 + 6 = 10; D: 4 + 16 = 20 does not fit at all.
    let rows = [row(10, 3, 1), row(2, 11, 2), row(4, 5, 3), row(4, 15, 4)];
    let short = models.annotate("mixed", &rows, &models.reference, &dpo).unwrap();
    let metrics = &manifest(&short)["metrics"];
    assert_eq!(metrics["dataset"]["rows"], 4);
    assert_eq!(metrics["dataset"]["skipped"], json!({"sequence_too_long": 1}));
    let ids: Vec<u64> = read_table(&short).unwrap().iter().map(|(s, _)| s.sample_id).collect();
    assert_eq!(ids, [0, 1, 2], "row 3 (D) is skipped; ids follow the source rows");

    let long = models.annotate("mixed-long", &rows, &models.reference, &models.dpo).unwrap();
    assert_eq!(read_table(&long).unwrap().len(), 4, "the long-context models take every row");
    assert_same_values(&short, &long);
}

#[test]
fn data_that_never_fits_is_a_clear_error_and_stores_nothing() {
    let models = Models::new();
    let reference = models.short("ref16", &models.reference);
    let err = models.annotate("long", &[row(4, 15, 1), row(9, 9, 2)], &reference, &models.dpo).unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains("long.jsonl")
            && message.contains("no usable rows out of 2")
            && message.contains("sequence_too_long")
            && message.contains("max_position_embeddings"),
        "{message}"
    );
    let stored = models.root.join("store-long/annotate");
    let outputs = std::fs::read_dir(&stored).map(|d| d.flatten().filter(|e| e.path().is_dir()).count()).unwrap_or(0);
    assert_eq!(outputs, 0, "nothing may be stored under {}", stored.display());
}
