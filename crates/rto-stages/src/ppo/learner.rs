//! The PPO update (DESIGN.md §4, "PPO"): `ppo_epochs` passes over a rollout in shuffled train
//! batches of micro batches; the actor minimises the clipped surrogate (reduced as
//! `--loss-agg-mode` says, clipped to [1 − ε, 1 + clip_high]), the critic, when the estimator
//! has one, the clipped value loss, each with its own AdamW (saveable state, for bitwise
//! resume) and cosine schedule.
//!
//! Data parallel (a process group of several ranks, each holding the whole rollout): each train
//! batch's micro batches are shared out in contiguous blocks (`dist::share`, as the supervised
//! trainer does), each micro batch's losses keep their share of the whole train batch, so the
//! gradients summed over ranks (`dist::optimizer`: buckets, or ZeRO-1's reduce-scatter) are the
//! train batch's; every rank clips by the one global norm and steps on the same numbers, so the
//! actor and the critic stay equal on every rank. Metrics are summed over ranks the same way.

use crate::checkpoint::{Checkpointer, Restored};
use crate::dist::{self, optimizer, optimizer::Optimizer};
use crate::optim::AdamWSettings;
use crate::rollout::{pad_rows, Experience, Sample};
use crate::trainer::Metrics;
use anyhow::{bail, Context, Result};
use rto_algo::{policy_loss, value_loss, ClipRange, CosineSchedule, LossAggregation};
use rto_dist::ProcessGroup;
use rto_model::packing::ForwardBatch;
use rto_model::{CausalLm, SequenceBatch};
use serde_json::Value;
use tch::nn::VarStore;
use tch::Tensor;

/// Batch sizes, clipping and loss reduction of the update.
#[derive(Debug, Clone)]
pub struct UpdateSettings {
    pub clip: ClipRange,
    pub aggregation: LossAggregation,
    pub value_clip: f64,
    pub train_batch: usize,
    pub micro_batch: usize,
    pub ppo_epochs: usize,
    /// Forwards over packed sequences (`--packing-samples`).
    pub packing: bool,
    /// The first optimizer step of an update takes its own forward's (detached) log-probs as
    /// the old ones: the policy has not moved yet, so the ratio is exactly 1 whatever the
    /// rollout's log-probs came from (`--sampler-logprobs`: the sampler's, a few ulps away).
    pub fresh_first_step: bool,
}

pub struct Learner<'g> {
    pub policy: CausalLm,
    /// None for the critic-free estimators (all but GAE).
    pub critic: Option<CausalLm>,
    group: &'g ProcessGroup,
    actor_opt: Optimizer<'g>,
    critic_opt: Option<Optimizer<'g>>,
    pub actor_lr: CosineSchedule,
    pub critic_lr: CosineSchedule,
    settings: UpdateSettings,
    pad_id: i64,
}

/// The weights of a micro batch's losses in its train batch's.
#[derive(Debug, Clone, Copy)]
struct Shares {
    actor: f64,
    rows: f64,
}

/// Averages metric maps over train batches.
#[derive(Default)]
struct Averager {
    sums: Metrics,
    count: f64,
}

impl Averager {
    fn add(&mut self, metrics: &Metrics) {
        for (key, value) in metrics {
            *self.sums.entry(key.clone()).or_default() += value;
        }
        self.count += 1.0;
    }

    fn mean(self) -> Metrics {
        let n = self.count.max(1.0);
        self.sums.into_iter().map(|(k, v)| (k, v / n)).collect()
    }
}

/// Where a learner trains: its process group, and whether it shards the optimizer states
/// (`--zero-stage 1` on several ranks).
#[derive(Clone, Copy)]
pub struct LearnerPlace<'g> {
    pub group: &'g ProcessGroup,
    pub sharded: bool,
}

