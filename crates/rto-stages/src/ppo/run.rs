//! The ppo-train loop: loading and checking the inputs, iterations, metrics, checkpoints and
//! the published folders (see the parent module for the layout).
//!
//! Data parallel (several ranks, `dist::Work`): every rank loads every model and encodes every
//! prompt; each iteration's rollout batch is the single process's, each rank generating and
//! pricing its contiguous block of its generation batches (sampling seeded by the batch's index
//! in the rollout), then the samples are gathered so every rank holds the whole rollout
//! (`rollout::gather`) and computes the same advantages and KL controller update; the update
//! shares each train batch's micro batches (see `learner`). Rank 0 alone writes the metrics
//! log, the rollout tables (the others spill their rows to it), the checkpoints (with ZeRO-1
//! every rank its optimizer shards) and the output folder.

use super::learner::{Learner, LearnerPlace, UpdateSettings};
use super::{Estimator, Inputs, PpoArgs, PpoSettings};
use crate::checkpoint::{last_good, Checkpointer, MetricsLog};
use crate::compat::SharedModels;
use crate::dist::{self, Work};
use crate::encode::{fits_context, skip_hint, Encoder};
use crate::rollout::{
    self, AdvantageEstimator, EncodedPrompt, ResponseJudge, RolloutConfig, RolloutModels, RolloutTable,
};
use crate::stage;
use crate::token_scoring::{BaseDonor, RewardMetadata, RewardModels, Sources};
use crate::trainer::Metrics;
use anyhow::{bail, Context, Result};
use rto_algo::{CosineSchedule, KlController, RewardWeights};
use rto_data::dataset::{read_prompts, DatasetStats};
use rto_data::store::StageDir;
use rto_dist::ProcessGroup;
use rto_model::{parse_device, Head, SamplingConfig, TextTokenizer};
use rto_rng::{permutation, seed_for, Stream};
use serde_json::{json, Value};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::Device;

struct PpoRun<'a> {
    args: &'a PpoArgs,
    inputs: &'a Inputs,
    judge: Option<&'a dyn ResponseJudge>,
    group: &'a ProcessGroup,
    device: Device,
    tokenizer: TextTokenizer,
    scorers: RewardModels,
    learner: Learner<'a>,
    prompts: Vec<EncodedPrompt>,
    eval_prompts: Vec<EncodedPrompt>,
    iterations: usize,
    steps_per_iteration: usize,
    kl: KlController,
    scratch: PathBuf,
    /// The `--tensorboard` run folder of this output, if any.
    tensorboard: Option<PathBuf>,
    /// File metadata of the rollout tables (models, tokenizer, mode); each table sets its
    /// iteration and the weights it was priced with.
    table_metadata: RewardMetadata,
}

pub(super) fn run(
    args: &PpoArgs,
    inputs: &Inputs,
    shared: &SharedModels,
    judge: Option<&dyn ResponseJudge>,
    work: &Work,
) -> Result<Value> {
    let (mut ppo, stats) = PpoRun::load(args, inputs, shared, judge, work.group(), work.scratch()?)?;
    ppo.tensorboard = work.output().and_then(|out| args.logs.run_dir(super::STAGE, out.key()));
    let last = ppo.train()?;
    let Some(out) = work.output() else { return Ok(Value::Null) };
    ppo.publish(out)?;
    // No `resumed_from` here: a resumed run's accepted folder must equal an uninterrupted
    // run's byte for byte (the resume is reported on stderr).
    Ok(json!({
        "iterations": ppo.iterations,
        "dataset": stats,
        "eval_prompts": ppo.eval_prompts.len(),
        "critic": critic_note(args),
        "last": last,
    }))
}

/// What the manifest says about the value model: where it is, or why there is none.
fn critic_note(args: &PpoArgs) -> String {
    let estimator = args.settings.advantage_estimator;
    if estimator.needs_critic() {
        "critic/: the value model trained with the policy".into()
    } else {
        format!("none: --advantage-estimator {} loads, trains and saves no value model", estimator.name())
    }
}

/// Every `every` iterations (0 = never), counting from 1.
fn due(every: usize, iteration: usize) -> bool {
    every > 0 && iteration.is_multiple_of(every)
}

