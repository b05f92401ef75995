//! ppo-train: PPO on the RTO token reward (DESIGN.md §4, "RTO token reward" and "PPO"), and the
//! critic-free estimators that compare several responses per prompt (DESIGN.md §7).
//!
//! One iteration: the next `rollout_batch_size` prompts of a seeded order (consecutive slices
//! of an endless series of seeded shuffles of the prompt file); `n_samples_per_prompt` (K)
//! responses to each from the KV-cache sampler, stopping at the tokenizer's EOS (part of the
//! response), with the sampling seed derived from (seed, iteration) so a resumed run samples
//! what the first one did; token rewards from `token_scoring` (the code token-reward-annotate
//! writes, so the table a user inspects is the reward optimized here); advantages by the
//! `--advantage-estimator`: GAE over critic values (whitened over the rollout), REINFORCE++, or a
//! group estimator over each prompt's K responses (`rto_algo::group_advantage`); `ppo_epochs`
//! passes in train batches of micro batches, the actor (and the critic, for GAE) each with its
//! own AdamW and cosine schedule; an adaptive KL controller, when `--kl-target` is given,
//! updates after each rollout.
//!
//! The output folder holds the policy itself (HF layout, tokenizer copied), so it can be
//! passed wherever a model folder is expected, and:
//! - `critic/`: the value model with its score head, only for `--advantage-estimator gae` (the
//!   other estimators load, train and save no critic; the manifest's `critic` entry says which);
//! - `metrics.jsonl`: one line per iteration (`step` = iteration), and `metrics.png`, its curves
//!   (also to TensorBoard with `--tensorboard DIR`);
//! - `rollouts/iter-NNNNNN/{tokens,samples}.parquet`: the token-reward schema with `iteration`,
//!   `group` (the prompt's index in the rollout batch, shared by its K responses) and, per
//!   token, the `advantage` the update used; written for iteration 1, every
//!   `--save-rollouts-every` iterations and the last; sample ids are unique across
//!   iterations, so the folders concatenate.
//!
//! Checkpoints (the models, their optimizers, the KL controller) go to the store's scratch
//! folder every `--checkpoint-every` iterations; a killed run resumes from there and ends with
//! the same bits as an uninterrupted one on CPU.
//!
//! Under `torchrun --nproc-per-node N` the ranks share each iteration's generation batches and
//! train batches (see `run` and `learner`); `--zero-stage 1` shards both optimizers. The
//! rollouts are the single process's (same batches, same seeds); the weights equal it up to
//! fp32 rounding of the gradient sums, so world size > 1 joins the key.

mod learner;
mod plan;
mod run;

pub use crate::rollout::ResponseJudge;
pub use learner::{Learner, UpdateSettings};

use crate::compat::{check_models, SharedModels};
use crate::encode::LengthLimits;
use crate::optim::AdamWSettings;
use crate::stage;
use crate::token_scoring::RewardConfig;
use anyhow::{bail, ensure, Result};
use rto_algo::{
    AdaptiveKl, ClipRange, GaeSettings, GroupEstimator, KlController, LossAggregation, RewardMode, RewardWeights,
};
use rto_data::cli::{CommonArgs, ForwardArgs, TrainedModelArgs, TrainingLogArgs};
use rto_data::dataset::ColumnNames;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const STAGE: &str = "ppo";
// 2: rollout tables gained `group` and `advantage`; the settings gained the estimator flags.
const SCHEMA_VERSION: u32 = 2;

/// How advantages are estimated (`--advantage-estimator`; `--algo` is its old name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum Estimator {
    /// Clipped PPO with a critic and GAE (the paper's setting).
    #[value(name = "gae", alias = "ppo")]
    #[serde(rename = "gae", alias = "ppo")]
    Gae,
    /// REINFORCE++: critic-free, whitened discounted returns-to-go (the paper's App. E).
    #[value(name = "reinforce++")]
    #[serde(rename = "reinforce++")]
    ReinforcePlusPlus,
    /// GRPO: per-prompt group baselines, scaled by the group's spread.
    #[value(name = "grpo")]
    #[serde(rename = "grpo")]
    Grpo,
    /// Dr. GRPO: GRPO without the division by the group's spread.
    #[value(name = "dr-grpo")]
    #[serde(rename = "dr-grpo")]
    DrGrpo,
    /// RLOO: each response against the mean of the other K − 1.
    #[value(name = "rloo")]
    #[serde(rename = "rloo")]
    Rloo,
    /// REINFORCE++-baseline: group mean subtracted, then whitened over the rollout.
    #[value(name = "reinforce++-baseline")]
    #[serde(rename = "reinforce++-baseline")]
    ReinforcePlusPlusBaseline,
}