impl<'g> Learner<'g> {
    pub fn new(
        (policy, critic): (CausalLm, Option<CausalLm>),
        adam: &AdamWSettings,
        schedules: (CosineSchedule, CosineSchedule),
        settings: UpdateSettings,
        pad_id: i64,
        place: LearnerPlace<'g>,
    ) -> Result<Self> {
        schedules.0.validate().context("actor learning-rate schedule")?;
        schedules.1.validate().context("critic learning-rate schedule")?;
        let LearnerPlace { group, sharded } = place;
        let actor_opt = Optimizer::new(&policy.vs, adam, sharded, group)?;
        let critic_opt = critic.as_ref().map(|c| Optimizer::new(&c.vs, adam, sharded, group)).transpose()?;
        Ok(Self {
            policy,
            critic,
            group,
            actor_opt,
            critic_opt,
            actor_lr: schedules.0,
            critic_lr: schedules.1,
            settings,
            pad_id,
        })
    }

    /// Trains on `experience`; `step` is the global optimizer step the iteration starts at
    /// (it places the learning rates on their schedules) and `seed` orders the samples.
    pub fn update(&mut self, experience: &Experience, mut step: u64, seed: u64) -> Result<Metrics> {
        let mut average = Averager::default();
        let first = step;
        for epoch in 0..self.settings.ppo_epochs {
            let order = crate::trainer::epoch_order(experience.len(), seed, epoch);
            for batch in order.chunks(self.settings.train_batch) {
                let fresh = self.settings.fresh_first_step && step == first;
                average.add(&self.train_batch(experience, batch, step, fresh)?);
                step += 1;
            }
        }
        let mut metrics = average.mean();
        // The rates of the iteration's last step, not an average along the schedule.
        metrics.insert("actor_lr".into(), self.actor_lr.lr_at(step - 1));
        if self.critic.is_some() {
            metrics.insert("critic_lr".into(), self.critic_lr.lr_at(step - 1));
        }
        Ok(metrics)
    }

    /// One optimizer step of each model on the samples `batch`; `fresh`: the old log-probs
    /// are the step's own (see [`UpdateSettings::fresh_first_step`]).
    fn train_batch(&mut self, experience: &Experience, batch: &[usize], step: u64, fresh: bool) -> Result<Metrics> {
        self.policy.begin_lora_step(step, self.group.rank() as u64);
        if let Some(critic) = &self.critic {
            critic.begin_lora_step(step, self.group.rank() as u64);
        }
        self.actor_opt.zero_grad();
        if let Some(opt) = &mut self.critic_opt {
            opt.zero_grad();
        }
        let mut metrics = Metrics::new();
        let tokens = |items: &[usize]| items.iter().map(|&i| experience.samples[i].response.len()).sum::<usize>();
        let whole = (batch.len(), tokens(batch));
        let micros: Vec<&[usize]> = batch.chunks(self.settings.micro_batch).collect();
        for &micro in &micros[dist::my_share(self.group, micros.len())] {
            // The value loss is a per-sequence mean, so its micro batch weighs by its share of
            // rows; the policy loss by its share of the aggregation's normalizer.
            let shares = Shares {
                actor: self.settings.aggregation.micro_weight((micro.len(), tokens(micro)), whole),
                rows: micro.len() as f64 / batch.len() as f64,
            };
            for (key, value) in self.micro_step(experience, micro, shares, fresh)? {
                *metrics.entry(key).or_default() += value;
            }
        }
        // Summed before the check, so every rank stops at the same step.
        let mut metrics = dist::reduce_metrics(self.group, metrics)?;
        if let Some((key, value)) = metrics.iter().find(|(_, v)| !v.is_finite()) {
            bail!("{key} is {value} at optimizer step {}", step + 1);
        }
        let group = self.group;
        let actor_norm = self.actor_opt.step(group, self.actor_lr.lr_at(step)).context("policy (actor) step")?;
        metrics.insert("actor_grad_norm".into(), actor_norm);
        if let Some(opt) = &mut self.critic_opt {
            let critic_norm = opt.step(group, self.critic_lr.lr_at(step)).context("critic step")?;
            metrics.insert("critic_grad_norm".into(), critic_norm);
        }
        Ok(metrics)
    }

