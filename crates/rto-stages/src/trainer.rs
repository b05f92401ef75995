//! The supervised training loop shared by sft-train, dpo-train and rm-train: epochs over a
//! seeded order, gradient accumulation, cosine schedule, clipping, periodic eval, metrics,
//! progress, and checkpoints that make a killed run resume to the same bits. The metrics go to
//! the scratch folder's metrics.jsonl (and to a TensorBoard run folder when one is given).
//!
//! Data parallel (a process group of several ranks): each step's micro batches are shared out
//! in contiguous blocks (`dist::share`: rank 0 the first ones), each rank scales its losses by
//! their share of the global batch, the gradients are summed over ranks in buckets
//! (`dist::grads`), and every rank clips by the one global norm and steps AdamW on the same
//! numbers, so the models stay equal. Metrics are summed the same way. Rank 0 alone writes the
//! metrics log and the checkpoints; every rank restores from them.

use crate::checkpoint::{last_good, Checkpointer, MetricsLog};
use crate::dist::{self, optimizer, optimizer::Optimizer};
use crate::optim::AdamWSettings;
use anyhow::{bail, Result};
use rto_algo::CosineSchedule;
use rto_data::store::StageSpec;
use rto_dist::ProcessGroup;
use rto_model::CausalLm;
use rto_rng::{permutation, seed_for, Stream};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;
use tch::nn::VarStore;

pub type Metrics = BTreeMap<String, f64>;

#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
pub struct LoopSettings {
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Examples (pairs for DPO/RM) per optimizer step.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Examples per forward/backward; batch_size must be a multiple. 0 = batch_size.
    #[arg(long, default_value_t = 0)]
    pub micro_batch_size: usize,
    #[arg(long, default_value_t = 0.03)]
    pub warmup_ratio: f64,
    /// The schedule's floor as a fraction of the peak learning rate.
    #[arg(long, default_value_t = 0.1)]
    pub min_lr_ratio: f64,
    /// Evaluate every N optimizer steps (and always after the last). 0 = only at the end.
    #[arg(long, default_value_t = 50)]
    pub eval_every: usize,
    /// Save a resumable checkpoint every N steps. 0 = never.
    #[arg(long, default_value_t = 25)]
    pub checkpoint_every: usize,
    /// Stop after this many optimizer steps (the schedule spans them).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// ZeRO stage of a multi-process run: 0 keeps the whole AdamW state on every rank, 1 shards
    /// the moments (and --bf16's fp32 masters) over the ranks (DeepSpeed's stage 1). With one
    /// process it changes nothing (and the key stays that of stage 0).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    #[serde(skip)]
    pub zero_stage: u8,
    #[command(flatten)]
    #[serde(flatten)]
    pub adam: AdamWSettings,
}

