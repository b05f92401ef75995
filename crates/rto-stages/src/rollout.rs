//! Rollouts of ppo-train: sample responses with the KV-cache sampler, price every token with
//! the shared scorer ([`crate::token_scoring`], the code token-reward-annotate uses), attach
//! the critic's values, and turn the buffer into advantages and returns (DESIGN.md §4, "PPO").
//! Also the rollout tables (token-reward schema with an `iteration` column) and the optional
//! judge on held-out prompts.
//!
//! Everything PPO trains on is kept per sample on the host ([`Sample`]): the update re-batches
//! the rollout in a shuffled order, so rows are packed again into new batches anyway.

use crate::token_scoring::{score_batch, table_rows, BatchScores, RewardModels, Sources};
use crate::trainer::Metrics;
use anyhow::{bail, Context, Result};
use rto_algo::{
    discounted_returns, explained_variance, gae, masked_mean, reinforce_plus_plus_returns, whiten, RewardMode,
    RewardWeights,
};
use rto_data::token_table::{SampleRecord, TableLayout, TableOptions, TokenTableWriter};
use rto_model::{generate, response_logprobs, response_values, CausalLm, SamplingConfig, SequenceBatch, TextTokenizer};
use rto_rng::{seed_for, Stream};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Scores a response to a prompt, as a judge would (the toy task's gold judge replaces GPT-4).
pub trait ResponseJudge {
    fn score(&self, prompt: &str, response: &str) -> f64;
    /// Enters the stage key: runs judged by different programs do not share an output.
    fn name(&self) -> String {
        "judge".into()
    }
}

/// The shipped toy task's gold judge (`rto_task::gold_score`), for `--judge toy`.
pub struct ToyJudge;

impl ResponseJudge for ToyJudge {
    fn score(&self, prompt: &str, response: &str) -> f64 {
        rto_task::gold_score(prompt, response)
    }
    fn name(&self) -> String {
        "toy".into()
    }
}

/// The judge a `--judge NAME` flag names.
pub fn judge_named(name: &str) -> Result<Box<dyn ResponseJudge>> {
    match name {
        "toy" => Ok(Box::new(ToyJudge)),
        other => bail!("--judge {other:?}: the only judge is `toy` (the shipped task's gold judge)"),
    }
}

/// A prompt ready for generation.
#[derive(Debug, Clone)]
pub struct EncodedPrompt {
    /// `Prompt::id`: the `prompt_id` column of the rollout tables.
    pub id: String,
    /// What a judge reads (the last user turn).
    pub text: String,
    pub ids: Vec<i64>,
}

/// One response and what PPO needs of it; per-token vectors have the response's length.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Index into [`Experience::prompts`].
    pub prompt: usize,
    /// Generated tokens, EOS included when the policy emitted it.
    pub response: Vec<i64>,
    pub finished: bool,
    pub logp_old: Vec<f32>,
    /// Critic values V(s_h); empty without a critic.
    pub values: Vec<f32>,
    pub rewards: Vec<f32>,
    /// Whitened advantages and the critic's regression targets, set by
    /// [`Experience::compute_advantages`].
    pub advantages: Vec<f32>,
    pub returns: Vec<f32>,
}

/// One iteration's rollout buffer.
#[derive(Debug, Default)]
pub struct Experience {
    pub prompts: Vec<EncodedPrompt>,
    pub samples: Vec<Sample>,
}

/// How advantages are estimated.
#[derive(Debug, Clone, Copy)]
pub enum AdvantageEstimator {
    /// GAE over the critic's values, advantages whitened over the buffer.
    Gae { gamma: f64, lambda: f64 },
    /// REINFORCE++ (critic-free): whitened discounted returns-to-go.
    ReinforcePlusPlus { gamma: f64 },
}

/// The models a rollout runs.
pub struct RolloutModels<'a> {
    pub policy: &'a CausalLm,
    pub critic: Option<&'a CausalLm>,
    pub scorers: &'a RewardModels,
    pub tokenizer: &'a TextTokenizer,
}

