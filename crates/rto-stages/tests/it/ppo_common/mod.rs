//! Fixtures of the ppo-train tests: a word-level tokenizer written by hand (no Python), a tiny
//! random policy, and a DPO model and a reward model built by hand so that the reward has a
//! known optimum: emit the TARGET token.
//!
//! How the hand-built models work: with every `o_proj` and `down_proj` zeroed, a layer adds
//! nothing to the residual stream, so the final hidden state is the normalized embedding of
//! the current token (DPO model), or, with `q_proj = k_proj = 0` (uniform attention) and
//! `v_proj = o_proj = I`, that embedding plus the mean of the normalized embeddings of all
//! tokens so far (reward model). Embeddings are [1, is_target, 0, ...]:
//! - DPO model: `lm_head` reads only coordinate 0, which is large at every position, and only
//!   into the TARGET row, so the model puts ~0.8 of its mass on TARGET everywhere; against a
//!   near-uniform reference the clipped DPO reward is +c on TARGET and −c on other tokens;
//! - reward model: `score` reads coordinate 1, which grows with the fraction of TARGET tokens
//!   in the sequence, so the sentence reward rises monotonically (0 to ~3.5) with it.
#![allow(dead_code)]

use rto_model::{CausalLm, Head, ModelConfig};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

pub use crate::dpo_common::{manifest, metrics};

/// The one accepted ppo folder in `store`.
pub fn output(store: &Path) -> PathBuf {
    rto_test_support::stage_output(store, "ppo")
}

pub const VOCAB: i64 = 64;
pub const HIDDEN: i64 = 32;
pub const EOS: i64 = 2;
/// The token the hand-built reward favors (word "w6").
pub const TARGET: i64 = 10;
const SPECIALS: [&str; 4] = ["<pad>", "<s>", "</s>", "<unk>"];

pub fn word(id: i64) -> String {
    match id {
        0..4 => SPECIALS[id as usize].to_string(),
        _ => format!("w{}", id - 4),
    }
}

/// tokenizer.json: WordLevel over whitespace, specials first. `renamed` swaps one word's
/// text, giving a tokenizer that differs from the default one with the same vocabulary size.
pub fn tokenizer_json(renamed: Option<i64>) -> String {
    let mut vocab = Map::new();
    for id in 0..VOCAB {
        let text = if Some(id) == renamed { format!("x{id}") } else { word(id) };
        vocab.insert(text, json!(id));
    }
    let added: Vec<Value> = SPECIALS
        .iter()
        .enumerate()
        .map(|(id, t)| json!({"id": id, "content": t, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
        .collect();
    json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
    })
    .to_string()
}

pub fn write_tokenizer(dir: &Path, renamed: Option<i64>) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json(renamed)).unwrap();
    let config = json!({"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"});
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
}

fn config() -> ModelConfig {
    ModelConfig::small_llama(VOCAB, HIDDEN, 2 * HIDDEN, 1, 4, 4, 128)
}

/// Saves `model` into `dir` with the fixture tokenizer.
fn save(model: &CausalLm, dir: &Path) -> PathBuf {
    let tokenizer = dir.with_extension("tokenizer");
    write_tokenizer(&tokenizer, None);
    model.save(dir, Kind::Float, Some(&tokenizer)).unwrap();
    dir.to_path_buf()
}

/// Sets the named tensors of `model` (HF names; fused variables are written through views).
fn edit(model: &CausalLm, f: impl Fn(&str, &mut Tensor)) {
    tch::no_grad(|| {
        for (name, mut tensor) in model.named_tensors() {
            f(&name, &mut tensor);
        }
    });
}

/// A random policy (the "SFT" model). `scale` multiplies the std-0.02 init.
pub fn policy(dir: &Path, seed: u64, scale: f64) -> PathBuf {
    policy_with_bias(dir, seed, scale, 0.0)
}

/// [`policy`] whose embeddings share the coordinate 0 = `bias`: the final hidden states then
/// have a constant direction through which one `lm_head` weight acts as a logit bias. A
/// trained SFT model has such directions; a random one has none and learns any token
/// preference far more slowly.
pub fn policy_with_bias(dir: &Path, seed: u64, scale: f64, bias: f64) -> PathBuf {
    let model = CausalLm::random(config(), Head::LanguageModel, Device::Cpu, Kind::Float, seed).unwrap();
    edit(&model, |name, t| {
        if t.dim() == 2 {
            let _ = t.g_mul_scalar_(scale);
        }
        if name == "model.embed_tokens.weight" && bias != 0.0 {
            let _ = t.narrow(1, 0, 1).fill_(bias);
        }
    });
    save(&model, dir)
}

/// Residual writes off; embeddings [1, is_target, 0...].
fn pass_through(model: &CausalLm) {
    edit(model, |name, t| {
        if name.ends_with("o_proj.weight") || name.ends_with("down_proj.weight") {
            let _ = t.zero_();
        }
        if name == "model.embed_tokens.weight" {
            let _ = t.zero_();
            let _ = t.narrow(1, 0, 1).fill_(1.0);
            let _ = t.narrow(0, TARGET, 1).narrow(1, 1, 1).fill_(1.0);
        }
    });
}

/// A DPO model that puts most of its mass on TARGET at every position.
pub fn dpo_model(dir: &Path) -> PathBuf {
    let model = CausalLm::random(config(), Head::LanguageModel, Device::Cpu, Kind::Float, 0).unwrap();
    pass_through(&model);
    edit(&model, |name, t| {
        if name == "lm_head.weight" {
            let _ = t.zero_();
            let _ = t.narrow(0, TARGET, 1).narrow(1, 0, 1).fill_(1.0);
        }
    });
    save(&model, dir)
}

