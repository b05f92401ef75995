//! Pricing response tokens: the forwards of the reference, DPO and reward models on a batch,
//! handed to the one RTO reward composition (`rto_algo::compose`), and the conversion of the
//! result into token-reward table rows. token-reward-annotate and ppo-train both come here,
//! so the table a user inspects and the reward PPO optimizes cannot drift apart; for the same
//! reason the reward's flags ([`RewardConfig`]) and the tables' `rto.*` metadata
//! ([`RewardMetadata`]) are defined here once for both.

mod config;
mod metadata;

pub use config::RewardConfig;
pub use metadata::RewardMetadata;

use anyhow::{bail, Context, Result};
use rto_algo::{compose, RewardMode, RewardWeights, TokenRewardInputs, TokenRewards};
use rto_data::token_table::{SampleRecord, TokenRecord};
use rto_model::packing::ForwardBatch;
use rto_model::{CausalLm, Head, TextTokenizer};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// The models that price tokens (DESIGN.md §4): π_ref (the SFT model), the DPO model, and the
/// sentence-level reward model with its stored normalization.
pub struct RewardModels {
    pub reference: CausalLm,
    pub dpo: Option<CausalLm>,
    pub reward_model: Option<CausalLm>,
    reward_normalization: Option<(f64, f64)>,
}

impl RewardModels {
    /// Loads the models in `kind` (their logits and scores are read in fp32 whatever it is).
    /// Callers first check that they belong together ([`crate::compat::check_models`]),
    /// before the store is touched.
    pub fn load(
        reference: &Path,
        dpo: Option<&Path>,
        reward_model: Option<&Path>,
        device: Device,
        kind: Kind,
    ) -> Result<Self> {
        Self::load_over(reference, dpo, reward_model, device, kind, None)
    }

    /// [`Self::load`], the reference, the DPO model and the reward model standing on `base`'s
    /// weights when they are over its base folder (ppo-train: the LoRA policy), and the DPO and
    /// reward models on the reference's when they are over the reference's base (adapters of
    /// it): no second copy of a base (see [`load_lm`]).
    pub fn load_over(
        reference: &Path,
        dpo: Option<&Path>,
        reward_model: Option<&Path>,
        device: Device,
        kind: Kind,
        base: Option<BaseDonor<'_>>,
    ) -> Result<Self> {
        let reference_dir = reference;
        let reference = load_lm(reference, base, device, kind)?;
        let donor = base.unwrap_or(BaseDonor { dir: reference_dir, model: &reference });
        let dpo = dpo.map(|d| load_lm(d, Some(donor), device, kind)).transpose()?;
        let reward_model = reward_model.map(|d| load_frozen(d, Head::Score, Some(donor), device, kind)).transpose()?;
        let reward_normalization = reward_model.as_ref().and_then(|m| m.config.reward_normalization());
        Ok(Self { reference, dpo, reward_model, reward_normalization })
    }

    /// Reward-model scores [B], normalized with the stored eval mean/std when there are some.
    pub fn sentence_rewards(&self, batch: &ForwardBatch) -> Option<Tensor> {
        let model = self.reward_model.as_ref()?;
        let raw = batch.sequence_scores(model);
        Some(match self.reward_normalization {
            Some((mean, std)) => (raw - mean) / std.max(1e-8),
            None => raw,
        })
    }
}

/// A loaded model that lends its base weights to the frozen models over the same base folder:
/// its folder and the model (whose base weights stay frozen while they are used).
#[derive(Clone, Copy)]
pub struct BaseDonor<'a> {
    pub dir: &'a Path,
    pub model: &'a CausalLm,
}

/// Loads the causal-LM folder (or adapter folder) `dir` for forwards without gradients: on
/// `donor`'s base weights when `dir` stands on the same base folder (the base itself is the
/// donor with adapters off, an adapter adds only its own tensors), else from disk.
pub fn load_lm(dir: &Path, donor: Option<BaseDonor<'_>>, device: Device, kind: Kind) -> Result<CausalLm> {
    load_frozen(dir, Head::LanguageModel, donor, device, kind)
}

