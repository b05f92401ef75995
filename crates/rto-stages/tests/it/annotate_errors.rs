//! Bad input to token-reward-annotate: each a clear error naming the file, column or model,
//! and nothing left in the store.

use crate::annotate_common::*;
use rto_model::Head;
use serde_json::json;
use std::path::Path;

/// Only lock files may remain under `store` (no output, no temporary folder, no Parquet).
fn assert_nothing_stored(store: &Path) {
    if !store.exists() {
        return;
    }
    for entry in walk(store) {
        let name = entry.file_name().unwrap().to_string_lossy().to_string();
        assert!(entry.is_dir() || name.ends_with(".lock"), "left in the store: {}", entry.display());
    }
    let dirs: Vec<_> = walk(store).into_iter().filter(|p| p.is_dir() && p.parent() != Some(store)).collect();
    assert!(dirs.is_empty(), "folders left in the store: {dirs:?}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

/// Runs the stage on `data` with `dpo` as the DPO model; returns the error text.
fn failure(models: &Models, dpo: &Path, data: &Path, store: &Path) -> String {
    let args = [
        "--ref",
        &models.arg("ref"),
        "--dpo",
        dpo.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
    ];
    let err = run_cli(&args).expect_err("the stage should fail");
    assert_nothing_stored(store);
    eprintln!("error: {err:#}\n");
    format!("{err:#}")
}

#[test]
fn bad_inputs_fail_clearly_and_store_nothing() {
    let models = Models::new();
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let good = work.path().join("good.jsonl");
    responses(&good, 3);

    // A response column missing (the file has `answer`): names the file and the column.
    let no_response = work.path().join("no_response.jsonl");
    write_jsonl(&no_response, &[json!({"prompt": "hello", "answer": "world"})]);
    let msg = failure(&models, &models.dir("dpo"), &no_response, &store);
    assert!(
        msg.contains("no_response.jsonl") && msg.contains("no column `response`") && msg.contains("answer"),
        "{msg}"
    );

    // A DPO model with another vocabulary size.
    let wide = work.path().join("dpo_wide");
    model(&wide, &models.dir("tokenizer"), Head::LanguageModel, 5, 330);
    let msg = failure(&models, &wide, &good, &store);
    assert!(msg.contains("dpo_wide/config.json") && msg.contains("vocab_size 330") && msg.contains("320"), "{msg}");

    // A DPO model with another tokenizer (same vocab size).
    let other_tok = work.path().join("dpo_other_tokenizer");
    model(&other_tok, &models.dir("tokenizer"), Head::LanguageModel, 6, 320);
    let tok_path = other_tok.join("tokenizer.json");
    let text = std::fs::read_to_string(&tok_path).unwrap().replace("\"<unk>\"", "\"<UNK>\"");
    std::fs::write(&tok_path, text).unwrap();
    let msg = failure(&models, &other_tok, &good, &store);
    assert!(msg.contains("dpo_other_tokenizer/tokenizer.json") && msg.contains("different tokenizers"), "{msg}");

    // An empty dataset file.
    let empty = work.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let msg = failure(&models, &models.dir("dpo"), &empty, &store);
    assert!(msg.contains("empty.jsonl") && msg.contains("empty"), "{msg}");

    // Rows, but none usable (every response blank): fails inside the stage, still stores nothing.
    let blank = work.path().join("blank.jsonl");
    write_jsonl(&blank, &[json!({"prompt": "hi", "response": "  "}), json!({"prompt": "yo", "response": ""})]);
    let msg = failure(&models, &models.dir("dpo"), &blank, &store);
    assert!(msg.contains("blank.jsonl") && msg.contains("no usable rows") && msg.contains("empty_response"), "{msg}");

    // Limits beyond the models' context are no error: see annotate_context.rs.

    // A bad coefficient is caught before anything is read.
    let args = [
        "--ref",
        &models.arg("ref"),
        "--dpo",
        &models.arg("dpo"),
        "--data",
        good.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--dpo-clip",
        "0",
    ];
    let msg = format!("{:#}", run_cli(&args).unwrap_err());
    assert!(msg.contains("clip must be > 0") && msg.contains("--dpo-clip 0"), "{msg}");
    assert_nothing_stored(&store);
}
