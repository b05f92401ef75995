//! The free reference with LoRA: the reference and a DPO adapter over a LoRA policy's base
//! stand on the policy's base tensors (no second copy), and price tokens exactly as the two
//! separately loaded models of the two-copy path do.

use crate::ppo_common::*;
use rto_algo::{RewardMode, RewardWeights};
use rto_model::lora::TARGET_MODULES;
use rto_model::{adapter, response_logprobs, CausalLm, Head, LoraConfig, SequenceBatch};
use rto_rng::SplitMix64;
use rto_stages::token_scoring::{score_batch, BaseDonor, BatchScores, RewardModels};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// `dir`'s model with rank-4 adapters whose B matrices are random (so they change the
/// outputs: a fresh adapter would leave them those of the base).
fn adapted(dir: &Path, seed: u64) -> CausalLm {
    with_random_adapters(CausalLm::load(dir, Head::LanguageModel, Device::Cpu, Kind::Float).unwrap(), seed)
}

/// `model` with rank-4 adapters, their B matrices (and a score head) random.
fn with_random_adapters(mut model: CausalLm, seed: u64) -> CausalLm {
    let targets: Vec<String> = TARGET_MODULES.iter().map(|t| t.to_string()).collect();
    model.add_lora(LoraConfig::new(4, 8.0, 0.0, &targets).unwrap(), seed).unwrap();
    let mut rng = SplitMix64::new(seed);
    for (name, tensor) in model.adapter_tensors() {
        if name.contains(".lora_B.") || name == "score.weight" {
            let values: Vec<f32> = (0..tensor.numel()).map(|_| (rng.next_f64() - 0.5) as f32).collect();
            let values = Tensor::from_slice(&values).view(tensor.size().as_slice());
            tch::no_grad(|| tensor.shallow_clone().copy_(&values));
        }
    }
    model
}

/// An adapter folder over `base` (see [`adapted`]).
fn adapter_folder(base: &Path, out: &Path, seed: u64) -> PathBuf {
    let model = adapted(base, seed);
    adapter::save(&model, out, &base.canonicalize().unwrap(), Kind::Float, Some(base)).unwrap();
    out.to_path_buf()
}

/// A reward-model adapter folder over `base`: random adapters and score head.
fn reward_adapter_folder(base: &Path, out: &Path, seed: u64) -> PathBuf {
    let model = with_random_adapters(CausalLm::load_as_value_model(base, Device::Cpu, Kind::Float).unwrap(), seed);
    adapter::save(&model, out, &base.canonicalize().unwrap(), Kind::Float, Some(base)).unwrap();
    out.to_path_buf()
}

fn batch() -> SequenceBatch {
    SequenceBatch::new(&[vec![20, 21, 22], vec![23, 24]], &[vec![TARGET, 30, EOS], vec![31]], 0, Device::Cpu).unwrap()
}