/// What one batch of responses earned, straight from the forwards (device tensors).
pub struct ScoredBatch {
    pub scores: BatchScores,
    /// [B, R] entropy of the policy's next-token distribution.
    pub entropy: Tensor,
    /// [B, R] critic values, when there is a critic.
    pub values: Option<Tensor>,
}

/// The ppo-train path from a batch of responses to what each token earned (no gradients):
/// old log-probs and entropies of the policy, the shared token reward for `mode`, values.
pub fn score_responses(
    models: &RolloutModels,
    batch: &SequenceBatch,
    mode: RewardMode,
    weights: &RewardWeights,
) -> Result<ScoredBatch> {
    let policy = tch::no_grad(|| response_logprobs(models.policy, batch, true));
    let entropy = policy.entropy.context("entropy was asked for")?;
    let scores = score_batch(models.scorers, batch, Some(policy.logprobs), mode, weights)?;
    let values = models.critic.map(|critic| tch::no_grad(|| response_values(critic, batch)));
    if let Some(v) = &values {
        if !bool::try_from(v.isfinite().all())? {
            bail!("the critic produced non-finite values on this batch");
        }
    }
    Ok(ScoredBatch { scores, entropy, values })
}

/// `t` [B, R] on the host, each row cut to its response length.
pub fn host_rows(t: &Tensor, lengths: &[i64]) -> Result<Vec<Vec<f32>>> {
    let rows = Vec::<Vec<f32>>::try_from(&t.to_kind(Kind::Float).to_device(Device::Cpu))?;
    Ok(rows
        .into_iter()
        .zip(lengths)
        .map(|(mut r, &len)| {
            r.truncate(len as usize);
            r
        })
        .collect())
}

/// Rows of different lengths as one zero-padded [N, width] tensor.
pub fn pad_rows<'a>(rows: impl Iterator<Item = &'a [f32]>, width: i64, device: Device) -> Tensor {
    let mut flat = Vec::new();
    let mut n = 0i64;
    for row in rows {
        flat.extend_from_slice(row);
        flat.extend(std::iter::repeat_n(0f32, width as usize - row.len()));
        n += 1;
    }
    Tensor::from_slice(&flat).view([n, width]).to_device(device)
}

/// Running sums behind a rollout's metrics.
#[derive(Debug, Default)]
pub struct RolloutStats {
    samples: f64,
    tokens: f64,
    finished: f64,
    kl: f64,
    entropy: f64,
    reward: f64,
    sentence_reward: f64,
    rm_score: Option<f64>,
    dpo_return: Option<f64>,
    judge: Option<f64>,
    pub generation_s: f64,
    pub scoring_s: f64,
}

fn add(slot: &mut Option<f64>, value: f64) {
    *slot = Some(slot.unwrap_or(0.0) + value);
}

fn sum(t: &Tensor) -> f64 {
    t.to_kind(Kind::Double).sum(Kind::Double).double_value(&[])
}

impl RolloutStats {
    fn add_batch(&mut self, scored: &ScoredBatch, batch: &SequenceBatch, finished: &[bool]) {
        let s = &scored.scores;
        let mask = &batch.response_mask;
        self.samples += batch.len() as f64;
        self.tokens += batch.response_lengths.iter().sum::<i64>() as f64;
        self.finished += finished.iter().filter(|&&f| f).count() as f64;
        if let Some(lp) = &s.logp_policy {
            self.kl += sum(&((lp - &s.logp_ref) * mask));
        }
        self.entropy += sum(&(&scored.entropy * mask));
        self.reward += sum(&s.rewards.total_return);
        self.sentence_reward += sum(&s.rewards.sentence_reward);
        if let Some(r) = &s.sentence_reward {
            add(&mut self.rm_score, sum(r));
        }
        if s.logp_dpo.is_some() {
            add(&mut self.dpo_return, sum(&s.rewards.dpo_return));
        }
    }