/// Prompt indices of `iteration` (from 1): consecutive slices of an endless series of seeded
/// shuffles of the `n` prompts, one shuffle per pass.
pub fn iteration_prompts(n: usize, batch: usize, seed: u64, iteration: usize) -> Vec<usize> {
    let first = (iteration - 1) * batch;
    let mut order: Option<(usize, Vec<usize>)> = None;
    (first..first + batch)
        .map(|position| {
            let pass = position / n;
            if order.as_ref().map(|o| o.0) != Some(pass) {
                order = Some((pass, permutation(n, seed_for(seed, Stream::PromptOrder, pass as u64))));
            }
            order.as_ref().map_or(0, |o| o.1[position % n])
        })
        .collect()
}

/// Encodes the prompts of `path`; those longer than the limit, or too long for the models
/// together with --max-new-tokens, are skipped and counted.
fn encode_prompts(
    path: &Path,
    settings: &PpoSettings,
    tokenizer: &TextTokenizer,
    max_positions: usize,
) -> Result<(Vec<EncodedPrompt>, DatasetStats)> {
    let records = read_prompts(path, &settings.columns)?;
    let encoder = Encoder::new(tokenizer, settings.limits.clone())?;
    let mut stats = DatasetStats::new(records.len());
    let mut prompts = Vec::with_capacity(records.len());
    for record in &records {
        let context = || format!("{} row {}", path.display(), record.row);
        let Some(ids) = encoder.prompt(&record.prompt, &mut stats).with_context(context)? else { continue };
        if ids.is_empty() {
            stats.skip("empty_prompt");
            continue;
        }
        if !fits_context(ids.len(), settings.max_new_tokens(), max_positions, &mut stats) {
            continue;
        }
        prompts.push(EncodedPrompt { id: record.prompt.id(), text: record.prompt.display_text().to_string(), ids });
    }
    if prompts.is_empty() {
        bail!(
            "{}: no usable prompts out of {} rows: all were skipped (--max-prompt-len {}, --max-new-tokens {}, max_position_embeddings {max_positions}; skipped: {:?}){}",
            path.display(),
            records.len(),
            settings.limits.max_prompt_len,
            settings.max_new_tokens(),
            stats.skipped,
            skip_hint(&stats)
        );
    }
    Ok((prompts, stats))
}

/// Ranks share a rollout by whole forward batches (of whole generation batches, so the samples
/// are a single process's): with fewer batches than ranks, some only train. Said once, by rank 0.
fn warn_idle_ranks(settings: &PpoSettings, group: &ProcessGroup) {
    let (prompts, size, world) = (settings.rollout_batch_size, settings.forward_batch(), group.world_size());
    let batches = prompts.div_ceil(size);
    if group.is_main() && batches < world {
        eprintln!(
            "ppo: batches of {size} prompts (--generation-batch-size, --local-rollout-forward-batch-size) make {batches} of the {prompts} prompts for {world} ranks, so ranks {batches}.. generate nothing; set both to at most {} to use every rank",
            prompts.div_ceil(world)
        );
    }
}

/// The rollout tables' metadata: the policy is the reference (and encodes the text); the
/// weights are the initial ones, each table replaces them with its iteration's.
fn table_metadata(args: &PpoArgs, inputs: &Inputs) -> Result<RewardMetadata> {
    let models = [
        ("reference", Some(args.policy.as_path())),
        ("dpo", inputs.dpo.as_deref()),
        ("reward_model", inputs.reward_model.as_deref()),
    ];
    let reward = &args.settings.reward;
    RewardMetadata::new(super::STAGE, reward.mode(), &reward.config.weights(), &args.policy, &models)
}