impl LoopSettings {
    pub fn micro_batch(&self) -> usize {
        if self.micro_batch_size == 0 {
            self.batch_size
        } else {
            self.micro_batch_size
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 || self.epochs == 0 {
            bail!("batch_size and epochs must be at least 1");
        }
        if !self.batch_size.is_multiple_of(self.micro_batch()) {
            bail!("batch_size {} is not a multiple of micro_batch_size {}", self.batch_size, self.micro_batch());
        }
        self.adam.validate()
    }

    /// Whether this run shards the optimizer state: `--zero-stage 1` with several ranks.
    pub fn shards_optimizer(&self, group: &ProcessGroup) -> bool {
        optimizer::shards(self.zero_stage, group)
    }

    /// Ranks the optimizer state will be sharded over in a launch of `world` ranks, for the
    /// memory plan (made before the group is joined; `stage::plan_world_size`): `world` under
    /// `--zero-stage 1`, else 1.
    pub fn optimizer_shards(&self, world: u64) -> u64 {
        optimizer::planned_shards(self.zero_stage, world)
    }

    /// `spec` keyed by `--zero-stage 1` when it shards (it changes the grad norm's summation
    /// order, so the last bits); otherwise unchanged, as stage 0 and one process are the same run.
    pub fn keyed(&self, spec: StageSpec, group: &ProcessGroup) -> StageSpec {
        optimizer::keyed(spec, self.zero_stage, group)
    }
}

/// What a stage plugs into the loop.
pub trait SupervisedTask {
    /// The model being trained.
    fn model(&self) -> &CausalLm;
    fn model_mut(&mut self) -> &mut CausalLm;
    fn var_store(&self) -> &VarStore {
        &self.model().vs
    }
    fn var_store_mut(&mut self) -> &mut VarStore {
        &mut self.model_mut().vs
    }
    fn train_len(&self) -> usize;
    /// Forward and backward on the training examples `items`, the loss multiplied by `scale`
    /// (the micro batch's share of the batch) before backward. Returns metrics for these items,
    /// each an average over them; a `tokens` entry, if any, is a count.
    fn train_micro_batch(&mut self, items: &[usize], scale: f64) -> Result<Metrics>;
    /// Metrics on the held-out split (no gradients), each rank taking its `dist::share` of
    /// the chunks and the results reduced over `group` (every rank gets the same metrics).
    fn evaluate(&mut self, group: &ProcessGroup) -> Result<Metrics>;
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    pub steps: usize,
    pub resumed_from: Option<usize>,
    pub train: Metrics,
    pub eval: Metrics,
}

/// The training order of one epoch: a seeded shuffle, the same in every run.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    permutation(n, seed_for(seed, Stream::EpochOrder, epoch as u64))
}

/// Where a training run lives: its process group, scratch folder (checkpoints, metrics log),
/// progress label and optional TensorBoard run folder.
pub struct TrainPlace<'a> {
    pub group: &'a ProcessGroup,
    pub scratch: &'a Path,
    pub label: &'a str,
    pub tensorboard: Option<&'a Path>,
}

/// [`train`] in a stage's [`dist::Work`]: its scratch folder and process group, and
/// `--tensorboard` under the output's key (rank 0 has the output). Returns the summary and
/// the scratch folder (whose metrics log the stage publishes).
pub fn train_in(
    work: &dist::Work,
    logs: &rto_data::cli::TrainingLogArgs,
    label: &str,
    task: &mut dyn SupervisedTask,
    settings: &LoopSettings,
    lr: f64,
    seed: u64,
) -> Result<(TrainSummary, std::path::PathBuf)> {
    let scratch = work.scratch()?;
    let tensorboard = work.output().and_then(|out| logs.run_dir(label, out.key()));
    let place = TrainPlace { group: work.group(), scratch: &scratch, label, tensorboard: tensorboard.as_deref() };
    let summary = train(task, settings, lr, seed, &place)?;
    Ok((summary, scratch))
}