    /// Per-iteration metrics under the names users know from OpenRLHF/TRL. `kl` is the mean
    /// per-response Σ(logp_policy − logp_ref) in nats, the quantity the adaptive controller
    /// steers; `reward` the mean per-response Σ of the token rewards (the `return` column);
    /// `sentence_reward` the mean β3·clamp(r_RM) the reward used, `rm_score` the mean
    /// (normalized) reward-model score before that. `time/scoring` covers the scoring
    /// forwards, the host copies and the rollout-table rows.
    pub fn metrics(&self) -> Metrics {
        let n = self.samples.max(1.0);
        let mut m = Metrics::from([
            ("kl".into(), self.kl / n),
            ("entropy".into(), self.entropy / self.tokens.max(1.0)),
            ("reward".into(), self.reward / n),
            ("sentence_reward".into(), self.sentence_reward / n),
            ("response_length".into(), self.tokens / n),
            ("eos_fraction".into(), self.finished / n),
            ("time/generation".into(), self.generation_s),
            ("time/scoring".into(), self.scoring_s),
            ("generation_tokens_per_s".into(), self.tokens / self.generation_s.max(1e-9)),
        ]);
        for (key, total) in [("rm_score", self.rm_score), ("dpo_return", self.dpo_return), ("judge_score", self.judge)]
        {
            if let Some(total) = total {
                m.insert(key.into(), total / n);
            }
        }
        m
    }

    pub fn kl_per_sample(&self) -> f64 {
        self.kl / self.samples.max(1.0)
    }
}

/// How one iteration samples and prices.
pub struct RolloutConfig {
    /// Sampling settings; the seed is replaced per generation batch (see [`batch_seed`]).
    pub sampling: SamplingConfig,
    /// Prompts per generate call and per scoring forward.
    pub generation_batch: usize,
    pub mode: RewardMode,
    pub weights: RewardWeights,
    pub pad_id: i64,
    /// Derived from (stage seed, iteration), so a resumed run samples what the first run did.
    pub seed: u64,
}

/// The sampling seed of generation batch `index` of an iteration whose seed is `seed`.
pub fn batch_seed(seed: u64, index: usize) -> u64 {
    seed_for(seed, Stream::Sampling, index as u64)
}

/// Generates and prices responses to `prompts`; writes them to `table` when given.
pub fn collect(
    models: &RolloutModels,
    prompts: Vec<EncodedPrompt>,
    config: &RolloutConfig,
    mut table: Option<&mut RolloutTable>,
    judge: Option<&dyn ResponseJudge>,
) -> Result<(Experience, RolloutStats)> {
    let device = models.policy.device();
    let mut stats = RolloutStats::default();
    let mut samples = Vec::with_capacity(prompts.len());
    for (index, first) in (0..prompts.len()).step_by(config.generation_batch.max(1)).enumerate() {
        let chunk = &prompts[first..(first + config.generation_batch.max(1)).min(prompts.len())];
        let ids: Vec<Vec<i64>> = chunk.iter().map(|p| p.ids.clone()).collect();
        let clock = Instant::now();
        let sampling = SamplingConfig { seed: batch_seed(config.seed, index), ..config.sampling.clone() };
        let generation = generate(models.policy, &ids, &sampling, config.pad_id)?;
        stats.generation_s += clock.elapsed().as_secs_f64();
        let clock = Instant::now();
        let batch = generation.to_batch(&ids, config.pad_id, device)?;
        let scored = score_responses(models, &batch, config.mode, &config.weights)?;
        stats.add_batch(&scored, &batch, &generation.finished);
        let lengths = &batch.response_lengths;
        let logp_old = host_rows(scored.scores.logp_policy.as_ref().context("policy log-probs")?, lengths)?;
        let rewards = host_rows(&scored.scores.rewards.reward, lengths)?;
        let values = match &scored.values {
            Some(v) => host_rows(v, lengths)?,
            None => vec![vec![]; chunk.len()],
        };
        let judged = judge_chunk(judge, models.tokenizer, chunk, &generation.responses)?;
        if let Some(scores) = &judged {
            add(&mut stats.judge, scores.iter().sum());
        }
        if let Some(table) = table.as_deref_mut() {
            table.push(&scored, chunk, &generation.responses, judged.as_deref())?;
        }
        let rows = generation
            .responses
            .into_iter()
            .zip(generation.finished)
            .zip(logp_old.into_iter().zip(rewards).zip(values));
        for (row, ((response, finished), ((logp_old, rewards), values))) in rows.enumerate() {
            samples.push(Sample {
                prompt: first + row,
                response,
                finished,
                logp_old,
                values,
                rewards,
                advantages: vec![],
                returns: vec![],
            });
        }
        stats.scoring_s += clock.elapsed().as_secs_f64();
    }
    Ok((Experience { prompts, samples }, stats))
}