impl Estimator {
    /// The flag value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Gae => "gae",
            Self::ReinforcePlusPlus => "reinforce++",
            Self::Grpo => "grpo",
            Self::DrGrpo => "dr-grpo",
            Self::Rloo => "rloo",
            Self::ReinforcePlusPlusBaseline => "reinforce++-baseline",
        }
    }

    /// Only GAE reads a value model.
    pub fn needs_critic(self) -> bool {
        self == Self::Gae
    }

    /// The group estimator behind this flag value, if it is one (they need K ≥ 2).
    pub fn group(self) -> Option<GroupEstimator> {
        match self {
            Self::Grpo => Some(GroupEstimator::Grpo),
            Self::DrGrpo => Some(GroupEstimator::DrGrpo),
            Self::Rloo => Some(GroupEstimator::Rloo),
            Self::ReinforcePlusPlusBaseline => Some(GroupEstimator::ReinforcePlusPlusBaseline),
            Self::Gae | Self::ReinforcePlusPlus => None,
        }
    }
}

/// How the per-token policy loss of a train batch is reduced (`rto_algo::LossAggregation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LossAggMode {
    /// Mean over each response's tokens, then over the responses (the paper's).
    SeqMeanTokenMean,
    /// Mean over all tokens of the train batch (DAPO).
    TokenMean,
    /// Sum over all tokens / (responses × --max-new-tokens) (Dr. GRPO).
    SeqMeanTokenSumNorm,
}

// The token reward (DESIGN.md §4) with the flags token-reward-annotate shares, and the KL
// controller. `config` is flattened in serde too, so the stage key's `reward` object keeps the
// fields it had before the flags were shared (and ppo keys did not move). No doc comment: clap
// would take it as the about text of a command that flattens this after setting its own.
#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
pub struct RewardSettings {
    #[command(flatten)]
    #[serde(flatten)]
    pub config: RewardConfig,
    /// Adaptive KL: steer the per-response KL (nats) towards this target.
    #[arg(long)]
    pub kl_target: Option<f64>,
    /// Adaptive KL: samples over which a full ±20% correction is applied.
    #[arg(long, default_value_t = 10000.0)]
    pub kl_horizon: f64,
}

impl RewardSettings {
    pub fn controller(&self) -> KlController {
        let coef = self.config.kl_coef;
        match self.kl_target {
            Some(target) => KlController::Adaptive(AdaptiveKl { coef, target, horizon: self.kl_horizon }),
            None => KlController::Fixed { coef },
        }
    }

    /// The weights with β2 = `kl_coef` (the controller's current value).
    pub fn weights(&self, kl_coef: f64) -> RewardWeights {
        RewardWeights { beta2: kl_coef, ..self.config.weights() }
    }

    pub fn mode(&self) -> RewardMode {
        self.config.mode
    }