impl<'a> PpoRun<'a> {
    fn load(
        args: &'a PpoArgs,
        inputs: &'a Inputs,
        shared: &SharedModels,
        judge: Option<&'a dyn ResponseJudge>,
        group: &'a ProcessGroup,
        scratch: PathBuf,
    ) -> Result<(Self, DatasetStats)> {
        let s = &args.settings;
        let device = parse_device(&args.common.device)?;
        if args.settings.cuda_graph {
            rto_model::decode_graph::check_cuda_graph(device)?;
        }
        let tokenizer = TextTokenizer::from_dir(&args.policy)?;
        let kind = crate::stage::precision(&args.common).kind();
        let policy = rto_model::adapter::load(&args.policy, Head::LanguageModel, device, kind)?;
        let policy = stage::trained_model(policy, &args.trained, args.common.seed)?;
        // A LoRA policy's base stays frozen: the reference (the initial policy) and a DPO
        // model over the same base stand on its weights instead of loading them again.
        let donor = policy.lora().is_some().then_some(BaseDonor { dir: &args.policy, model: &policy });
        let (dpo, reward_model) = (inputs.dpo.as_deref(), inputs.reward_model.as_deref());
        let scorers = RewardModels::load_over(&args.policy, dpo, reward_model, device, kind, donor)?;
        if tokenizer.eos_id.is_none() {
            eprintln!("ppo: {} names no eos_token: every response runs to --max-new-tokens", args.policy.display());
        }
        // The critic: score head kept, or zero (checked with the other models in `cli`).
        let critic =
            inputs.critic.as_deref().map(|dir| rto_model::adapter::load_value_model(dir, device, kind)).transpose()?;
        let max_positions = shared.max_positions;
        let (prompts, stats) = encode_prompts(&args.prompts, s, &tokenizer, max_positions)?;
        let eval_prompts = match (&args.eval_prompts, s.eval_every) {
            (Some(path), every) if every > 0 => encode_prompts(path, s, &tokenizer, max_positions)?.0,
            _ => vec![],
        };
        let iterations = s
            .iterations
            .or(s.max_samples.map(|m| m.div_ceil(s.rollout_batch_size)))
            .unwrap_or(prompts.len().div_ceil(s.rollout_batch_size));
        let steps_per_iteration = s.ppo_epochs * s.rollout_responses() / s.train_batch_size;
        let schedule = |peak_lr| CosineSchedule {
            total_steps: (iterations * steps_per_iteration) as u64,
            warmup_ratio: s.warmup_ratio,
            peak_lr,
            min_lr_ratio: s.min_lr_ratio,
        };
        let update = UpdateSettings {
            clip: s.clip(),
            aggregation: s.loss_aggregation(),
            value_clip: s.value_clip,
            train_batch: s.train_batch_size,
            micro_batch: s.micro_batch(),
            ppo_epochs: s.ppo_epochs,
            packing: s.forward.packing_samples,
            fresh_first_step: s.sampler_logprobs,
        };
        let critic = critic.map(|critic| stage::trained_model(critic, &args.trained, args.common.seed)).transpose()?;
        let place = LearnerPlace { group, sharded: dist::optimizer::shards(s.zero_stage, group) };
        let schedules = (schedule(s.actor_lr), schedule(s.critic_lr));
        let learner = Learner::new((policy, critic), &s.adam, schedules, update, tokenizer.pad_id, place)?;
        warn_idle_ranks(s, group);
        let table_metadata = table_metadata(args, inputs)?;
        let kl = s.reward.controller();
        let ppo = Self {
            args,
            inputs,
            judge,
            group,
            device,
            tokenizer,
            scorers,
            learner,
            prompts,
            eval_prompts,
            iterations,
            steps_per_iteration,
            kl,
            scratch,
            tensorboard: None,
            table_metadata,
        };
        Ok((ppo, stats))
    }