    /// Forward and backward of both losses on the samples `items`, each scaled by its share;
    /// the metrics come scaled too (`policy_loss` by the actor's share, the rest by rows).
    fn micro_step(&mut self, experience: &Experience, items: &[usize], shares: Shares, fresh: bool) -> Result<Metrics> {
        let samples: Vec<&Sample> = items.iter().map(|&i| &experience.samples[i]).collect();
        let prompts: Vec<Vec<i64>> = samples.iter().map(|s| experience.prompts[s.prompt].ids.clone()).collect();
        let responses: Vec<Vec<i64>> = samples.iter().map(|s| s.response.clone()).collect();
        let device = self.policy.device();
        let batch = SequenceBatch::new(&prompts, &responses, self.pad_id, device)?;
        let field = |f: fn(&Sample) -> &[f32]| -> Tensor {
            pad_rows(samples.iter().map(|s| f(s)), batch.response_width, device)
        };
        let forward = ForwardBatch::new(&batch, self.settings.packing, self.pad_id)?;
        let logp = forward.logprobs(&self.policy, false).logprobs;
        let logp_old = if fresh { logp.detach() } else { field(|s| &s.logp_old) };
        let actor = policy_loss(
            &logp,
            &logp_old,
            &field(|s| &s.advantages),
            &batch.response_mask,
            self.settings.clip,
            self.settings.aggregation,
        )?;
        self.policy.backward(&(&actor.loss * shares.actor));
        let mut metrics = Metrics::from([
            ("policy_loss".into(), actor.loss.double_value(&[]) * shares.actor),
            ("clipfrac".into(), actor.clipfrac * shares.rows),
            ("approx_kl".into(), actor.approx_kl * shares.rows),
        ]);
        if let Some(critic) = &self.critic {
            let values = forward.values(critic);
            let critic_out = value_loss(
                &values,
                &field(|s| &s.values),
                &field(|s| &s.returns),
                &batch.response_mask,
                Some(self.settings.value_clip),
            )?;
            critic.backward(&(&critic_out.loss * shares.rows));
            metrics.insert("value_loss".into(), critic_out.loss.double_value(&[]) * shares.rows);
            metrics.insert("value_clipfrac".into(), critic_out.clipfrac * shares.rows);
        }
        Ok(metrics)
    }

    /// Saves both models and both optimizers after `iteration`, with `state` (KL controller).
    /// Every rank calls it (rank 0 writes; with ZeRO-1 each rank its shards).
    pub fn save(&self, checkpointer: &Checkpointer, iteration: usize, state: Value) -> Result<()> {
        let mut models: Vec<(&str, &VarStore, &Optimizer)> = vec![("actor", &self.policy.vs, &self.actor_opt)];
        if let (Some(critic), Some(opt)) = (&self.critic, &self.critic_opt) {
            models.push(("critic", &critic.vs, opt));
        }
        optimizer::save(checkpointer, self.group, iteration, &models, state)
    }

    /// Restores the latest checkpoint, if any; its `step` is the last completed iteration.
    pub fn restore(&mut self, checkpointer: &Checkpointer) -> Result<Option<Restored>> {
        let mut models: Vec<(&str, &mut VarStore, &mut Optimizer<'g>)> =
            vec![("actor", &mut self.policy.vs, &mut self.actor_opt)];
        if let (Some(critic), Some(opt)) = (&mut self.critic, &mut self.critic_opt) {
            models.push(("critic", &mut critic.vs, opt));
        }
        // tch's VarStore::read_safetensors copies into the variables without no_grad, which
        // libtorch refuses for leaves that require grad.
        tch::no_grad(|| optimizer::restore(checkpointer, &mut models))
    }
}