/// Judge scores of a chunk's responses, when a judge was supplied.
fn judge_chunk(
    judge: Option<&dyn ResponseJudge>,
    tokenizer: &TextTokenizer,
    chunk: &[EncodedPrompt],
    responses: &[Vec<i64>],
) -> Result<Option<Vec<f64>>> {
    let Some(judge) = judge else { return Ok(None) };
    let mut scores = Vec::with_capacity(chunk.len());
    for (prompt, response) in chunk.iter().zip(responses) {
        scores.push(judge.score(&prompt.text, &tokenizer.decode(response, true)?));
    }
    Ok(Some(scores))
}

impl Experience {
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    fn width(&self) -> i64 {
        self.samples.iter().map(|s| s.response.len()).max().unwrap_or(1) as i64
    }

    fn lengths(&self) -> Vec<i64> {
        self.samples.iter().map(|s| s.response.len() as i64).collect()
    }

    /// A per-token field of every sample as one padded [N, R] tensor.
    pub fn padded(&self, field: fn(&Sample) -> &[f32], device: Device) -> Tensor {
        pad_rows(self.samples.iter().map(field), self.width(), device)
    }

    /// The response mask [N, R] of the whole buffer.
    pub fn mask(&self, device: Device) -> Tensor {
        let ones: Vec<Vec<f32>> = self.samples.iter().map(|s| vec![1.0; s.response.len()]).collect();
        pad_rows(ones.iter().map(Vec::as_slice), self.width(), device)
    }

    /// Fills every sample's advantages (whitened over the whole buffer, DESIGN.md §4) and
    /// returns; gives the buffer-level metrics `returns`, `advantages` (before whitening),
    /// `values` and `explained_variance` (token means).
    pub fn compute_advantages(&mut self, estimator: AdvantageEstimator, device: Device) -> Result<Metrics> {
        let mask = self.mask(device);
        let rewards = self.padded(|s| &s.rewards, device);
        let mean = |t: &Tensor| masked_mean(t, &mask).double_value(&[]);
        let mut metrics = Metrics::new();
        let (advantages, returns) = match estimator {
            AdvantageEstimator::Gae { gamma, lambda } => {
                let values = self.padded(|s| &s.values, device);
                let (advantages, returns) = gae(&rewards, &values, &mask, gamma, lambda)?;
                metrics.insert("values".into(), mean(&values));
                metrics.insert("advantages".into(), mean(&advantages));
                metrics.insert("explained_variance".into(), explained_variance(&values, &returns, &mask));
                (whiten(&advantages, &mask, true), returns)
            }
            AdvantageEstimator::ReinforcePlusPlus { gamma } => {
                let returns = discounted_returns(&rewards, &mask, gamma)?;
                metrics.insert("advantages".into(), mean(&returns));
                (reinforce_plus_plus_returns(&rewards, &mask, gamma)?, returns)
            }
        };
        metrics.insert("returns".into(), mean(&returns));
        let lengths = self.lengths();
        let advantages = host_rows(&advantages, &lengths)?;
        let returns = host_rows(&returns, &lengths)?;
        for (sample, (a, r)) in self.samples.iter_mut().zip(advantages.into_iter().zip(returns)) {
            sample.advantages = a;
            sample.returns = r;
        }
        Ok(metrics)
    }
}

