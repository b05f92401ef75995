//! dpo-train with LoRA: adapters on a frozen base learn the planted preference, the output is a
//! PEFT adapter folder (plus `merged/`) that loads back, and bad LoRA flags fail by name.

use crate::dpo_common::*;
use crate::dpo_train::planted_preference_run;
use rto_model::{adapter, Head};
use tch::{Device, Kind};

#[test]
fn lora_dpo_learns_a_planted_preference_and_writes_a_peft_folder() {
    let work = tempfile::tempdir().unwrap();
    let lora = ["--lora-rank", "8", "--lora-alpha", "32", "--merge-lora"];
    let out = planted_preference_run(work.path(), "lora", &lora);
    let lines = metrics(&out);
    let first = lines[0]["train/rewards/accuracies"].as_f64().unwrap();
    let eval_accuracy = lines.last().unwrap()["eval/rewards/accuracies"].as_f64().unwrap();
    assert!(eval_accuracy > 0.9, "LoRA DPO eval accuracy {eval_accuracy} (first step's train accuracy {first})");
    for file in [
        "adapter_config.json",
        "adapter_model.safetensors",
        "config.json",
        "tokenizer.json",
        "merged/model.safetensors",
    ] {
        assert!(out.join(file).exists(), "{file} missing in {}", out.display());
    }
    assert!(!out.join("model.safetensors").exists(), "a LoRA run writes the adapter, not the full weights");
    let config = rto_test_support::read_json(&out.join("adapter_config.json"));
    assert_eq!((config["r"].as_i64(), config["task_type"].as_str()), (Some(8), Some("CAUSAL_LM")));
    let base = work.path().join("policy").canonicalize().unwrap();
    assert_eq!(config["base_model_name_or_path"].as_str(), base.to_str());
    // The manifest names the base by content key.
    let inputs = rto_test_support::manifest(&out)["inputs"].clone();
    assert!(inputs.as_array().unwrap().iter().any(|i| i["role"] == "model"), "{inputs}");
    // The adapter loads over its base, and the merged folder gives the same logits.
    let model = adapter::load(&out, Head::LanguageModel, Device::Cpu, Kind::Float).unwrap();
    let merged = rto_model::CausalLm::load(&out.join("merged"), Head::LanguageModel, Device::Cpu, Kind::Float).unwrap();
    let ids = tch::Tensor::from_slice2(&[[3i64, 4, 5, 6, 7]]);
    let mask = ids.ones_like();
    let (a, b) = tch::no_grad(|| (model.forward_logits(&ids, &mask), merged.forward_logits(&ids, &mask)));
    let err = (&a - &b).abs().max().double_value(&[]) / b.abs().max().double_value(&[]);
    assert!(err <= 1e-5, "merged folder differs from base + adapter by {err:e}");
    // Only the adapters moved: the base under the adapter is still the input policy.
    let base_model = rto_model::CausalLm::load(&base, Head::LanguageModel, Device::Cpu, Kind::Float).unwrap();
    let off = tch::no_grad(|| model.with_adapters_disabled(|| model.forward_logits(&ids, &mask)));
    assert!(off.equal(&tch::no_grad(|| base_model.forward_logits(&ids, &mask))));
}

#[test]
fn bad_lora_flags_fail_naming_the_flag() {
    let work = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let args = [&["--model", "no-model", "--data", "no-data"][..], extra].concat();
        format!("{:#}", run_dpo(&args).unwrap_err())
    };
    let err = run(&["--lora-alpha", "8"]);
    assert!(err.contains("--lora-alpha given but --lora-rank is 0"), "{err}");
    let err = run(&["--lora-rank", "4", "--lora-target-modules", "q_proj,attn"]);
    assert!(err.contains("--lora-target-modules") && err.contains("unknown LoRA target module `attn`"), "{err}");
    assert!(err.contains("q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj"), "{err}");
    drop(work);
}