fn scores(models: &RewardModels, policy: &CausalLm) -> BatchScores {
    let batch = batch();
    let logp_policy = tch::no_grad(|| response_logprobs(policy, &batch, false).logprobs);
    let weights = RewardWeights { beta2: 0.1, ..RewardWeights::default() };
    score_batch(models, &(&batch).into(), Some(logp_policy), RewardMode::Rto, &weights).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// Asserts the shared and two-copy scores agree on every input and reward within 1e-6 of their
/// scale (the fixture's log-probs reach tens of nats, where one f32 ulp is ~2e-6: the GEMMs
/// may round differently on other buffers).
fn assert_same_scores(shared: &BatchScores, separate: &BatchScores, case: &str) {
    let pairs = [
        ("logp_ref", &shared.logp_ref, &separate.logp_ref),
        ("logp_dpo", shared.logp_dpo.as_ref().unwrap(), separate.logp_dpo.as_ref().unwrap()),
        ("reward", &shared.rewards.reward, &separate.rewards.reward),
    ];
    for (what, a, b) in pairs {
        let diff = max_diff(a, b) / b.abs().max().double_value(&[]).max(1.0);
        assert!(diff <= 1e-6, "{case}: {what} differs from the two-copy path by {diff:e} (relative)");
    }
}

fn embedding_ptr(model: &CausalLm) -> usize {
    model.decoder.embedding().data_ptr() as usize
}

#[test]
fn the_reference_and_a_dpo_adapter_stand_on_the_lora_policys_base() {
    let dir = tempfile::tempdir().unwrap();
    let base = policy(&dir.path().join("policy"), 11, 25.0);
    let dpo = adapter_folder(&base, &dir.path().join("dpo"), 5);
    let separate = RewardModels::load(&base, Some(&dpo), None, Device::Cpu, Kind::Float).unwrap();

    // ppo-train --lora-rank on a full folder: the reference is the base itself.
    let policy = adapted(&base, 3);
    let donor = BaseDonor { dir: &base, model: &policy };
    let shared = RewardModels::load_over(&base, Some(&dpo), None, Device::Cpu, Kind::Float, Some(donor)).unwrap();
    for (what, model) in [("reference", &shared.reference), ("dpo", shared.dpo.as_ref().unwrap())] {
        assert_eq!(embedding_ptr(model), embedding_ptr(&policy), "the {what} holds its own copy of the base");
    }
    let (with_shared, with_separate) = (scores(&shared, &policy), scores(&separate, &policy));
    assert_same_scores(&with_shared, &with_separate, "--lora-rank on a full folder");
    // The case can fail: the adapters move the policy and the DPO model away from the base.
    let kl_input = max_diff(with_shared.logp_policy.as_ref().unwrap(), &with_shared.logp_ref);
    let dpo_input = max_diff(with_shared.logp_dpo.as_ref().unwrap(), &with_shared.logp_ref);
    assert!(kl_input > 1e-3 && dpo_input > 1e-3, "adapters change nothing ({kl_input:e}, {dpo_input:e})");

    // --policy an adapter folder: the reference is that adapter on the base (the initial policy).
    let folder = adapter_folder(&base, &dir.path().join("policy-adapter"), 7);
    let policy = adapter::load(&folder, Head::LanguageModel, Device::Cpu, Kind::Float).unwrap();
    let donor = BaseDonor { dir: &folder, model: &policy };
    let shared = RewardModels::load_over(&folder, Some(&dpo), None, Device::Cpu, Kind::Float, Some(donor)).unwrap();
    let separate = RewardModels::load(&folder, Some(&dpo), None, Device::Cpu, Kind::Float).unwrap();
    assert_eq!(embedding_ptr(&shared.reference), embedding_ptr(&policy));
    assert_eq!(embedding_ptr(shared.dpo.as_ref().unwrap()), embedding_ptr(&policy));
    assert_same_scores(&scores(&shared, &policy), &scores(&separate, &policy), "--policy an adapter folder");
}

#[test]
fn annotates_dpo_adapter_stands_on_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let base = policy(&dir.path().join("sft"), 11, 25.0);
    let dpo = adapter_folder(&base, &dir.path().join("dpo"), 5);
    let plain = dpo_model(&dir.path().join("full-dpo"));
    // Without a donor the DPO adapter stands on the reference's base; a full DPO folder does not.
    let models = RewardModels::load(&base, Some(&dpo), None, Device::Cpu, Kind::Float).unwrap();
    assert_eq!(embedding_ptr(models.dpo.as_ref().unwrap()), embedding_ptr(&models.reference));
    let own = RewardModels::load(&base, Some(&plain), None, Device::Cpu, Kind::Float).unwrap();
    assert_ne!(embedding_ptr(own.dpo.as_ref().unwrap()), embedding_ptr(&own.reference));
    // Against the two-copy forward: the adapter loaded over its own copy of the base.
    let alone = adapter::load(&dpo, Head::LanguageModel, Device::Cpu, Kind::Float).unwrap();
    let batch = batch();
    let (a, b) = tch::no_grad(|| {
        (
            response_logprobs(models.dpo.as_ref().unwrap(), &batch, false).logprobs,
            response_logprobs(&alone, &batch, false).logprobs,
        )
    });
    assert!(max_diff(&a, &b) <= 1e-6, "{:e}", max_diff(&a, &b));
}

/// A reward model trained with `rm-train --lora-rank` over the policy's base is one more
/// adapter on that base: it stands on the policy's base tensors (ppo-train) or the reference's
/// (annotate) and scores as the separately loaded model does.
#[test]
fn a_reward_model_adapter_stands_on_the_shared_base() {
    let dir = tempfile::tempdir().unwrap();
    let base = policy(&dir.path().join("policy"), 11, 25.0);
    let dpo = adapter_folder(&base, &dir.path().join("dpo"), 5);
    let rm = reward_adapter_folder(&base, &dir.path().join("rm"), 9);
    let separate = RewardModels::load(&base, Some(&dpo), Some(&rm), Device::Cpu, Kind::Float).unwrap();
    let policy = adapted(&base, 3);
    let donor = BaseDonor { dir: &base, model: &policy };
    let shared = RewardModels::load_over(&base, Some(&dpo), Some(&rm), Device::Cpu, Kind::Float, Some(donor)).unwrap();
    let (shared_rm, separate_rm) = (shared.reward_model.as_ref().unwrap(), separate.reward_model.as_ref().unwrap());
    assert_eq!(embedding_ptr(shared_rm), embedding_ptr(&policy), "the reward model holds its own copy of the base");
    // Without a donor (annotate) the reward model stands on the reference's base.
    assert_eq!(embedding_ptr(separate_rm), embedding_ptr(&separate.reference));
    let (with_shared, with_separate) = (scores(&shared, &policy), scores(&separate, &policy));
    assert_same_scores(&with_shared, &with_separate, "a reward-model adapter");
    let batch = batch();
    let (a, b) =
        (shared.sentence_rewards(&(&batch).into()).unwrap(), separate.sentence_rewards(&(&batch).into()).unwrap());
    assert!(max_diff(&a, &b) <= 1e-6 * b.abs().max().double_value(&[]).max(1.0), "sentence scores differ");
    // The case can fail: the adapters and the score head give the responses distinct scores.
    let spread = (a.get(0) - a.get(1)).abs().double_value(&[]);
    assert!(spread > 1e-4, "the reward adapter scores both responses alike ({spread:e})");
}