/// [`load_lm`] with any head: a reward-model adapter over the donor's base gets its own score
/// head and adapters on the donor's base tensors.
pub fn load_frozen(
    dir: &Path,
    head: Head,
    donor: Option<BaseDonor<'_>>,
    device: Device,
    kind: Kind,
) -> Result<CausalLm> {
    if let Some(donor) = donor {
        if shares_base(dir, head, donor.dir)? {
            return rto_model::adapter::load_sharing(dir, donor.model, head).with_context(|| {
                format!("loading {} over the base weights of {}", dir.display(), donor.dir.display())
            });
        }
    }
    rto_model::adapter::load(dir, head, device, kind)
}

/// Whether the frozen model `dir` with `head` stands on the base weights of the model in
/// `donor_dir`: an adapter over that base, or, for an LM head, that very folder (the base with
/// adapters off). A full folder with a score head never does: its head must come from disk,
/// where a missing `score.weight` is the error it should be.
pub fn shares_base(dir: &Path, head: Head, donor_dir: &Path) -> Result<bool> {
    let own_head_on_disk = head == Head::Score && !rto_model::adapter::is_adapter(dir);
    Ok(!own_head_on_disk && rto_model::adapter::same_base(dir, donor_dir)?)
}

/// Everything known about a batch's tokens: the log-probs that went in and the rewards out.
pub struct BatchScores {
    pub logp_ref: Tensor,
    pub logp_dpo: Option<Tensor>,
    pub logp_policy: Option<Tensor>,
    /// Normalized reward-model score per row (before the ±clamp of the composition).
    pub sentence_reward: Option<Tensor>,
    pub rewards: TokenRewards,
    /// How long the reference, DPO and reward-model forwards took.
    pub times: ForwardTimes,
}

/// Scores `batch` with `models` (no gradients). `logp_policy` [B, R] comes from the caller
/// (ppo-train has it from the rollout; annotate computes it from `--policy`).
pub fn score_batch(
    models: &RewardModels,
    batch: &ForwardBatch,
    logp_policy: Option<Tensor>,
    mode: RewardMode,
    weights: &RewardWeights,
) -> Result<BatchScores> {
    tch::no_grad(|| {
        let mut times = ForwardTimes::on(batch.batch.input_ids.device());
        let logp_ref = times.time("reference", || batch.logprobs(&models.reference, false).logprobs);
        let logp_dpo = models.dpo.as_ref().map(|m| times.time("dpo", || batch.logprobs(m, false).logprobs));
        let sentence_reward = times.time("reward_model", || models.sentence_rewards(batch));
        for (name, tensor) in [
            ("reference", Some(&logp_ref)),
            ("DPO", logp_dpo.as_ref()),
            ("policy", logp_policy.as_ref()),
            ("reward", sentence_reward.as_ref()),
        ] {
            if let Some(t) = tensor {
                if !bool::try_from(t.isfinite().all())? {
                    bail!("the {name} model produced non-finite values on this batch");
                }
            }
        }
        let inputs = TokenRewardInputs {
            logp_ref: &logp_ref,
            logp_dpo: logp_dpo.as_ref(),
            logp_policy: logp_policy.as_ref(),
            sentence_reward: sentence_reward.as_ref(),
            mask: &batch.batch.response_mask,
        };
        let rewards = compose(mode, weights, &inputs)?;
        Ok(BatchScores { logp_ref, logp_dpo, logp_policy, sentence_reward, rewards, times })
    })
}

/// Seconds each model's forward took, by model name (`reference`, `dpo`, `reward_model`,
/// `policy`, `critic`), summed over the batches timed. On CUDA the clock waits for the device.
#[derive(Debug, Clone)]
pub struct ForwardTimes {
    device: Device,
    pub seconds: BTreeMap<&'static str, f64>,
}

impl ForwardTimes {
    pub fn on(device: Device) -> Self {
        Self { device, seconds: BTreeMap::new() }
    }

