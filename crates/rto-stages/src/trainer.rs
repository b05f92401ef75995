//! The supervised training loop shared by sft-train, dpo-train and rm-train: epochs over a
//! seeded order, gradient accumulation, cosine schedule, clipping, periodic eval, metrics,
//! progress, and checkpoints that make a killed run resume to the same bits. The metrics go to
//! the scratch folder's metrics.jsonl (and to a TensorBoard run folder when one is given).

use crate::checkpoint::{last_good, Checkpointer, MetricsLog};
use crate::optim::{AdamW, AdamWSettings};
use anyhow::{bail, Result};
use rto_algo::CosineSchedule;
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
}

/// What a stage plugs into the loop.
pub trait SupervisedTask {
    fn var_store(&self) -> &VarStore;
    fn var_store_mut(&mut self) -> &mut VarStore;
    fn train_len(&self) -> usize;
    /// Forward and backward on the training examples `items`, the loss multiplied by `scale`
    /// (the micro batch's share of the batch) before backward. Returns metrics for these items,
    /// each an average over them; a `tokens` entry, if any, is a count.
    fn train_micro_batch(&mut self, items: &[usize], scale: f64) -> Result<Metrics>;
    /// Metrics on the held-out split (no gradients).
    fn evaluate(&mut self) -> Result<Metrics>;
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

pub fn train(
    task: &mut dyn SupervisedTask,
    settings: &LoopSettings,
    lr: f64,
    seed: u64,
    scratch: &Path,
    label: &str,
    tensorboard: Option<&Path>,
) -> Result<TrainSummary> {
    settings.validate()?;
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
    let mut optimizer = AdamW::new(task.var_store(), settings.adam.clone())?;
    let checkpointer = Checkpointer::new(scratch);
    let restored = checkpointer.restore(&mut [("model", task.var_store_mut())], &mut [("model", &mut optimizer)])?;
    let start = restored.as_ref().map_or(0, |r| r.step);
    if start > 0 {
        eprintln!("{label}: resuming from the checkpoint at step {start}");
    }
    let mut log = MetricsLog::open_with_tensorboard(&scratch.join("metrics.jsonl"), start, tensorboard)?;
    let progress = crate::progress::bar(total as u64, label);
    progress.set_position(start as u64);
    let mut last_train = Metrics::new();
    let mut last_eval = Metrics::new();
    for step in start..total {
        let clock = Instant::now();
        crate::progress::set_activity(format_args!("step {}", step + 1));
        let epoch = step / steps_per_epoch;
        let order = epoch_order(n, seed, epoch);
        let first = (step % steps_per_epoch) * settings.batch_size;
        let batch = &order[first..(first + settings.batch_size).min(n)];
        optimizer.zero_grad();
        let mut metrics = Metrics::new();
        for micro in batch.chunks(settings.micro_batch()) {
            let share = micro.len() as f64 / batch.len() as f64;
            for (key, value) in task.train_micro_batch(micro, share)? {
                let weight = if key == "tokens" { 1.0 } else { share };
                *metrics.entry(key).or_default() += value * weight;
            }
        }
        if let Some((key, value)) = metrics.iter().find(|(_, v)| !v.is_finite()) {
            bail!("{label}: {key} is {value} at step {} (epoch {epoch}); {}", step + 1, last_good(scratch));
        }
        let lr_now = schedule.lr_at(step as u64);
        let grad_norm = optimizer
            .clip_and_step(lr_now)
            .map_err(|e| anyhow::anyhow!("{label}: step {}: {e}; {}", step + 1, last_good(scratch)))?;
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
            last_eval = task.evaluate()?;
            for (key, value) in &last_eval {
                record[format!("eval/{key}")] = json!(value);
            }
        }
        log.write(&record)?;
        progress.set_message(short_metrics(&metrics));
        progress.inc(1);
        last_train = metrics;
        if !done && settings.checkpoint_every > 0 && (step + 1) % settings.checkpoint_every == 0 {
            checkpointer.save(step + 1, &[("model", task.var_store())], &[("model", &optimizer)], Value::Null)?;
        }
    }
    progress.finish();
    Ok(TrainSummary { steps: total, resumed_from: (start > 0).then_some(start), train: last_train, eval: last_eval })
}

fn short_metrics(metrics: &Metrics) -> String {
    ["loss", "accuracy", "rewards/accuracies"]
        .iter()
        .filter_map(|k| metrics.get(*k).map(|v| format!("{k} {v:.4}")))
        .collect::<Vec<_>>()
        .join(" ")
}
