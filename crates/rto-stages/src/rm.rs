//! rm-train: a Bradley–Terry reward model (DESIGN.md §4, "Reward model").
//!
//! The decoder comes from `--model` and the `score` head reads the last token of each
//! (prompt, response) row, which is EOS because the encoder appends it. After training, the
//! mean and std of the rewards on the eval split go into config.json (`reward_normalization`)
//! so whoever uses the model as a reward can normalize, and the folder is written as
//! `LlamaForSequenceClassification`, which transformers loads with the same scores.

use crate::dist::Work;
use crate::encode::{EncodedPair, LengthLimits};
use crate::preference::{self, batch_tokens, halves, mean, pair_batch};
use crate::stage;
use crate::trainer::{self, LoopSettings, Metrics, SupervisedTask};
use anyhow::{bail, Result};
use rto_algo::bradley_terry_loss;
use rto_data::cli::{CommonArgs, TrainedModelArgs, TrainingLogArgs};
use rto_data::dataset::{split, ColumnNames, EvalSize};
use rto_dist::ProcessGroup;
use rto_model::{parse_device, sequence_scores, CausalLm, Head, TextTokenizer};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::PathBuf;
use tch::{Kind, Tensor};

pub const STAGE: &str = "rm";
const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
pub struct RmSettings {
    /// The paper's reward-model learning rate; small models want far more.
    #[arg(long, default_value_t = 1e-6)]
    pub learning_rate: f64,
    /// Constant margin m in −logσ(r_w − r_l − m); 0 = plain Bradley–Terry.
    #[arg(long, default_value_t = 0.0)]
    pub margin: f64,
    /// Fraction of pairs held out for evaluation (and for the reward normalization).
    #[arg(long, default_value_t = 0.05)]
    pub eval_fraction: f64,
    #[command(flatten)]
    pub limits: LengthLimits,
    #[command(flatten)]
    pub columns: ColumnNames,
    #[command(flatten)]
    pub train: LoopSettings,
}

#[derive(Debug, clap::Parser)]
#[command(name = "rm-train", version, about = "Bradley–Terry reward model on preference pairs")]
pub struct RmArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub logs: TrainingLogArgs,
    #[command(flatten)]
    pub trained: TrainedModelArgs,
    /// Model folder whose decoder starts the reward model (its `score.weight` too, if any;
    /// else the head starts at zero).
    #[arg(long)]
    pub model: PathBuf,
    /// Preference pairs with `prompt`, `chosen`, `rejected` columns (Parquet or JSONL).
    #[arg(long)]
    pub data: PathBuf,
    #[command(flatten)]
    pub settings: RmSettings,
}

/// Entry point of the `rm-train` binary.
pub fn cli(args: RmArgs) -> Result<()> {
    if !args.settings.margin.is_finite() {
        bail!("--margin must be finite, got {}", args.settings.margin);
    }
    args.settings.train.validate()?;
    stage::check_learning_rate("learning-rate", args.settings.learning_rate)?;
    args.logs.check()?;
    stage::lora_config(&args.trained)?;
    let limits = &args.settings.limits;
    let (rows, tokens) = (2 * args.settings.train.micro_batch(), limits.max_prompt_len + limits.max_response_len);
    let reward_model = stage::planned_trained(
        "reward model",
        &args.model,
        Head::Score,
        (rows, tokens),
        &args.trained,
        (&args.settings.train, stage::plan_world_size(&args.common)?),
    )?;
    let spec = stage::training_spec(STAGE, SCHEMA_VERSION, &args.common, &args.trained, &args.settings)?;
    let spec = stage::with_model_input(spec, "model", &args.model)?.with_input("data", &args.data);
    if !stage::plan_memory(&args.common, &spec, &[reward_model], None)? {
        return Ok(());
    }
    let group = crate::dist::group(&args.common.device)?;
    let spec = args.settings.train.keyed(stage::keyed_by_world(spec, &group), &group);
    stage::run_training_ranked(&group, &args.common, &args.logs, &spec, |work| run(&args, work))?;
    Ok(())
}

struct RmTask {
    model: CausalLm,
    train: Vec<EncodedPair>,
    eval: Vec<EncodedPair>,
    margin: f64,
    pad_id: i64,
    micro_batch: usize,
}

impl RmTask {
    /// Rewards [2B] of `pairs` (chosen rows, then rejected rows), with the graph.
    fn rewards(&self, pairs: &[&EncodedPair]) -> Result<(Tensor, f64)> {
        let batch = pair_batch(pairs, self.pad_id, self.model.device())?;
        Ok((sequence_scores(&self.model, &batch), batch_tokens(&batch)))
    }