    /// Runs `f` and adds its wall time (the device's work included) under `name`.
    pub fn time<T>(&mut self, name: &'static str, f: impl FnOnce() -> T) -> T {
        let clock = Instant::now();
        let out = f();
        if let Device::Cuda(index) = self.device {
            tch::Cuda::synchronize(index as i64);
        }
        *self.seconds.entry(name).or_default() += clock.elapsed().as_secs_f64();
        out
    }

    pub fn absorb(&mut self, other: &ForwardTimes) {
        other.add_into(&mut self.seconds);
    }

    /// Adds these seconds, model by model, to `totals` (a rollout's running sums).
    pub fn add_into(&self, totals: &mut BTreeMap<&'static str, f64>) {
        for (name, seconds) in &self.seconds {
            *totals.entry(name).or_default() += seconds;
        }
    }
}

/// Host copies of a batch's per-token columns, for building table rows.
pub struct HostScores {
    logp_ref: Vec<Vec<f32>>,
    logp_dpo: Option<Vec<Vec<f32>>>,
    logp_policy: Option<Vec<Vec<f32>>>,
    dpo_reward: Vec<Vec<f32>>,
    kl_penalty: Vec<Vec<f32>>,
    sentence_reward: Vec<Vec<f32>>,
    reward: Vec<Vec<f32>>,
}

fn host(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(Vec::<Vec<f32>>::try_from(&t.to_kind(Kind::Float).to_device(Device::Cpu))?)
}

impl BatchScores {
    pub fn to_host(&self) -> Result<HostScores> {
        Ok(HostScores {
            logp_ref: host(&self.logp_ref)?,
            logp_dpo: self.logp_dpo.as_ref().map(host).transpose()?,
            logp_policy: self.logp_policy.as_ref().map(host).transpose()?,
            dpo_reward: host(&self.rewards.dpo_reward)?,
            kl_penalty: host(&self.rewards.kl_penalty)?,
            sentence_reward: host(&self.rewards.sentence_reward)?,
            reward: host(&self.rewards.reward)?,
        })
    }
}

/// Which optional columns hold values (the others are written as nulls).
#[derive(Debug, Clone, Copy)]
pub struct Sources {
    pub dpo: bool,
    pub policy: bool,
    pub reward_model: bool,
}

/// Table rows of batch row `row`: one [`TokenRecord`] per response token and the sample row.
/// Sums are taken in f32 in position order, the order a reader of tokens.parquet sums in.
pub fn table_rows(
    scores: &HostScores,
    sources: Sources,
    tokens: &[i64],
    row: usize,
    tokenizer: &TextTokenizer,
    mut sample: SampleRecord,
) -> (SampleRecord, Vec<TokenRecord>) {
    let pick = |column: &Option<Vec<Vec<f32>>>, h: usize| column.as_ref().map(|c| c[row][h]);
    let records: Vec<TokenRecord> = tokens
        .iter()
        .enumerate()
        .map(|(h, &id)| TokenRecord {
            position: h as u32,
            token_id: id as u32,
            token: tokenizer.token_piece(id),
            logp_ref: Some(scores.logp_ref[row][h]),
            logp_dpo: pick(&scores.logp_dpo, h),
            logp_policy: pick(&scores.logp_policy, h),
            dpo_reward: sources.dpo.then(|| scores.dpo_reward[row][h]),
            kl_penalty: sources.policy.then(|| scores.kl_penalty[row][h]),
            sentence_reward: sources.reward_model.then(|| scores.sentence_reward[row][h]),
            reward: scores.reward[row][h],
            gold_credit: None,
            advantage: None,
        })
        .collect();
    sample.n_tokens = records.len() as u32;
    sample.dpo_return = sources.dpo.then(|| records.iter().map(|r| r.dpo_reward.unwrap_or(0.0)).sum());
    sample.sentence_reward =
        sources.reward_model.then(|| records.iter().map(|r| r.sentence_reward.unwrap_or(0.0)).sum());
    sample.ret = records.iter().map(|r| r.reward).sum();
    (sample, records)
}