/// A reward model whose score rises with the fraction of TARGET tokens in the sequence.
pub fn reward_model(dir: &Path) -> PathBuf {
    let model = CausalLm::random(config(), Head::Score, Device::Cpu, Kind::Float, 0).unwrap();
    pass_through(&model);
    let eye = Tensor::eye(HIDDEN, (Kind::Float, Device::Cpu));
    edit(&model, |name, t| {
        if name.ends_with("q_proj.weight") || name.ends_with("k_proj.weight") {
            let _ = t.zero_();
        }
        if name.ends_with("v_proj.weight") || name.ends_with("o_proj.weight") {
            t.copy_(&eye);
        }
        if name == "score.weight" {
            let _ = t.zero_();
            let _ = t.narrow(1, 1, 1).fill_(1.0);
        }
    });
    save(&model, dir)
}

/// A copy of the model folder `from` with one weight of `tensor` set to NaN.
pub fn with_nan(from: &Path, to: &Path, head: Head, tensor: &str) -> PathBuf {
    let model = CausalLm::load(from, head, Device::Cpu, Kind::Float).unwrap();
    edit(&model, |name, t| {
        if name == tensor {
            let _ = t.view([-1]).narrow(0, 0, 1).fill_(f64::NAN);
        }
    });
    model.save(to, Kind::Float, Some(from)).unwrap();
    to.to_path_buf()
}

/// `n` JSONL prompts of `len` random words, never TARGET or a special token.
pub fn prompts(path: &Path, n: usize, len: usize, seed: u64) -> PathBuf {
    let mut rng = rto_data::dataset::SplitMix64::new(seed);
    let text: String = (0..n)
        .map(|_| {
            let words: Vec<String> = (0..len).map(|_| word(20 + rng.below((VOCAB - 20) as u64) as i64)).collect();
            format!("{}\n", json!({"prompt": words.join(" ")}))
        })
        .collect();
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

/// The three models and a prompt file in `dir`.
pub struct Fixture {
    pub policy: PathBuf,
    pub dpo: PathBuf,
    pub reward_model: PathBuf,
    pub prompts: PathBuf,
}

pub fn fixture(dir: &Path) -> Fixture {
    Fixture {
        policy: policy_with_bias(&dir.join("policy"), 7, 1.0, 0.1),
        dpo: dpo_model(&dir.join("dpo")),
        reward_model: reward_model(&dir.join("rm")),
        prompts: prompts(&dir.join("prompts.jsonl"), 64, 4, 3),
    }
}

/// Flags of a small run on `fixture` into `store`; tests append their own.
pub fn base_args(f: &Fixture, store: &Path) -> Vec<String> {
    let mut args: Vec<String> = vec!["--store".into(), store.display().to_string()];
    for (flag, path) in
        [("--policy", &f.policy), ("--dpo", &f.dpo), ("--reward-model", &f.reward_model), ("--prompts", &f.prompts)]
    {
        args.push(flag.into());
        args.push(path.display().to_string());
    }
    let small = "--rollout-batch-size 16 --train-batch-size 8 --micro-batch-size 4 --max-new-tokens 8 --max-prompt-len 16 --iterations 2 --actor-lr 1e-3 --critic-lr 1e-3";
    args.extend(small.split(' ').map(String::from));
    args
}

/// `args` with `--flag value` set (replaced when present).
/// `--flag value` set or replaced; an empty value adds a switch such as `--bf16`.
pub fn set(mut args: Vec<String>, flag: &str, value: &str) -> Vec<String> {
    match args.iter().position(|a| a == flag) {
        Some(_) if value.is_empty() => {}
        Some(i) => args[i + 1] = value.to_string(),
        None if value.is_empty() => args.push(flag.to_string()),
        None => args.extend([flag.to_string(), value.to_string()]),
    }
    args
}

/// Runs the stage in-process.
pub fn run_ppo(args: &[String]) -> anyhow::Result<()> {
    run_judged(args, None)
}

/// [`run_ppo`] with a judge plugged in.
pub fn run_judged(args: &[String], judge: Option<&dyn rto_stages::ppo::ResponseJudge>) -> anyhow::Result<()> {
    let argv: Vec<std::ffi::OsString> =
        std::iter::once("ppo-train".to_string()).chain(args.iter().cloned()).map(Into::into).collect();
    rto_stages::ppo::cli_with_judge(rto_data::cli::parse_with_config_from(argv)?, judge)
}

/// A judge that scores the fraction of response words that are TARGET.
pub struct TargetJudge;

impl rto_stages::ppo::ResponseJudge for TargetJudge {
    fn score(&self, _prompt: &str, response: &str) -> f64 {
        let words: Vec<&str> = response.split_whitespace().collect();
        words.iter().filter(|w| **w == word(TARGET)).count() as f64 / words.len().max(1) as f64
    }

    fn name(&self) -> String {
        "target-fraction".into()
    }
}

/// Mean of `key` over metric lines `range`.
pub fn mean_of(lines: &[Value], key: &str, range: std::ops::Range<usize>) -> f64 {
    let values: Vec<f64> =
        lines[range].iter().map(|l| l[key].as_f64().unwrap_or_else(|| panic!("no `{key}` in {l}"))).collect();
    values.iter().sum::<f64>() / values.len() as f64
}
