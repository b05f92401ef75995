//! The `rto.*` table metadata: written by `RewardMetadata::to_kv`, read back by
//! `RewardMetadata::from_kv` and, independently, by pyarrow (what a pandas user sees); the two
//! readings agree with each other and with values written down by hand.

use rto_algo::{RewardMode, RewardWeights};
use rto_data::token_table::{read_metadata, SampleRecord, TableOptions, TokenRecord, TokenTableWriter};
use rto_stages::token_scoring::RewardMetadata;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// Both files' key-value metadata as pyarrow reads it: {"tokens": {...}, "samples": {...}}.
fn pyarrow_metadata(dir: &Path) -> Value {
    const SCRIPT: &str = "import json, sys, pyarrow.parquet as pq
out = {}
for name in ('tokens', 'samples'):
    md = pq.read_schema(f'{sys.argv[1]}/{name}.parquet').metadata
    out[name] = {k.decode(): v.decode() for k, v in md.items() if k.decode().startswith('rto.')}
print(json.dumps(out))";
    serde_json::from_str(&rto_test_support::python_code(SCRIPT, &[dir.to_str().unwrap()])).unwrap()
}

/// A one-sample table with `kv` as its metadata.
fn write_table(dir: &Path, kv: BTreeMap<String, String>) {
    let mut writer = TokenTableWriter::create(dir, TableOptions { metadata: kv, ..TableOptions::default() }).unwrap();
    let token = TokenRecord {
        position: 0,
        token_id: 5,
        token: "a".into(),
        logp_ref: Some(-1.0),
        logp_dpo: None,
        logp_policy: None,
        dpo_reward: None,
        kl_penalty: None,
        sentence_reward: None,
        reward: 0.5,
        gold_credit: None,
        advantage: None,
    };
    let sample = SampleRecord {
        sample_id: 0,
        prompt_id: "p".into(),
        prompt: "q".into(),
        response: "a".into(),
        n_tokens: 1,
        dpo_return: None,
        sentence_reward: None,
        ret: 0.5,
        gold_score: None,
        iteration: None,
        side: None,
        group: None,
    };
    writer.push_sample(sample, &[token]).unwrap();
    writer.finish().unwrap();
}

fn example() -> RewardMetadata {
    RewardMetadata {
        stage: "ppo".into(),
        mode: RewardMode::DpoOnly,
        weights: RewardWeights { beta1: 0.05, clip: f64::INFINITY, beta2: 0.0123, beta3: 0.0, rm_clamp: 10.0 },
        tokenizer: "ab".repeat(32),
        models: BTreeMap::from([("reference".into(), "cd".repeat(32)), ("dpo".into(), "ef".repeat(32))]),
        data: Some("01".repeat(32)),
        settings: Some(json!({"dpo_clip": null, "batch_size": 4})),
        iteration: Some(7),
    }
}

#[test]
fn metadata_round_trips_through_parquet_and_reads_the_same_in_pyarrow() {
    let dir = tempfile::tempdir().unwrap();
    let meta = example();
    write_table(dir.path(), meta.to_kv());

    let ours = read_metadata(dir.path()).unwrap();
    assert_eq!(RewardMetadata::from_kv(&ours).unwrap(), Some(meta.clone()));

    let expected = json!({
        "rto.stage": "ppo", "rto.mode": "dpo-only",
        "rto.beta1": "0.05", "rto.clip": "inf", "rto.beta2": "0.0123", "rto.beta3": "0", "rto.rm_clamp": "10",
        "rto.tokenizer": "ab".repeat(32), "rto.model.reference": "cd".repeat(32), "rto.model.dpo": "ef".repeat(32),
        "rto.data": "01".repeat(32), "rto.settings": "{\"batch_size\":4,\"dpo_clip\":null}", "rto.iteration": "7",
    });
    let theirs = pyarrow_metadata(dir.path());
    for (file, table) in [("tokens", "tokens"), ("samples", "samples")] {
        let mut kv = theirs[file].as_object().unwrap().clone();
        assert_eq!(kv.remove("rto.table"), Some(json!(table)), "{file}");
        assert_eq!(kv.remove("rto.schema_version"), Some(json!("1")), "{file}");
        assert_eq!(Value::Object(kv), expected, "{file}.parquet as pyarrow reads it");
    }
    // Our reader's map of the tokens file is pyarrow's, key for key.
    let ours_rto: BTreeMap<_, _> = ours.into_iter().filter(|(k, _)| k.starts_with("rto.")).collect();
    assert_eq!(serde_json::to_value(&ours_rto).unwrap(), theirs["tokens"]);
}

#[test]
fn new_records_the_weights_the_mode_applied_and_the_content_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (tokenizer, model) = (dir.path().join("tok"), dir.path().join("model"));
    std::fs::create_dir_all(&tokenizer).unwrap();
    std::fs::write(tokenizer.join("tokenizer.json"), "{}").unwrap();
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("config.json"), "{}").unwrap();
    let configured = RewardWeights { beta1: 0.2, ..RewardWeights::default() };
    let meta = RewardMetadata::new(
        "annotate",
        RewardMode::Ppo,
        &configured,
        &tokenizer,
        &[("reference", Some(&model)), ("dpo", None)],
    )
    .unwrap();
    assert_eq!(meta.weights, RewardWeights { beta1: 0.0, ..configured }, "mode ppo applies β1 = 0");
    let tokenizer_key = rto_data::store::hash_file(&tokenizer.join("tokenizer.json")).unwrap();
    assert_eq!(meta.tokenizer, tokenizer_key.as_str(), "the hash of the tokenizer.json named");
    let model_key = rto_data::store::input_key(&model).unwrap();
    assert_eq!(meta.models["reference"], model_key.as_str());
    assert_eq!(meta.models.keys().collect::<Vec<_>>(), ["reference"], "absent roles are left out");
    let kv = meta.to_kv();
    assert_eq!((kv["rto.beta1"].as_str(), kv["rto.clip"].as_str(), kv["rto.mode"].as_str()), ("0", "0.05", "ppo"));
    assert!(!kv.contains_key("rto.iteration") && !kv.contains_key("rto.data") && !kv.contains_key("rto.settings"));
}

#[test]
fn a_table_without_rto_metadata_reads_as_none_and_a_damaged_one_names_the_key() {
    let plain = BTreeMap::from([("rto.schema_version".to_string(), "1".to_string())]);
    assert_eq!(RewardMetadata::from_kv(&plain).unwrap(), None);

    let mut kv = example().to_kv();
    kv.insert("rto.beta2".into(), "a lot".into());
    let err = format!("{:#}", RewardMetadata::from_kv(&kv).unwrap_err());
    assert!(err.contains("rto.beta2") && err.contains("a lot"), "{err}");

    let mut kv = example().to_kv();
    kv.remove("rto.mode");
    let err = format!("{:#}", RewardMetadata::from_kv(&kv).unwrap_err());
    assert!(err.contains("no `rto.mode`"), "{err}");

    let mut kv = example().to_kv();
    kv.insert("rto.mode".into(), "best".into());
    let err = format!("{:#}", RewardMetadata::from_kv(&kv).unwrap_err());
    assert!(err.contains("rto.mode") && err.contains("best"), "{err}");
}