/// One iteration's rollouts as a token-reward table (DESIGN.md §3, `iteration` column).
pub struct RolloutTable<'a> {
    writer: TokenTableWriter,
    tokenizer: &'a TextTokenizer,
    sources: Sources,
    iteration: u32,
    next_id: u64,
}

impl<'a> RolloutTable<'a> {
    /// `first_id` makes sample ids unique across iterations, so tables can be concatenated.
    pub fn create(
        dir: &Path,
        tokenizer: &'a TextTokenizer,
        sources: Sources,
        iteration: u32,
        first_id: u64,
        gold_score: bool,
        metadata: BTreeMap<String, String>,
    ) -> Result<Self> {
        let layout = TableLayout { iteration: true, side: false, gold_score };
        let writer = TokenTableWriter::create(dir, TableOptions { layout, metadata, ..Default::default() })?;
        Ok(Self { writer, tokenizer, sources, iteration, next_id: first_id })
    }

    fn push(
        &mut self,
        scored: &ScoredBatch,
        prompts: &[EncodedPrompt],
        responses: &[Vec<i64>],
        judged: Option<&[f64]>,
    ) -> Result<()> {
        let host = scored.scores.to_host()?;
        for (row, (prompt, response)) in prompts.iter().zip(responses).enumerate() {
            let sample = SampleRecord {
                sample_id: self.next_id,
                prompt_id: prompt.id.clone(),
                prompt: self.tokenizer.decode(&prompt.ids, false)?,
                response: self.tokenizer.decode(response, true)?,
                n_tokens: 0,
                dpo_return: None,
                sentence_reward: None,
                ret: 0.0,
                gold_score: judged.map(|j| j[row]),
                iteration: Some(self.iteration),
                side: None,
            };
            let (sample, tokens) = table_rows(&host, self.sources, response, row, self.tokenizer, sample);
            self.writer.push_sample(sample, &tokens)?;
            self.next_id += 1;
        }
        Ok(())
    }

    pub fn finish(self) -> Result<()> {
        self.writer.finish().map(|_| ())
    }
}

/// Greedy responses to held-out prompts, scored by the reward model (`eval/rm_score`, the
/// normalized score before clamping) and by the judge when there is one (`eval/judge_score`).
pub fn evaluate(
    policy: &CausalLm,
    scorers: &RewardModels,
    prompts: &[EncodedPrompt],
    sampling: &SamplingConfig,
    generation_batch: usize,
    tokenizer: &TextTokenizer,
    judge: Option<&dyn ResponseJudge>,
) -> Result<Metrics> {
    let sampling = SamplingConfig { greedy: true, ..sampling.clone() };
    let (mut tokens, mut rm, mut judged) = (0.0, None, None);
    for chunk in prompts.chunks(generation_batch.max(1)) {
        let ids: Vec<Vec<i64>> = chunk.iter().map(|p| p.ids.clone()).collect();
        let generation = generate(policy, &ids, &sampling, tokenizer.pad_id)?;
        tokens += generation.responses.iter().map(Vec::len).sum::<usize>() as f64;
        let batch = generation.to_batch(&ids, tokenizer.pad_id, policy.device())?;
        if let Some(scores) = tch::no_grad(|| scorers.sentence_rewards(&batch)) {
            add(&mut rm, sum(&scores));
        }
        if let Some(judge) = judge {
            for (prompt, response) in chunk.iter().zip(&generation.responses) {
                add(&mut judged, judge.score(&prompt.text, &tokenizer.decode(response, true)?));
            }
        }
    }
    let n = prompts.len().max(1) as f64;
    let mut metrics = Metrics::from([("eval/response_length".into(), tokens / n)]);
    for (key, total) in [("eval/rm_score", rm), ("eval/judge_score", judged)] {
        if let Some(total) = total {
            metrics.insert(key.into(), total / n);
        }
    }
    Ok(metrics)
}
