//! LoRA adapters against PEFT on tiny random checkpoints: our adapter loaded by PEFT, PEFT's
//! adapter loaded by us, merged folders, the switch, and what trains.

use crate::common::*;
use rto_model::lora::TARGET_MODULES;
use rto_model::{adapter, CausalLm, Head, LoraConfig};
use rto_rng::{SplitMix64, Stream};
use std::path::Path;
use tch::{Device, Kind, Tensor};

fn peft(args: &[&str]) {
    rto_test_support::python_script("peft_reference.py", args);
}

fn batch() -> (Tensor, Tensor, Vec<Vec<i64>>, Vec<Vec<i64>>) {
    let ids = vec![vec![0, 0, 5, 17, 33, 8, 91], vec![21, 3, 77, 45, 9, 30, 2]];
    let mask = vec![vec![0, 0, 1, 1, 1, 1, 1], vec![1, 1, 1, 1, 1, 1, 1]];
    (Tensor::from_slice2(&ids), Tensor::from_slice2(&mask), ids, mask)
}

fn all_targets() -> Vec<String> {
    TARGET_MODULES.iter().map(|s| s.to_string()).collect()
}

fn logits(model: &CausalLm) -> Tensor {
    let (ids, mask, _, _) = batch();
    tch::no_grad(|| model.forward_logits(&ids, &mask))
}

/// PEFT's logits of `base` + `adapter_dir` on the test batch.
fn peft_logits(base: &Path, adapter_dir: &Path, work: &Path) -> Tensor {
    let (_, _, ids, mask) = batch();
    let batch_path = work.join("batch.json");
    write_batch(&batch_path, &ids, &mask);
    let out = work.join("peft.safetensors");
    let args = ["logits", base.to_str().unwrap(), adapter_dir.to_str().unwrap(), batch_path.to_str().unwrap()];
    peft(&[&args[..], &[out.to_str().unwrap()]].concat());
    read_tensor(&out, "logits")
}

/// Gives every B matrix (and the score head) seeded normal values, as training would.
fn randomize_adapter(model: &CausalLm) {
    for (i, (_, tensor)) in model.adapter_tensors().into_iter().enumerate() {
        let mut values = vec![0f32; tensor.numel()];
        SplitMix64::for_stream(5, Stream::Synthetic, i as u64).fill_normal(&mut values, 0.0, 0.3);
        let source = Tensor::from_slice(&values).view(tensor.size().as_slice());
        tch::no_grad(|| tensor.shallow_clone().copy_(&source));
    }
}

fn rel_error(ours: &Tensor, theirs: &Tensor) -> f64 {
    let (_, mask, _, _) = batch();
    masked_rel_error(ours, theirs, &mask)
}

#[test]
fn a_fresh_adapter_is_the_base_and_switched_off_is_the_base() {
    let hf = hf_model("llama-gqa");
    let mut model = CausalLm::load(hf.path(), Head::LanguageModel, Device::Cpu, Kind::Float).unwrap();
    let base = logits(&model);
    model.add_lora(LoraConfig::new(4, 8.0, 0.0, &all_targets()).unwrap(), 3).unwrap();
    assert!(logits(&model).equal(&base), "B = 0 must leave the outputs exactly the base's");
    randomize_adapter(&model);
    let adapted = logits(&model);
    assert!(rel_error(&adapted, &base) > 1e-2, "a non-zero adapter must change the logits");
    let off = model.with_adapters_disabled(|| logits(&model));
    assert!(off.equal(&base), "adapters off must give the base's logits bitwise");
    assert!(logits(&model).equal(&adapted), "the switch must come back on after the closure");
}

#[test]
fn peft_loads_our_adapter_and_gives_our_logits() {
    let hf = hf_model("qwen2-bias");
    let work = tempfile::tempdir().unwrap();
    let mut model = CausalLm::load(hf.path(), Head::LanguageModel, Device::Cpu, Kind::Float).unwrap();
    let targets: Vec<String> = ["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"].map(String::from).to_vec();
    model.add_lora(LoraConfig::new(4, 16.0, 0.0, &targets).unwrap(), 3).unwrap();
    randomize_adapter(&model);
    let ours = logits(&model);
    let dir = work.path().join("adapter");
    adapter::save(&model, &dir, hf.path(), Kind::Float, None).unwrap();
    let names = rto_model::weights::file_tensor_names(&dir.join("adapter_model.safetensors")).unwrap();
    assert!(names.contains(&"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight".to_string()), "{names:?}");
    assert_eq!(names.len(), 2 * 5 * 2, "A and B of 5 modules in 2 layers: {names:?}");
    let theirs = peft_logits(hf.path(), &dir, work.path());
    let err = rel_error(&ours, &theirs);
    assert!(err <= 1e-4, "peft on our adapter differs by {err:e}");
    // And back: our loader on our folder gives the same numbers.
    let reloaded = adapter::load(&dir, Head::LanguageModel, Device::Cpu, Kind::Float).unwrap();
    assert!(logits(&reloaded).equal(&ours));
}

