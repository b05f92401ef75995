//! token-reward-annotate end to end on tiny random models: the table against pyarrow (sums)
//! and transformers (log-probs and rewards), and the pair statistic against DPO's accuracy.

use crate::annotate_common::*;
use rto_algo::{PreferenceInputs, PreferenceLoss};
use rto_data::store::input_key;
use rto_data::token_table::{read_metadata, read_samples};
use serde_json::{json, Value};
use std::path::Path;
use tch::Tensor;

/// The settings file tests/python/annotate_check.py reads (clip None = no clipping).
fn settings_json(path: &Path, models: &Models, clip: Option<f64>, policy: bool, rm: bool) {
    let value = json!({
        "ref": models.arg("ref"), "dpo": models.arg("dpo"),
        "policy": policy.then(|| models.arg("policy")), "reward_model": rm.then(|| models.arg("rm")),
        "beta1": 0.05, "clip": clip, "beta2": 0.01, "beta3": 1.0, "rm_clamp": 10.0,
    });
    std::fs::write(path, value.to_string()).unwrap();
}

#[test]
fn pairs_with_every_source_match_pyarrow_and_transformers() {
    let models = Models::new();
    let work = tempfile::tempdir().unwrap();
    let (data, store) = (work.path().join("pairs.jsonl"), work.path().join("store"));
    pairs(&data, 7);
    let (data_arg, store_arg) = (data.to_str().unwrap(), store.to_str().unwrap());
    // Batch size 3: pairs straddle batches, padding differs per batch.
    let args = [
        "--ref",
        &models.arg("ref"),
        "--dpo",
        &models.arg("dpo"),
        "--policy",
        &models.arg("policy"),
        "--reward-model",
        &models.arg("rm"),
        "--data",
        data_arg,
        "--store",
        store_arg,
        "--batch-size",
        "3",
    ];
    run_cli(&args).unwrap();
    let out = output(&store);

    let sums: Value = serde_json::from_str(&python("annotate_check.py", &["sums", out.to_str().unwrap()])).unwrap();
    assert_eq!(sums["samples"], 14);
    let settings = work.path().join("settings.json");
    settings_json(&settings, &models, Some(0.05), true, true);
    let reference =
        python("annotate_check.py", &["reference", out.to_str().unwrap(), data_arg, settings.to_str().unwrap()]);
    eprintln!("transformers vs tokens.parquet: {reference}");

    let samples = read_samples(&out).unwrap();
    let sides: Vec<&str> = samples.iter().map(|s| s.side.as_deref().unwrap()).collect();
    assert_eq!(sides[..4], ["chosen", "rejected", "chosen", "rejected"]);
    assert_eq!(samples.iter().map(|s| s.sample_id).collect::<Vec<_>>(), (0..14).collect::<Vec<u64>>());
    assert!(samples.iter().all(|s| s.sentence_reward.is_some() && s.dpo_return.is_some()));

    let meta = read_metadata(&out).unwrap();
    assert_eq!(
        (meta["rto.beta1"].as_str(), meta["rto.clip"].as_str(), meta["rto.beta2"].as_str(), meta["rto.beta3"].as_str()),
        ("0.05", "0.05", "0.01", "1")
    );
    assert_eq!(meta["rto.mode"], "rto");
    for (role, dir) in [("reference", "ref"), ("dpo", "dpo"), ("policy", "policy"), ("reward_model", "rm")] {
        assert_eq!(meta[&format!("rto.model.{role}")], input_key(&models.dir(dir)).unwrap().as_str(), "{role}");
    }
    assert_eq!(meta["rto.tokenizer"], input_key(&models.dir("ref").join("tokenizer.json")).unwrap().as_str());

    let metrics = &manifest(&out)["metrics"];
    assert_eq!(metrics["samples"], 14);
    assert_eq!(metrics["pairs"], 7);
    assert!(metrics["tokens_per_s"].as_f64().unwrap() > 0.0);
    let mean_dpo: f64 = samples.iter().map(|s| s.dpo_return.unwrap() as f64).sum::<f64>() / 14.0;
    assert!((metrics["mean_dpo_return"].as_f64().unwrap() - mean_dpo).abs() < 1e-6);

    // Same inputs and settings: a cache hit, nothing recomputed.
    run_cli(&args).unwrap();
    assert_eq!(output(&store), out);
}