pub fn train(
    task: &mut dyn SupervisedTask,
    settings: &LoopSettings,
    lr: f64,
    seed: u64,
    place: &TrainPlace,
) -> Result<TrainSummary> {
    settings.validate()?;
    let TrainPlace { group, scratch, label, tensorboard } = *place;
    let n = task.train_len();
    let steps_per_epoch = n.div_ceil(settings.batch_size);
    let mut total = steps_per_epoch * settings.epochs;
    if let Some(max) = settings.max_steps {
        total = total.min(max);
    }
    let schedule = CosineSchedule {
        total_steps: total as u64,
        warmup_ratio: settings.warmup_ratio,
        peak_lr: lr,
        min_lr_ratio: settings.min_lr_ratio,
    };
    schedule.validate()?;
    let mut optimizer = Optimizer::new(task.var_store(), &settings.adam, settings.shards_optimizer(group), group)?;
    let checkpointer = Checkpointer::new(scratch);
    let restored = optimizer::restore(&checkpointer, &mut [("model", task.var_store_mut(), &mut optimizer)])?;
    let start = restored.as_ref().map_or(0, |r| r.step);
    if start > 0 && group.is_main() {
        eprintln!("{label}: resuming from the checkpoint at step {start}");
    }
    let mut log = group
        .is_main()
        .then(|| MetricsLog::open_with_tensorboard(&scratch.join("metrics.jsonl"), start, tensorboard))
        .transpose()?;
    let progress = crate::progress::bar(total as u64, label);
    if !group.is_main() {
        progress.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    progress.set_position(start as u64);
    let mut last_train = Metrics::new();
    let mut last_eval = Metrics::new();
    for step in start..total {
        let clock = Instant::now();
        crate::progress::set_activity(format_args!("step {}", step + 1));
        task.model().begin_lora_step(step as u64, group.rank() as u64);
        let epoch = step / steps_per_epoch;
        let order = epoch_order(n, seed, epoch);
        let first = (step % steps_per_epoch) * settings.batch_size;
        let batch = &order[first..(first + settings.batch_size).min(n)];
        optimizer.zero_grad();
        let metrics = train_batch(task, group, batch, settings.micro_batch())?;
        if let Some((key, value)) = metrics.iter().find(|(_, v)| !v.is_finite()) {
            bail!("{label}: {key} is {value} at step {} (epoch {epoch}); {}", step + 1, last_good(scratch));
        }
        let lr_now = schedule.lr_at(step as u64);
        let grad_norm = optimizer
            .step(group, lr_now)
            .map_err(|e| anyhow::anyhow!("{label}: step {}: {e:#}; {}", step + 1, last_good(scratch)))?;
        let secs = clock.elapsed().as_secs_f64();
        let mut record = json!({"step": step + 1, "epoch": epoch, "lr": lr_now, "grad_norm": grad_norm});
        for (key, value) in &metrics {
            record[format!("train/{key}")] = json!(value);
        }
        if let Some(tokens) = metrics.get("tokens") {
            record["train/tokens_per_s"] = json!(tokens / secs);
        }
        let done = step + 1 == total;
        if done || (settings.eval_every > 0 && (step + 1) % settings.eval_every == 0) {
            last_eval = task.evaluate(group)?;
            for (key, value) in &last_eval {
                record[format!("eval/{key}")] = json!(value);
            }
        }
        if let Some(log) = &mut log {
            log.write(&record)?;
        }
        progress.set_message(short_metrics(&metrics));
        progress.inc(1);
        last_train = metrics;
        let checkpoint_due = settings.checkpoint_every > 0 && (step + 1) % settings.checkpoint_every == 0;
        if !done && checkpoint_due {
            optimizer::save(&checkpointer, group, step + 1, &[("model", task.var_store(), &optimizer)], Value::Null)?;
        }
    }
    progress.finish();
    Ok(TrainSummary { steps: total, resumed_from: (start > 0).then_some(start), train: last_train, eval: last_eval })
}

/// Forward and backward of this rank's micro batches of `batch`; returns the batch's metrics
/// (summed over ranks): each a mean over the batch, `tokens` a count.
fn train_batch(task: &mut dyn SupervisedTask, group: &ProcessGroup, batch: &[usize], micro: usize) -> Result<Metrics> {
    let micros: Vec<&[usize]> = batch.chunks(micro).collect();
    let mut metrics = Metrics::new();
    for micro in &micros[dist::my_share(group, micros.len())] {
        let share = micro.len() as f64 / batch.len() as f64;
        for (key, value) in task.train_micro_batch(micro, share)? {
            let weight = if key == "tokens" { 1.0 } else { share };
            *metrics.entry(key).or_default() += value * weight;
        }
    }
    dist::reduce_metrics(group, metrics)
}

fn short_metrics(metrics: &Metrics) -> String {
    ["loss", "accuracy", "rewards/accuracies"]
        .iter()
        .filter_map(|k| metrics.get(*k).map(|v| format!("{k} {v:.4}")))
        .collect::<Vec<_>>()
        .join(" ")
}