#[test]
fn we_load_a_peft_adapter_and_give_its_logits_and_merge_as_peft_does() {
    let hf = hf_model("llama-gqa");
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("peft-adapter");
    peft(&["make", hf.path().to_str().unwrap(), dir.to_str().unwrap(), "q_proj,k_proj,gate_proj,down_proj"]);
    let model = adapter::load(&dir, Head::LanguageModel, Device::Cpu, Kind::Float).unwrap();
    assert_eq!(model.lora().unwrap().targets, ["q_proj", "k_proj", "gate_proj", "down_proj"]);
    let ours = logits(&model);
    let theirs = peft_logits(hf.path(), &dir, work.path());
    let err = rel_error(&ours, &theirs);
    assert!(err <= 1e-4, "our forward of peft's adapter differs by {err:e}");

    // Our merged folder in transformers equals peft's merge_and_unload in transformers.
    let ours_merged = work.path().join("ours-merged");
    model.save_merged(&ours_merged, Kind::Float, None).unwrap();
    let peft_merged = work.path().join("peft-merged");
    peft(&["merge", hf.path().to_str().unwrap(), dir.to_str().unwrap(), peft_merged.to_str().unwrap()]);
    let (_, _, ids, mask) = batch();
    let batch_path = work.path().join("batch.json");
    write_batch(&batch_path, &ids, &mask);
    let hf_logits = |folder: &Path, name: &str| {
        let out = work.path().join(name);
        reference(&["logits", folder.to_str().unwrap(), batch_path.to_str().unwrap(), out.to_str().unwrap()]);
        read_tensor(&out, "logits")
    };
    let merged_ours = hf_logits(&ours_merged, "a.safetensors");
    let merged_peft = hf_logits(&peft_merged, "b.safetensors");
    let err = rel_error(&merged_ours, &merged_peft);
    assert!(err <= 1e-5, "our merged folder differs from peft's merge_and_unload by {err:e}");
    assert!(rel_error(&merged_ours, &ours) <= 1e-4, "merged = base + adapter");

    // In place: the merged model gives the adapted logits, and its adapters now add nothing.
    let mut merged = model;
    merged.merge_lora();
    assert!(rel_error(&logits(&merged), &ours) <= 1e-5);
    let off = merged.with_adapters_disabled(|| logits(&merged));
    assert!(logits(&merged).equal(&off));
}

