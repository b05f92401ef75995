//! Per-token log-probabilities against transformers, the tokenizer/chat template against
//! transformers, and the errors a user sees for broken checkpoints.

use crate::common::*;
use rto_model::{response_logprobs, CausalLm, ChatTurn, Head, ModelConfig, SequenceBatch, TextTokenizer};
use std::path::Path;
use tch::{Device, Kind, Tensor};

fn load(dir: &Path) -> anyhow::Result<CausalLm> {
    CausalLm::load(dir, Head::LanguageModel, Device::Cpu, Kind::Float)
}

#[test]
fn response_logprobs_and_entropy_match_transformers_logits() {
    let hf = hf_model("qwen2-bias");
    let work = tempfile::tempdir().unwrap();
    let model = load(hf.path()).unwrap();
    let prompts = vec![vec![5, 17, 33, 8], vec![21, 3], vec![9, 9, 9]];
    let responses = vec![vec![40, 41, 2], vec![50, 51, 52, 53, 2], vec![60]];
    let batch = SequenceBatch::new(&prompts, &responses, 0, Device::Cpu).unwrap();
    let ours = tch::no_grad(|| response_logprobs(&model, &batch, true));

    let ids: Vec<Vec<i64>> = Vec::try_from(&batch.input_ids).unwrap();
    let mask: Vec<Vec<i64>> = Vec::try_from(&batch.attention_mask).unwrap();
    let batch_path = work.path().join("batch.json");
    write_batch(&batch_path, &ids, &mask);
    let out = work.path().join("logits.safetensors");
    reference(&["logits", hf.path().to_str().unwrap(), batch_path.to_str().unwrap(), out.to_str().unwrap()]);
    let logits = read_tensor(&out, "logits");
    for (row, response) in responses.iter().enumerate() {
        for (h, &token) in response.iter().enumerate() {
            let column = batch.prompt_width - 1 + h as i64;
            let dist = logits.get(row as i64).get(column).log_softmax(-1, Kind::Double);
            let expected = dist.double_value(&[token]);
            let expected_entropy = -(dist.exp() * &dist).sum(Kind::Double).double_value(&[]);
            let got = ours.logprobs.double_value(&[row as i64, h as i64]);
            let got_entropy = ours.entropy.as_ref().unwrap().double_value(&[row as i64, h as i64]);
            assert!((got - expected).abs() < 1e-4, "row {row} token {h}: {got} vs {expected}");
            assert!((got_entropy - expected_entropy).abs() < 1e-4, "entropy row {row} token {h}");
        }
        for h in response.len() as i64..batch.response_width {
            assert_eq!(ours.logprobs.double_value(&[row as i64, h]), 0.0, "padding gets zero");
        }
    }
}

#[test]
fn tokenizer_and_chat_template_match_transformers() {
    let dir = tempfile::tempdir().unwrap();
    reference(&["tokenizer", dir.path().to_str().unwrap()]);
    let messages = vec![
        ChatTurn { role: "system", content: "be brief" },
        ChatTurn { role: "user", content: "  the quick brown fox  " },
    ];
    let messages_path = dir.path().join("messages.json");
    std::fs::write(&messages_path, serde_json::to_string(&messages).unwrap()).unwrap();
    let out = dir.path().join("chat.json");
    reference(&["chat", dir.path().to_str().unwrap(), messages_path.to_str().unwrap(), out.to_str().unwrap()]);
    let theirs: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();

    let tokenizer = TextTokenizer::from_dir(dir.path()).unwrap();
    let text = tokenizer.apply_chat_template(&messages, true).unwrap();
    assert_eq!(text, theirs["text"].as_str().unwrap());
    let ids = tokenizer.encode_prompt(&messages).unwrap();
    let their_ids: Vec<i64> = serde_json::from_value(theirs["ids"].clone()).unwrap();
    assert_eq!(ids, their_ids);
    assert_eq!(tokenizer.eos_id, tokenizer.encode("</s>", false).unwrap().first().copied());
    assert!(tokenizer.decode(&ids, true).unwrap().contains("the quick brown fox"));

    let bad = vec![ChatTurn { role: "robot", content: "x" }];
    let err = format!("{:#}", tokenizer.apply_chat_template(&bad, true).unwrap_err());
    assert!(err.contains("bad role robot"), "raise_exception message is surfaced: {err}");
}