    /// Loss (with graph) and metrics of `pairs`, each a mean over them.
    fn forward(&self, pairs: &[&EncodedPair]) -> Result<(Tensor, Metrics)> {
        let (rewards, tokens) = self.rewards(pairs)?;
        let (chosen, rejected) = halves(&rewards);
        let margin = (self.margin != 0.0)
            .then(|| Tensor::full([pairs.len() as i64], self.margin, (Kind::Float, rewards.device())));
        let outputs = bradley_terry_loss(&chosen, &rejected, margin.as_ref())?;
        let metrics = Metrics::from([
            ("loss".into(), outputs.loss.double_value(&[])),
            ("accuracy".into(), mean(&outputs.accuracies)),
            ("rewards/chosen".into(), mean(&chosen.detach())),
            ("rewards/rejected".into(), mean(&rejected.detach())),
            ("rewards/mean".into(), mean(&rewards.detach())),
            ("rewards/margins".into(), mean(&outputs.margins)),
            ("tokens".into(), tokens),
        ]);
        Ok((outputs.loss, metrics))
    }

    /// Mean and (population) std of the rewards of every response in `pairs`: the numbers a
    /// user of this model divides by to get rewards on a known scale.
    fn reward_moments(&self, pairs: &[EncodedPair]) -> Result<(f64, f64)> {
        let mut all: Vec<f32> = Vec::with_capacity(2 * pairs.len());
        for chunk in pairs.chunks(self.micro_batch.max(1)) {
            let refs: Vec<&EncodedPair> = chunk.iter().collect();
            let (rewards, _) = tch::no_grad(|| self.rewards(&refs))?;
            all.extend(Vec::<f32>::try_from(&rewards)?);
        }
        let n = all.len().max(1) as f64;
        let mean = all.iter().map(|&r| r as f64).sum::<f64>() / n;
        let var = all.iter().map(|&r| (r as f64 - mean).powi(2)).sum::<f64>() / n;
        Ok((mean, var.sqrt()))
    }
}

impl SupervisedTask for RmTask {
    fn model(&self) -> &CausalLm {
        &self.model
    }
    fn model_mut(&mut self) -> &mut CausalLm {
        &mut self.model
    }
    fn train_len(&self) -> usize {
        self.train.len()
    }

    fn train_micro_batch(&mut self, items: &[usize], scale: f64) -> Result<Metrics> {
        preference::train_micro_batch(&self.model, &self.train, items, scale, |batch| self.forward(batch))
    }

    fn evaluate(&mut self, group: &ProcessGroup) -> Result<Metrics> {
        preference::evaluate_pairs(group, &self.eval, self.micro_batch, |batch| self.forward(batch))
    }
}

fn run(args: &RmArgs, work: &Work) -> Result<Value> {
    let settings = &args.settings;
    let device = parse_device(&args.common.device)?;
    let tokenizer = TextTokenizer::from_dir(&args.model)?;
    let model = rto_model::adapter::load_value_model(&args.model, device, stage::precision(&args.common).kind())?;
    tokenizer.check_fits(model.config.vocab_size, &args.model)?;
    let (pairs, stats) =
        preference::read_pairs(&args.data, &settings.columns, &settings.limits, &tokenizer, &model, &args.model)?;
    let (train, eval) = split(pairs, EvalSize::Fraction(settings.eval_fraction), args.common.seed)?;
    let micro_batch = settings.train.micro_batch();
    let model = stage::trained_model(model, &args.trained, args.common.seed)?;
    let mut task = RmTask { model, train, eval, margin: settings.margin, pad_id: tokenizer.pad_id, micro_batch };
    let (lr, seed) = (settings.learning_rate, args.common.seed);
    let (summary, scratch) = trainer::train_in(work, &args.logs, STAGE, &mut task, &settings.train, lr, seed)?;
    // Rank 0 alone writes the model; the others hold the same weights.
    let Some(out) = work.output() else { return Ok(Value::Null) };
    // Without an eval split the training pairs are the only sample of the reward scale.
    let (normalized_on, sample) = if task.eval.is_empty() { ("train", &task.train) } else { ("eval", &task.eval) };
    let (reward_mean, reward_std) = task.reward_moments(sample)?;
    task.model.config.set_reward_normalization(reward_mean, reward_std);
    stage::save_trained(&task.model, out.path(), &args.trained, &args.model, &args.model)?;
    crate::metrics::publish(&scratch.join("metrics.jsonl"), out, STAGE)?;
    Ok(json!({
        "train": summary.train, "eval": summary.eval, "steps": summary.steps, "dataset": stats,
        "reward_normalization": {"mean": reward_mean, "std": reward_std, "split": normalized_on},
    }))
}