#[test]
fn a_score_head_adapter_matches_peft_seq_cls() {
    let hf = hf_model("llama-gqa");
    let work = tempfile::tempdir().unwrap();
    let mut model = CausalLm::load_as_value_model(hf.path(), Device::Cpu, Kind::Float).unwrap();
    model.add_lora(LoraConfig::new(2, 4.0, 0.0, &all_targets()).unwrap(), 1).unwrap();
    let trainable: Vec<String> =
        model.vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).map(|(n, _)| n).collect();
    assert!(trainable.contains(&"score.weight".to_string()), "the score head trains in full: {trainable:?}");
    assert_eq!(trainable.len(), 7 * 2 * 2 + 1, "adapters of 7 modules in 2 layers + score: {trainable:?}");
    randomize_adapter(&model);
    let dir = work.path().join("rm-adapter");
    adapter::save(&model, &dir, hf.path(), Kind::Float, None).unwrap();
    let config = rto_test_support::read_json(&dir.join("adapter_config.json"));
    assert_eq!(config["task_type"], "SEQ_CLS");
    assert_eq!(config["modules_to_save"], serde_json::json!(["score"]));
    let (ids, mask, ids_v, mask_v) = batch();
    let ours = tch::no_grad(|| model.score(&model.hidden_states(&ids, &mask)));
    let batch_path = work.path().join("batch.json");
    write_batch(&batch_path, &ids_v, &mask_v);
    let out = work.path().join("scores.safetensors");
    peft(&[
        "scores",
        hf.path().to_str().unwrap(),
        dir.to_str().unwrap(),
        batch_path.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    let theirs = read_tensor(&out, "scores");
    let err = masked_rel_error(&ours.unsqueeze(-1), &theirs.unsqueeze(-1), &mask);
    assert!(err <= 1e-4, "peft's SEQ_CLS scores differ by {err:e}");
    let reloaded = adapter::load_value_model(&dir, Device::Cpu, Kind::Float).unwrap();
    let again = tch::no_grad(|| reloaded.score(&reloaded.hidden_states(&ids, &mask)));
    assert!(again.equal(&ours));
}

#[test]
fn only_adapters_get_gradients_and_checkpointing_gives_the_same_ones() {
    let hf = hf_model("llama-gqa");
    let grads = |checkpointing: bool| {
        let mut model = CausalLm::load(hf.path(), Head::LanguageModel, Device::Cpu, Kind::Float).unwrap();
        model.add_lora(LoraConfig::new(4, 8.0, 0.0, &all_targets()).unwrap(), 3).unwrap();
        randomize_adapter(&model);
        model.set_gradient_checkpointing(checkpointing);
        let (ids, mask, _, _) = batch();
        let loss = model.forward_logits(&ids, &mask).log_softmax(-1, Kind::Float).mean(Kind::Float);
        model.backward(&loss);
        for (name, tensor) in model.named_tensors() {
            assert!(!tensor.grad().defined(), "base tensor {name} got a gradient");
        }
        model.adapter_tensors().into_iter().map(|(n, t)| (n, t.grad().copy())).collect::<Vec<_>>()
    };
    let plain = grads(false);
    let recomputed = grads(true);
    assert_eq!(plain.len(), 28);
    for ((name, a), (_, b)) in plain.iter().zip(&recomputed) {
        assert!(a.defined() && a.abs().max().double_value(&[]) > 0.0, "{name} got no gradient");
        let err = (a - b).abs().max().double_value(&[]) / a.abs().max().double_value(&[]);
        assert!(err <= 1e-5, "{name}: checkpointed gradient differs by {err:e}");
    }
}

#[test]
fn bad_adapters_fail_naming_the_problem() {
    let err = LoraConfig::new(4, 8.0, 0.0, &["qkv_proj".to_string()]).unwrap_err().to_string();
    assert!(err.contains("unknown LoRA target module `qkv_proj`") && err.contains("q_proj, k_proj"), "{err}");
    assert!(LoraConfig::new(0, 8.0, 0.0, &all_targets()).unwrap_err().to_string().contains("rank must be > 0"));

    let gqa = hf_model("llama-gqa");
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("adapter");
    peft(&["make", gqa.path().to_str().unwrap(), dir.to_str().unwrap(), "k_proj,v_proj"]);
    // Shape: the same adapter over a base whose k/v projections are wider (no GQA).
    let other = hf_model("qwen2-bias");
    let config_path = dir.join("adapter_config.json");
    let mut config = rto_test_support::read_json(&config_path);
    config["base_model_name_or_path"] = other.path().to_str().unwrap().into();
    std::fs::write(&config_path, config.to_string()).unwrap();
    let err = format!("{:#}", adapter::load(&dir, Head::LanguageModel, Device::Cpu, Kind::Float).unwrap_err());
    assert!(
        err.contains("_proj.lora_B.weight` has shape [16, 4]") && err.contains("is the adapter made for this base?"),
        "{err}"
    );
    // Key: the config no longer names a module the file has tensors for.
    config["base_model_name_or_path"] = gqa.path().to_str().unwrap().into();
    config["target_modules"] = serde_json::json!(["k_proj"]);
    std::fs::write(&config_path, config.to_string()).unwrap();
    let err = format!("{:#}", adapter::load(&dir, Head::LanguageModel, Device::Cpu, Kind::Float).unwrap_err());
    assert!(err.contains("v_proj.lora_A.weight") && err.contains("matches no module of the base"), "{err}");
    // A base that is not there.
    config["base_model_name_or_path"] = "no-such-base".into();
    std::fs::write(&config_path, config.to_string()).unwrap();
    let err = format!("{:#}", adapter::load(&dir, Head::LanguageModel, Device::Cpu, Kind::Float).unwrap_err());
    assert!(err.contains("\"no-such-base\" is not a model folder"), "{err}");
}