    /// Runs the iterations not yet done; returns the last record.
    fn train(&mut self) -> Result<Value> {
        let checkpointer = Checkpointer::new(&self.scratch);
        let restored = self.learner.restore(&checkpointer)?;
        let start = restored.as_ref().map_or(0, |r| r.step);
        if let Some(restored) = &restored {
            self.kl = serde_json::from_value(restored.state["kl"].clone()).context("checkpoint state.json: `kl`")?;
            if self.group.is_main() {
                eprintln!("ppo: resuming from the checkpoint after iteration {start}");
            }
        }
        let metrics = self.scratch.join("metrics.jsonl");
        let mut log = self
            .group
            .is_main()
            .then(|| MetricsLog::open_with_tensorboard(&metrics, start, self.tensorboard.as_deref()))
            .transpose()?;
        let progress = crate::progress::bar(self.iterations as u64, "ppo");
        if !self.group.is_main() {
            progress.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        progress.set_position(start as u64);
        let mut last = Value::Null;
        for iteration in start + 1..=self.iterations {
            let record = self.iteration(iteration)?;
            if let Some(log) = &mut log {
                log.write(&record)?;
            }
            progress.set_message(format!(
                "reward {:.4} kl {:.4}",
                record["reward"].as_f64().unwrap_or(f64::NAN),
                record["kl"].as_f64().unwrap_or(f64::NAN)
            ));
            progress.inc(1);
            if iteration < self.iterations && due(self.args.settings.checkpoint_every, iteration) {
                self.learner.save(&checkpointer, iteration, json!({"kl": self.kl}))?;
            }
            last = record;
        }
        progress.finish();
        Ok(last)
    }

    fn rollout_config(&self, iteration: usize, weights: RewardWeights) -> RolloutConfig {
        let s = &self.args.settings;
        let sampling = SamplingConfig {
            max_new_tokens: s.max_new_tokens(),
            temperature: s.temperature,
            top_p: s.top_p,
            top_k: s.top_k,
            greedy: false,
            stop_ids: self.tokenizer.eos_id.into_iter().collect(),
            seed: 0,
            cuda_graph: s.cuda_graph,
        };
        let seed = seed_for(self.args.common.seed, Stream::Rollout, iteration as u64);
        RolloutConfig {
            sampling,
            generation_batch: s.generation_batch(),
            forward_batch: s.forward_batch(),
            samples_per_prompt: s.n_samples_per_prompt,
            mode: s.reward.mode(),
            weights,
            pad_id: self.tokenizer.pad_id,
            seed,
            packing: s.forward.packing_samples,
            sampler_logprobs: s.sampler_logprobs,
        }
    }

    /// The table this iteration's rollouts go to, when they are saved; `first` is the index in
    /// the rollout of this rank's first sample (rank 0 writes the table, the others spill).
    fn rollout_table(
        &self,
        iteration: usize,
        weights: &RewardWeights,
        first: usize,
    ) -> Result<Option<RolloutTable<'_>>> {
        let every = self.args.settings.save_rollouts_every;
        if every == 0 || !(iteration == 1 || due(every, iteration) || iteration == self.iterations) {
            return Ok(None);
        }
        let metadata = RewardMetadata {
            weights: self.args.settings.reward.mode().effective_weights(weights),
            iteration: Some(iteration as u32),
            ..self.table_metadata.clone()
        };
        let sources = Sources {
            dpo: self.scorers.dpo.is_some(),
            policy: true,
            reward_model: self.scorers.reward_model.is_some(),
        };
        let dir = self.scratch.join("rollouts").join(format!("iter-{iteration:06}"));
        let first_id = ((iteration - 1) * self.args.settings.rollout_responses() + first) as u64;
        if !self.group.is_main() {
            let (rank, iteration) = (self.group.rank(), iteration as u32);
            return RolloutTable::spilling(&self.scratch, rank, &self.tokenizer, sources, iteration, first_id)
                .map(Some);
        }
        Ok(Some(RolloutTable::create(
            &dir,
            &self.tokenizer,
            sources,
            iteration as u32,
            first_id,
            self.judge.is_some(),
            metadata.to_kv(),
        )?))
    }

    fn estimator(&self) -> AdvantageEstimator {
        let s = &self.args.settings;
        match (s.advantage_estimator, s.advantage_estimator.group()) {
            (_, Some(estimator)) => AdvantageEstimator::Group { estimator, gamma: s.gamma },
            (Estimator::ReinforcePlusPlus, None) => AdvantageEstimator::ReinforcePlusPlus { gamma: s.gamma },
            (_, None) => AdvantageEstimator::Gae { gamma: s.gamma, lambda: s.lambda },
        }
    }

    /// The model folders, for errors raised while scoring.
    fn describe_models(&self) -> String {
        let show = |p: &Option<PathBuf>| p.as_ref().map_or("-".to_string(), |p| p.display().to_string());
        format!(
            "policy/reference {}, DPO {}, reward model {}, critic {}",
            self.args.policy.display(),
            show(&self.inputs.dpo),
            show(&self.inputs.reward_model),
            show(&self.inputs.critic)
        )
    }