#[test]
fn responses_without_policy_or_reward_model_match_transformers() {
    let models = Models::new();
    let work = tempfile::tempdir().unwrap();
    let (data, store) = (work.path().join("rows.jsonl"), work.path().join("store"));
    responses(&data, 5);
    // From a YAML config, as a pipeline would run it.
    let config = work.path().join("annotate.yaml");
    let yaml = format!(
        "ref: {}\ndpo: {}\ndata: {}\nstore: {}\nbatch_size: 2\n",
        models.arg("ref"),
        models.arg("dpo"),
        data.display(),
        store.display()
    );
    std::fs::write(&config, yaml).unwrap();
    run_cli(&["--config", config.to_str().unwrap()]).unwrap();
    let out = output(&store);

    python("annotate_check.py", &["sums", out.to_str().unwrap()]);
    let settings = work.path().join("settings.json");
    settings_json(&settings, &models, Some(0.05), false, false);
    python(
        "annotate_check.py",
        &["reference", out.to_str().unwrap(), data.to_str().unwrap(), settings.to_str().unwrap()],
    );

    let samples = read_samples(&out).unwrap();
    assert!(samples.iter().all(|s| s.side.is_none() && s.sentence_reward.is_none()));
    assert_eq!(samples.iter().map(|s| s.sample_id).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
    assert!(manifest(&out)["metrics"].get("pairs").is_none());
}

/// Fraction of pairs whose chosen side has the larger dpo_return, from samples.parquet.
fn chosen_higher(samples: &[rto_data::token_table::SampleRecord]) -> f64 {
    let pairs = samples.chunks(2).filter(|p| p[0].dpo_return.unwrap() > p[1].dpo_return.unwrap()).count();
    pairs as f64 / (samples.len() / 2) as f64
}

/// DPO's `rewards/accuracies` (dpo-train's metric, rto_algo) over summed log-probs that
/// transformers computed.
fn dpo_accuracy(logps: &Value) -> f64 {
    let t = |k: &str| {
        Tensor::from_slice(&logps[k].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect::<Vec<f64>>())
    };
    let (pc, pr, rc, rr) = (t("dpo_chosen"), t("dpo_rejected"), t("ref_chosen"), t("ref_rejected"));
    let lengths = Tensor::ones([pc.size()[0]], (tch::Kind::Float, tch::Device::Cpu));
    let inputs = PreferenceInputs {
        policy_chosen: &pc,
        policy_rejected: &pr,
        reference_chosen: Some(&rc),
        reference_rejected: Some(&rr),
        chosen_lengths: &lengths,
        rejected_lengths: &lengths,
    };
    PreferenceLoss::default().compute(&inputs).unwrap().accuracies.mean(tch::Kind::Double).double_value(&[])
}

/// Without clipping Σ dpo_reward = β1·Σ(logp_dpo − logp_ref), so "chosen has the larger
/// dpo_return" is exactly DPO's reward accuracy. With clipping (the default) the two can
/// differ: that fraction is reported, not asserted equal.
#[test]
fn unclipped_pair_fraction_equals_dpo_accuracy() {
    let models = Models::new();
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("pairs.jsonl");
    pairs(&data, 16);
    let base = ["--ref", &models.arg("ref"), "--dpo", &models.arg("dpo"), "--data", data.to_str().unwrap(), "--pairs"];
    let unclipped_store = work.path().join("unclipped");
    run_cli(&[&base[..], &["--clip", "inf", "--store", unclipped_store.to_str().unwrap()]].concat()).unwrap();
    let clipped_store = work.path().join("clipped");
    run_cli(&[&base[..], &["--store", clipped_store.to_str().unwrap()]].concat()).unwrap();

    let settings = work.path().join("settings.json");
    settings_json(&settings, &models, None, false, false);
    let logps_path = work.path().join("logps.json");
    python(
        "annotate_check.py",
        &["pair_logps", data.to_str().unwrap(), settings.to_str().unwrap(), logps_path.to_str().unwrap()],
    );
    let accuracy = dpo_accuracy(&serde_json::from_str(&std::fs::read_to_string(&logps_path).unwrap()).unwrap());

    let unclipped = output(&unclipped_store);
    let fraction = manifest(&unclipped)["metrics"]["pairs_chosen_dpo_return_higher"].as_f64().unwrap();
    assert_eq!(fraction, accuracy, "unclipped fraction vs DPO accuracy");
    assert_eq!(chosen_higher(&read_samples(&unclipped).unwrap()), accuracy);
    assert_eq!(read_metadata(&unclipped).unwrap()["rto.clip"], "inf");

    let clipped = output(&clipped_store);
    let clipped_fraction = manifest(&clipped)["metrics"]["pairs_chosen_dpo_return_higher"].as_f64().unwrap();
    assert_eq!(clipped_fraction, chosen_higher(&read_samples(&clipped).unwrap()));
    eprintln!("16 pairs: DPO accuracy {accuracy}, unclipped fraction {fraction}, clipped (c = 0.05) fraction {clipped_fraction}");
}
