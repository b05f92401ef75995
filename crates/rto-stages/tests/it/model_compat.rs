//! The one model-compatibility check, through every stage that combines models (dpo-train,
//! token-reward-annotate, ppo-train): a re-serialized tokenizer.json (same JSON, other bytes)
//! is accepted by all of them, a tokenizer with one token renamed is refused by all of them
//! before the store is touched, with a message naming both folders' files.

use crate::ppo_common::{base_args, fixture, run_ppo, set, tokenizer_json, Fixture};
use rto_stages::compat::check_models;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A copy of model folder `from` at `to` whose tokenizer.json is `tokenizer`.
fn with_tokenizer(from: &Path, to: &Path, tokenizer: &str) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    std::fs::write(to.join("tokenizer.json"), tokenizer).unwrap();
    to.to_path_buf()
}

/// The fixture's tokenizer.json written another way: top-level keys in reverse order,
/// indented, non-ASCII-safe escapes for the specials' angle brackets.
fn reserialized() -> String {
    let value: Value = serde_json::from_str(&tokenizer_json(None)).unwrap();
    let object = value.as_object().unwrap();
    let fields: Vec<String> = object
        .iter()
        .rev()
        .map(|(key, value)| {
            format!("  {}: {}", serde_json::to_string(key).unwrap(), serde_json::to_string_pretty(value).unwrap())
        })
        .collect();
    let text = format!("{{\n{}\n}}\n", fields.join(",\n")).replace("<pad>", "\\u003cpad>");
    assert_ne!(text, tokenizer_json(None), "other bytes");
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), value, "same JSON");
    text
}

struct Setup {
    dir: tempfile::TempDir,
    f: Fixture,
    /// The DPO model with the re-serialized tokenizer, and with one token renamed.
    dpo_same: PathBuf,
    dpo_other: PathBuf,
    rm_same: PathBuf,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let f = fixture(dir.path());
        let same = reserialized();
        let dpo_same = with_tokenizer(&f.dpo, &dir.path().join("dpo-same"), &same);
        let dpo_other = with_tokenizer(&f.dpo, &dir.path().join("dpo-other"), &tokenizer_json(Some(30)));
        let rm_same = with_tokenizer(&f.reward_model, &dir.path().join("rm-same"), &same);
        Self { dir, f, dpo_same, dpo_other, rm_same }
    }

    fn store(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn data(&self, name: &str, rows: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, rows).unwrap();
        path.display().to_string()
    }
}

/// Asserts that `message` names both tokenizer files and says what is wrong.
fn names_both(message: &str, ours: &Path, theirs: &Path) {
    for dir in [ours, theirs] {
        assert!(message.contains(&dir.join("tokenizer.json").display().to_string()), "{message}");
    }
    assert!(message.contains("different tokenizers"), "{message}");
}

/// Finished outputs (folders with a manifest) of every stage in `store`, as `stage` names.
fn outputs(store: &Path) -> Vec<String> {
    let Ok(stages) = std::fs::read_dir(store) else { return Vec::new() };
    let mut out = Vec::new();
    for stage in stages.flatten() {
        for folder in std::fs::read_dir(stage.path()).into_iter().flatten().flatten() {
            if folder.path().join("manifest.json").is_file() {
                out.push(stage.file_name().to_string_lossy().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_check_compares_parsed_json_vocabulary_and_context() {
    let s = Setup::new();
    let shared = check_models(&[("policy", &s.f.policy), ("dpo", &s.dpo_same), ("reward_model", &s.rm_same)]).unwrap();
    assert_eq!((shared.vocab_size, shared.max_positions), (64, 128));
    let err = check_models(&[("policy", &s.f.policy), ("dpo", &s.dpo_other)]).unwrap_err();
    names_both(&format!("{err:#}"), &s.f.policy, &s.dpo_other);
}

#[test]
fn dpo_train_accepts_a_reserialized_tokenizer_and_refuses_a_changed_one() {
    let s = Setup::new();
    let pairs: String = (0..8)
        .map(|i| format!("{{\"prompt\": \"w{i} w2\", \"chosen\": \"w6 w6\", \"rejected\": \"w3 w{i}\"}}\n"))
        .collect();
    let data = s.data("pairs.jsonl", &pairs);
    let run = |reference: &Path, store: &Path| {
        let args = ["--model", s.f.policy.to_str().unwrap(), "--ref", reference.to_str().unwrap(), "--data", &data];
        let rest =
            ["--store", store.to_str().unwrap(), "--batch-size", "4", "--max-steps", "1", "--learning-rate", "1e-3"];
        let argv = std::iter::once("dpo-train").chain(args).chain(rest).map(Into::into).collect();
        rto_stages::dpo::cli(rto_data::cli::parse_with_config_from(argv)?)
    };
    run(&s.dpo_same, &s.store("dpo-same")).unwrap();
    assert_eq!(outputs(&s.store("dpo-same")), ["dpo", "dpo-ref-logps"]);

    let store = s.store("dpo-other");
    let err = run(&s.dpo_other, &store).unwrap_err();
    names_both(&format!("{err:#}"), &s.f.policy, &s.dpo_other);
    assert!(outputs(&store).is_empty(), "nothing computed");
}

#[test]
fn annotate_accepts_a_reserialized_tokenizer_and_refuses_a_changed_one() {
    let s = Setup::new();
    let rows: String = (0..4).map(|i| format!("{{\"prompt\": \"w{i} w2\", \"response\": \"w6 w{i}\"}}\n")).collect();
    let data = s.data("rows.jsonl", &rows);
    let run = |dpo: &Path, store: &Path| {
        let args = ["--ref", s.f.policy.to_str().unwrap(), "--dpo", dpo.to_str().unwrap(), "--data", &data];
        let argv = std::iter::once("token-reward-annotate")
            .chain(args)
            .chain(["--reward-model", s.rm_same.to_str().unwrap(), "--store", store.to_str().unwrap()])
            .map(Into::into)
            .collect();
        rto_stages::annotate::main_cli(rto_data::cli::parse_with_config_from(argv)?)
    };
    run(&s.dpo_same, &s.store("annotate-same")).unwrap();
    assert_eq!(outputs(&s.store("annotate-same")), ["annotate"]);

    let store = s.store("annotate-other");
    let err = run(&s.dpo_other, &store).unwrap_err();
    names_both(&format!("{err:#}"), &s.f.policy, &s.dpo_other);
    assert!(outputs(&store).is_empty(), "nothing computed");
}

#[test]
fn ppo_train_accepts_a_reserialized_tokenizer_and_refuses_a_changed_one() {
    let s = Setup::new();
    let store = s.store("ppo-same");
    // The critic defaults to the reward model: its re-serialized tokenizer is checked too.
    let mut f = Fixture {
        policy: s.f.policy.clone(),
        dpo: s.dpo_same.clone(),
        reward_model: s.rm_same.clone(),
        prompts: s.f.prompts.clone(),
    };
    run_ppo(&set(base_args(&f, &store), "--iterations", "1")).unwrap();
    assert_eq!(outputs(&store), ["ppo"]);

    f.dpo = s.dpo_other.clone();
    let store = s.store("ppo-other");
    let err = run_ppo(&set(base_args(&f, &store), "--iterations", "1")).unwrap_err();
    names_both(&format!("{err:#}"), &s.f.policy, &s.dpo_other);
    assert!(outputs(&store).is_empty(), "nothing computed");
}