    /// Rollout, advantages, update, KL controller, evaluation: one metrics record.
    fn iteration(&mut self, iteration: usize) -> Result<Value> {
        crate::progress::set_activity(format_args!("iteration {iteration}"));
        let clock = Instant::now();
        let s = &self.args.settings;
        let picked = iteration_prompts(self.prompts.len(), s.rollout_batch_size, self.args.common.seed, iteration);
        let prompts: Vec<EncodedPrompt> = picked.into_iter().map(|i| self.prompts[i].clone()).collect();
        let kl_coef = self.kl.coef();
        let config = self.rollout_config(iteration, s.reward.weights(kl_coef));
        let (batches, mine) = self.my_batches(&config);
        let mut table = self.rollout_table(iteration, &config.weights, mine.start)?;
        let models = RolloutModels {
            policy: &self.learner.policy,
            critic: self.learner.critic.as_ref(),
            scorers: &self.scorers,
            tokenizer: &self.tokenizer,
        };
        // A non-finite policy, reward or value stops here; the checkpoint before it is intact.
        let (local, stats) = rollout::collect_batches(&models, prompts, &config, batches, table.as_mut(), self.judge)
            .with_context(|| {
            format!("iteration {iteration}: rollout ({}); {}", self.describe_models(), last_good(&self.scratch))
        })?;
        let mut experience = rollout::gather::gather(self.group, local)?;
        let stats = rollout::gather::gather_stats(self.group, stats)?;
        let advantage_clock = Instant::now();
        let advantages = experience.compute_advantages(self.estimator(), self.device)?;
        if let Some(table) = table {
            table.finish_ranked(&experience, mine, self.group, &self.scratch)?;
        }
        let scoring_s = stats.scoring_s + advantage_clock.elapsed().as_secs_f64();
        self.kl
            .update(stats.kl_per_sample(), experience.len() as u64)
            .with_context(|| format!("iteration {iteration}: KL controller"))?;
        let train_clock = Instant::now();
        let first_step = ((iteration - 1) * self.steps_per_iteration) as u64;
        let scratch = last_good(&self.scratch);
        let update = self
            .learner
            .update(&experience, first_step, seed_for(self.args.common.seed, Stream::Minibatch, iteration as u64))
            .with_context(|| format!("iteration {iteration}: update; {scratch}"))?;
        let training_s = train_clock.elapsed().as_secs_f64();
        let eval = self.evaluate(iteration)?;
        let mut record = json!({"step": iteration, "iteration": iteration, "samples": iteration * s.rollout_responses(), "kl_coef": kl_coef});
        let metrics: Metrics = stats.metrics().into_iter().chain(advantages).chain(update).chain(eval).collect();
        for (key, value) in metrics {
            record[key] = json!(value);
        }
        record["time/scoring"] = json!(scoring_s);
        record["time/training"] = json!(training_s);
        record["time/total"] = json!(clock.elapsed().as_secs_f64());
        Ok(record)
    }

    /// This rank's forward batches of an iteration (its `dist::share`; all of them in one
    /// process) and the rollout samples they make.
    fn my_batches(&self, config: &RolloutConfig) -> (Range<usize>, Range<usize>) {
        let prompts = self.args.settings.rollout_batch_size;
        let batches = dist::my_share(self.group, rollout::forward_batches(prompts, config));
        let samples = |batch: usize| (batch * config.forward_batch.max(1)).min(prompts) * config.samples_per_prompt;
        let mine = samples(batches.start)..samples(batches.end);
        (batches, mine)
    }

    fn evaluate(&self, iteration: usize) -> Result<Metrics> {
        let every = self.args.settings.eval_every;
        if self.eval_prompts.is_empty() || !(due(every, iteration) || iteration == self.iterations) {
            return Ok(Metrics::new());
        }
        let clock = Instant::now();
        let config = self.rollout_config(iteration, RewardWeights::default());
        let mut metrics = rollout::evaluate(
            self.group,
            &self.learner.policy,
            &self.scorers,
            &self.eval_prompts,
            &config.sampling,
            config.generation_batch,
            &self.tokenizer,
            self.judge,
        )
        .with_context(|| format!("iteration {iteration}: evaluation"))?;
        metrics.insert("time/eval".into(), clock.elapsed().as_secs_f64());
        Ok(metrics)
    }

    /// Writes the policy (folder root), the critic, the metrics and the rollouts into `out`.
    fn publish(&self, out: &StageDir) -> Result<()> {
        let trained = &self.args.trained;
        let policy = &self.learner.policy;
        crate::stage::save_trained(policy, out.path(), trained, &self.args.policy, &self.args.policy)?;
        if let (Some(critic), Some(source)) = (&self.learner.critic, &self.inputs.critic) {
            crate::stage::save_trained(critic, &out.join("critic"), trained, source, source)?;
        }
        crate::metrics::publish(&self.scratch.join("metrics.jsonl"), out, super::STAGE)?;
        let rollouts = self.scratch.join("rollouts");
        if rollouts.exists() {
            std::fs::rename(&rollouts, out.join("rollouts"))
                .with_context(|| format!("moving {}", rollouts.display()))?;
        }
        Ok(())
    }
}