#[test]
fn tokenizer_larger_than_the_embedding_is_rejected() {
    let hf = hf_model("tied"); // vocab_size 97
    reference(&["tokenizer", hf.path().to_str().unwrap()]); // byte-level BPE: ids past 255
    let config = ModelConfig::from_file(&hf.path().join("config.json")).unwrap();
    let tokenizer = TextTokenizer::from_dir(hf.path()).unwrap();
    let err = tokenizer.check_fits(config.vocab_size, hf.path()).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json") && err.contains("config.json") && err.contains("97"), "{err}");
}

fn write_variant(from: &Path, to: &Path, edit: impl FnOnce(&mut std::collections::BTreeMap<String, Tensor>)) {
    let model = load(from).unwrap();
    let mut tensors = model.named_tensors();
    edit(&mut tensors);
    std::fs::create_dir_all(to).unwrap();
    std::fs::copy(from.join("config.json"), to.join("config.json")).unwrap();
    rto_model::weights::save(to, &tensors, Kind::Float, usize::MAX).unwrap();
}

#[test]
fn missing_tensor_names_file_and_tensor() {
    let hf = hf_model("llama-gqa");
    let broken = tempfile::tempdir().unwrap();
    write_variant(hf.path(), broken.path(), |t| {
        t.remove("model.layers.1.mlp.up_proj.weight");
    });
    let err = format!("{:#}", load(broken.path()).unwrap_err());
    assert!(err.contains("model.layers.1.mlp.up_proj.weight") && err.contains("missing"), "{err}");
    assert!(err.contains(broken.path().to_str().unwrap()), "names the folder: {err}");
}

#[test]
fn misshaped_tensor_names_file_tensor_and_shapes() {
    let hf = hf_model("llama-gqa");
    let broken = tempfile::tempdir().unwrap();
    write_variant(hf.path(), broken.path(), |t| {
        t.insert("model.layers.0.self_attn.k_proj.weight".into(), Tensor::zeros([8, 64], (Kind::Float, Device::Cpu)));
    });
    let err = format!("{:#}", load(broken.path()).unwrap_err());
    assert!(err.contains("model.layers.0.self_attn.k_proj.weight"), "{err}");
    assert!(err.contains("[8, 64]") && err.contains("[16, 64]"), "states both shapes: {err}");
    assert!(err.contains("model.safetensors"), "names the file: {err}");
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(&path, value.to_string()).unwrap();
}

#[test]
fn unsupported_config_values_are_named() {
    let hf = hf_model("llama-gqa");
    edit_config(hf.path(), |v| v["model_type"] = "gpt2".into());
    let err = format!("{:#}", load(hf.path()).unwrap_err());
    assert!(err.contains("model_type") && err.contains("gpt2") && err.contains("config.json"), "{err}");

    edit_config(hf.path(), |v| {
        v["model_type"] = "llama".into();
        v["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0});
    });
    let err = format!("{:#}", load(hf.path()).unwrap_err());
    assert!(err.contains("rope_scaling") && err.contains("yarn"), "{err}");

    edit_config(hf.path(), |v| {
        v["rope_scaling"] = serde_json::Value::Null;
        v["num_key_value_heads"] = 3.into();
    });
    let err = format!("{:#}", load(hf.path()).unwrap_err());
    assert!(err.contains("num_key_value_heads"), "{err}");
}

#[test]
fn folder_without_weights_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    ModelConfig::small_llama(32, 16, 32, 1, 2, 2, 64).to_file(&dir.path().join("config.json")).unwrap();
    let err = format!("{:#}", load(dir.path()).unwrap_err());
    assert!(err.contains("model.safetensors") && err.contains("model folder"), "{err}");
}