    /// Which models the mode reads: (DPO model, reward model).
    pub fn needs(&self) -> (bool, bool) {
        match self.mode() {
            RewardMode::Rto | RewardMode::Ddpo | RewardMode::RsPpo => (true, true),
            RewardMode::Ppo => (false, true),
            RewardMode::DpoOnly => (true, false),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
pub struct PpoSettings {
    /// Advantage estimator. gae: critic + GAE (the paper's PPO); reinforce++: whitened
    /// returns-to-go; the group estimators grpo, dr-grpo, rloo, reinforce++-baseline compare the
    /// --n-samples-per-prompt responses to each prompt (K ≥ 2). Only gae loads or trains a critic.
    /// Formulas: ARCHITECTURE.md, "Advantage estimators".
    #[arg(long, value_enum, default_value_t = Estimator::Gae, alias = "algo")]
    #[serde(alias = "algo")]
    pub advantage_estimator: Estimator,
    /// Responses sampled per prompt (K). A rollout holds --rollout-batch-size × K responses, all
    /// counted by --train-batch-size, --micro-batch-size and the `samples` metric.
    #[arg(long, default_value_t = 1)]
    pub n_samples_per_prompt: usize,
    /// Policy-loss reduction: seq-mean-token-mean (per response, then batch; the paper's),
    /// token-mean (DAPO), seq-mean-token-sum-norm (Dr. GRPO: Σ / (responses × --max-new-tokens)).
    #[arg(long, value_enum, default_value_t = LossAggMode::SeqMeanTokenMean)]
    pub loss_agg_mode: LossAggMode,
    #[command(flatten)]
    pub reward: RewardSettings,
    /// Discount γ.
    #[arg(long, default_value_t = 1.0)]
    pub gamma: f64,
    /// GAE λ.
    #[arg(long, default_value_t = 0.95)]
    pub lambda: f64,
    /// Policy ratio clip ε: ρ is clipped to [1 − ε, 1 + ε] (the upper bound: see --clip-high).
    #[arg(long, default_value_t = 0.2)]
    pub eps_clip: f64,
    /// Upper ratio clip (DAPO's clip-higher, e.g. 0.28): ρ ≤ 1 + clip_high. Default: --eps-clip.
    #[arg(long)]
    pub clip_high: Option<f64>,
    /// Value clip: V may move this far from the rollout's value before its error counts fully.
    #[arg(long, default_value_t = 0.2)]
    pub value_clip: f64,
    /// Peak actor learning rate (the paper's 8B setting; tiny models want far more).
    #[arg(long, default_value_t = 5e-7)]
    pub actor_lr: f64,
    /// Peak critic learning rate.
    #[arg(long, default_value_t = 9e-6)]
    pub critic_lr: f64,
    #[arg(long, default_value_t = 0.03)]
    pub warmup_ratio: f64,
    /// Floor of the cosine schedules as a fraction of the peak rate.
    #[arg(long, default_value_t = 0.1)]
    pub min_lr_ratio: f64,
    #[command(flatten)]
    #[serde(flatten)]
    pub adam: AdamWSettings,
    /// Prompts per iteration (each gets --n-samples-per-prompt responses).
    #[arg(long, default_value_t = 1024)]
    pub rollout_batch_size: usize,
    /// Responses per optimizer step; must divide the rollout's responses
    /// (--rollout-batch-size × --n-samples-per-prompt).
    #[arg(long, default_value_t = 128)]
    pub train_batch_size: usize,
    /// Responses per forward/backward; must divide --train-batch-size. 0 = train batch.
    #[arg(long, default_value_t = 0)]
    pub micro_batch_size: usize,
    /// Prompts per generate call and per scoring forward (× --n-samples-per-prompt responses).
    /// 0 = rollout batch. Several ranks share a rollout by these batches: at most
    /// rollout / ranks keeps every rank generating.
    #[arg(long, default_value_t = 0)]
    pub generation_batch_size: usize,
    /// Prompts per scoring forward (reference, DPO, reward model, critic, old log-probs: the
    /// no-grad forwards of the rollout; TRL's name): a multiple of the generation batch, so
    /// the forwards need not be as small as the KV cache makes the generate calls. 0 = the
    /// generation batch. The memory plan prints the largest value it allows. Ranks share a
    /// rollout by these batches. In the key when set.
    #[arg(long, default_value_t = 0)]
    #[serde(default, skip_serializing_if = "is_zero")]
    pub local_rollout_forward_batch_size: usize,
    /// Passes over each rollout.
    #[arg(long, default_value_t = 1)]
    pub ppo_epochs: usize,
    /// Iterations to run (default: one pass over the prompts).
    #[arg(long, conflicts_with = "max_samples")]
    pub iterations: Option<usize>,
    /// Total prompt budget instead of --iterations (rounded up to whole iterations); each prompt
    /// gets --n-samples-per-prompt responses.
    #[arg(long)]
    pub max_samples: Option<usize>,
    /// Generation budget per response, EOS included (default: --max-response-len).
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// 0 = no top-k filtering.
    #[arg(long, default_value_t = 0)]
    pub top_k: i64,
    /// Replay each generate call's decode steps from a CUDA graph captured at its first step
    /// (as vLLM and SGLang do): one launch per step instead of a few hundred. CUDA only, in a
    /// build with CUDA graphs (`make build-cuda`). In the key when set.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cuda_graph: bool,
    /// Write the rollouts of every N-th iteration (and the first and last). 0 = never.
    #[arg(long, default_value_t = 10)]
    pub save_rollouts_every: usize,
    /// Save a resumable checkpoint every N iterations. 0 = never.
    #[arg(long, default_value_t = 10)]
    pub checkpoint_every: usize,
    /// Evaluate on --eval-prompts every N iterations (and after the last). 0 = never.
    #[arg(long, default_value_t = 0)]
    pub eval_every: usize,
    /// ZeRO stage of a multi-process run, as in sft/dpo/rm-train: 0 keeps the whole AdamW state
    /// of the actor and the critic on every rank, 1 shards their moments (and --bf16's fp32
    /// masters) over the ranks. With one process it changes nothing (nor the key).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    #[serde(skip)]
    pub zero_stage: u8,
    #[command(flatten)]
    #[serde(flatten)]
    pub forward: ForwardArgs,
    /// Take the rollout's old log-probs and entropies from the sampler (the policy's
    /// unmodified distribution at each sampled token, fp32) instead of a policy forward over
    /// the responses; the first optimizer step of each iteration then uses its own forward's
    /// log-probs as the old ones, so its ratio is exactly 1. In the key when set.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sampler_logprobs: bool,
    #[command(flatten)]
    pub limits: LengthLimits,
    #[command(flatten)]
    pub columns: ColumnNames,
}

impl PpoSettings {
    pub fn micro_batch(&self) -> usize {
        if self.micro_batch_size == 0 {
            self.train_batch_size
        } else {
            self.micro_batch_size
        }
    }

    pub fn generation_batch(&self) -> usize {
        if self.generation_batch_size == 0 {
            self.rollout_batch_size
        } else {
            self.generation_batch_size
        }
    }

    /// Prompts per scoring forward: --local-rollout-forward-batch-size, else the generation
    /// batch; never more than the rollout.
    pub fn forward_batch(&self) -> usize {
        match self.local_rollout_forward_batch_size {
            0 => self.generation_batch(),
            n => n.min(self.rollout_batch_size),
        }
    }

    pub fn max_new_tokens(&self) -> usize {
        self.max_new_tokens.unwrap_or(self.limits.max_response_len)
    }

    /// Responses per iteration: rollout_batch_size × n_samples_per_prompt.
    pub fn rollout_responses(&self) -> usize {
        self.rollout_batch_size * self.n_samples_per_prompt
    }

    /// The ratio range of the policy loss.
    pub fn clip(&self) -> ClipRange {
        ClipRange { low: self.eps_clip, high: self.clip_high.unwrap_or(self.eps_clip) }
    }

    /// The policy-loss reduction (Dr. GRPO's constant is the generation budget).
    pub fn loss_aggregation(&self) -> LossAggregation {
        match self.loss_agg_mode {
            LossAggMode::SeqMeanTokenMean => LossAggregation::SeqMeanTokenMean,
            LossAggMode::TokenMean => LossAggregation::TokenMean,
            LossAggMode::SeqMeanTokenSumNorm => {
                LossAggregation::SeqMeanTokenSumNorm { constant: self.max_new_tokens() as f64 }
            }
        }
    }

    /// Every check that needs no file, so a typo fails before any model is loaded.
    pub fn validate(&self) -> Result<()> {
        let (rollout, train, micro) = (self.rollout_batch_size, self.train_batch_size, self.micro_batch());
        ensure!(
            rollout > 0 && train > 0 && self.ppo_epochs > 0,
            "rollout_batch_size, train_batch_size and ppo_epochs must be at least 1"
        );
        self.check_samples_per_prompt()?;
        self.check_batches(train, micro)?;
        self.check_forward_batch()?;
        ensure!(
            self.iterations != Some(0) && self.max_samples != Some(0),
            "iterations and max_samples must be at least 1"
        );
        ensure!(self.max_new_tokens() > 0, "max_new_tokens must be at least 1");
        for (name, v) in [
            ("eps_clip", self.eps_clip),
            ("clip_high", self.clip().high),
            ("value_clip", self.value_clip),
            ("actor_lr", self.actor_lr),
            ("critic_lr", self.critic_lr),
        ] {
            ensure!(v.is_finite() && v > 0.0, "{name} must be a finite number > 0, got {v}");
        }
        GaeSettings { gamma: self.gamma, lambda: self.lambda }.validate()?;
        self.adam.validate()?;
        self.reward.config.validate()?;
        self.reward.controller().validate()
    }

    /// K ≥ 1, and K ≥ 2 for an estimator that compares the responses to one prompt.
    fn check_samples_per_prompt(&self) -> Result<()> {
        let (k, estimator) = (self.n_samples_per_prompt, self.advantage_estimator.name());
        ensure!(k >= 1, "--n-samples-per-prompt must be at least 1, got {k}");
        ensure!(
            self.advantage_estimator.group().is_none() || k >= 2,
            "--advantage-estimator {estimator} compares the responses to each prompt, so it needs --n-samples-per-prompt of at least 2 (got {k}): set e.g. --n-samples-per-prompt 4, or use --advantage-estimator gae or reinforce++"
        );
        Ok(())
    }

    /// The train batch divides the rollout's responses, the micro batch the train batch.
    fn check_batches(&self, train: usize, micro: usize) -> Result<()> {
        let (rollout, k) = (self.rollout_batch_size, self.n_samples_per_prompt);
        let responses = self.rollout_responses();
        ensure!(
            responses.is_multiple_of(train),
            "train_batch_size {train} must divide the {responses} responses of a rollout (--rollout-batch-size {rollout} × --n-samples-per-prompt {k}): set --train-batch-size to a divisor of {responses}, e.g. {}",
            largest_divisor_up_to(responses, train)
        );
        ensure!(
            train.is_multiple_of(micro),
            "micro_batch_size {micro} must divide train_batch_size {train}: set --micro-batch-size to a divisor of {train}, e.g. {}",
            largest_divisor_up_to(train, micro)
        );
        Ok(())
    }

    /// A scoring forward holds whole generation batches (the samples stay a single process's).
    fn check_forward_batch(&self) -> Result<()> {
        let (forward, generation) = (self.local_rollout_forward_batch_size, self.generation_batch());
        let whole = forward == 0 || forward >= self.rollout_batch_size || forward.is_multiple_of(generation);
        ensure!(
            whole,
            "--local-rollout-forward-batch-size {forward} must be a multiple of the generation batch ({generation} prompts, --generation-batch-size): set it to e.g. {}",
            (forward / generation).max(1) * generation
        );
        Ok(())
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The largest divisor of `n` that is at most `limit` (at least 1): the fix an error suggests.
fn largest_divisor_up_to(n: usize, limit: usize) -> usize {
    (1..=limit.min(n)).rev().find(|d| n.is_multiple_of(*d)).unwrap_or(1)
}

#[derive(Debug, clap::Parser)]
#[command(
    name = "ppo-train",
    version,
    about = "PPO on the RTO token reward (or the PPO / DPO-only / DDPO / RS-PPO baselines)",
    long_about = "PPO on the RTO token reward (or the PPO / DPO-only / DDPO / RS-PPO baselines)\n\nCritic-free variants: --advantage-estimator reinforce++, or a group estimator (grpo, dr-grpo, rloo, reinforce++-baseline) with --n-samples-per-prompt K ≥ 2."
)]
pub struct PpoArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub logs: TrainingLogArgs,
    #[command(flatten)]
    pub trained: TrainedModelArgs,
    /// The SFT model: the policy's starting point and the KL reference.
    #[arg(long)]
    pub policy: PathBuf,
    /// The DPO model whose log-ratio against the reference is the dense token reward.
    #[arg(long)]
    pub dpo: Option<PathBuf>,
    /// The sentence-level reward model (score head).
    #[arg(long)]
    pub reward_model: Option<PathBuf>,
    /// Critic initialization (default: the reward model, else the policy with a zero head).
    #[arg(long)]
    pub critic: Option<PathBuf>,
    /// RL prompts (`prompt` or `context_messages` column; Parquet or JSONL).
    #[arg(long)]
    pub prompts: PathBuf,
    /// Held-out prompts for the periodic greedy evaluation (--eval-every).
    #[arg(long)]
    pub eval_prompts: Option<PathBuf>,
    /// Score rollouts and evaluations with a judge program: `toy` (the shipped task's gold
    /// judge). Adds `judge_score`, `gold_score` and `eval/judge_score`.
    #[arg(long)]
    pub judge: Option<String>,
    #[command(flatten)]
    pub settings: PpoSettings,
}

/// The model folders a run actually uses (a mode ignores the models it does not read).
#[derive(Debug, Clone)]
pub struct Inputs {
    pub dpo: Option<PathBuf>,
    pub reward_model: Option<PathBuf>,
    pub critic: Option<PathBuf>,
}

fn pick(flag: &str, given: &Option<PathBuf>, needed: bool, mode: RewardMode) -> Result<Option<PathBuf>> {
    match (given, needed) {
        (Some(path), true) => Ok(Some(path.clone())),
        (None, true) => bail!("--mode {mode} needs {flag}"),
        (Some(path), false) => {
            eprintln!("ppo: --mode {mode} does not read {flag} {}; ignoring it", path.display());
            Ok(None)
        }
        (None, false) => Ok(None),
    }
}

impl Inputs {
    pub fn of(args: &PpoArgs) -> Result<Self> {
        let reward = &args.settings.reward;
        let (needs_dpo, needs_rm) = reward.needs();
        let dpo = pick("--dpo", &args.dpo, needs_dpo, reward.mode())?;
        let reward_model = pick("--reward-model", &args.reward_model, needs_rm, reward.mode())?;
        let estimator = args.settings.advantage_estimator;
        let critic = if estimator.needs_critic() {
            // The paper initializes the critic from the reward model.
            Some(args.critic.clone().or(args.reward_model.clone()).unwrap_or(args.policy.clone()))
        } else {
            if let Some(path) = &args.critic {
                eprintln!(
                    "ppo: --advantage-estimator {} trains no critic; ignoring --critic {}",
                    estimator.name(),
                    path.display()
                );
            }
            None
        };
        Ok(Self { dpo, reward_model, critic })
    }

    /// The model folders a run reads by role, the policy first, checked together before the
    /// store is touched (see [`crate::compat`]).
    fn check(&self, policy: &Path) -> Result<SharedModels> {
        let mut models = vec![("policy", policy)];
        models.extend(self.roles());
        check_models(&models)
    }

    fn roles(&self) -> Vec<(&'static str, &Path)> {
        [("dpo", &self.dpo), ("reward_model", &self.reward_model), ("critic", &self.critic)]
            .into_iter()
            .filter_map(|(role, path)| path.as_deref().map(|p| (role, p)))
            .collect()
    }
}

/// What enters the cache key: the settings, and the judge's name when one is plugged in.
#[derive(Serialize)]
struct KeySettings<'a> {
    #[serde(flatten)]
    settings: &'a PpoSettings,
    #[serde(skip_serializing_if = "Option::is_none")]
    judge: Option<String>,
}

/// Entry point of the `ppo-train` binary.
pub fn cli(args: PpoArgs) -> Result<()> {
    let judge = args.judge.as_deref().map(crate::rollout::judge_named).transpose()?;
    cli_with_judge(args, judge.as_deref())
}

/// [`cli`] with a judge scoring rollouts (`judge_score`, the samples' `gold_score`) and the
/// greedy evaluations (`eval/judge_score`).
pub fn cli_with_judge(args: PpoArgs, judge: Option<&dyn ResponseJudge>) -> Result<()> {
    args.settings.validate()?;
    args.logs.check()?;
    stage::lora_config(&args.trained)?;
    let inputs = Inputs::of(&args)?;
    let shared = inputs.check(&args.policy)?;
    let key = KeySettings { settings: &args.settings, judge: judge.map(|j| j.name()) };
    let spec = stage::training_spec(STAGE, SCHEMA_VERSION, &args.common, &args.trained, &key)?;
    let mut spec = stage::with_model_input(spec, "policy", &args.policy)?.with_input("prompts", &args.prompts);
    for (role, path) in inputs.roles() {
        spec = stage::with_model_input(spec, role, path)?;
    }
    match (&args.eval_prompts, args.settings.eval_every) {
        (Some(path), every) if every > 0 => spec = spec.with_input("eval_prompts", path),
        (Some(path), _) => eprintln!("ppo: --eval-every is 0, so {} is not used", path.display()),
        _ => {}
    }
    let forward_batch = args.settings.forward_batch();
    let (models, kv_cache) = plan::planned_models(&args, &inputs, forward_batch)?;
    let budget = stage::budget(&args.common)?;
    let largest = budget.as_ref().map(|b| plan::largest_forward_batch(&args, &inputs, b)).transpose()?.flatten();
    let planned = stage::plan_memory_against(&args.common, &spec, &models, Some(&kv_cache), budget.as_ref())
        .map_err(|err| match largest {
            Some(n) if n < forward_batch => err.context(format!(
                "--local-rollout-forward-batch-size {n} (with this --generation-batch-size) is the largest the plan allows"
            )),
            _ => err,
        })?;
    if let (Some(n), Some(budget)) = (largest, &budget) {
        eprintln!(
            "ppo: the largest --local-rollout-forward-batch-size this plan allows on {} is {n} prompts (now {forward_batch})",
            budget.device
        );
    }
    if !planned {
        return Ok(());
    }
    let group = crate::dist::group(&args.common.device)?;
    let spec = crate::dist::optimizer::keyed(stage::keyed_by_world(spec, &group), args.settings.zero_stage, &group);
    stage::run_training_ranked(&group, &args.common, &args.logs, &spec, |work| {
        run::run(&args, &inputs, &shared, judge, work)
    })?;
    Ok(())
}
