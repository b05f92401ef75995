//! Rollouts of ppo-train: sample responses with the KV-cache sampler (K per prompt, see
//! [`RolloutConfig::samples_per_prompt`]), price every token with the shared scorer
//! ([`crate::token_scoring`], the code token-reward-annotate uses), attach the critic's values,
//! and turn the buffer into advantages and returns (DESIGN.md §4, "PPO"; [`Experience`]). Also
//! the rollout tables ([`RolloutTable`]: the token-reward schema with `iteration`, `group` and
//! `advantage` columns) and the optional judge on held-out prompts.
//!
//! Everything PPO trains on is kept per sample on the host ([`Sample`]): the update re-batches
//! the rollout in a shuffled order, so rows are packed again into new batches anyway.

mod experience;
pub mod gather;
mod table;

pub use experience::{AdvantageEstimator, Experience};
pub use table::RolloutTable;

use crate::token_scoring::{score_batch, BatchScores, ForwardTimes, RewardModels};
use crate::trainer::Metrics;
use anyhow::{bail, Context, Result};
use rto_algo::{RewardMode, RewardWeights};
use rto_dist::{ProcessGroup, ReduceOp};
use rto_model::packing::ForwardBatch;
use rto_model::{generate, CausalLm, Generation, SamplingConfig, SequenceBatch, TextTokenizer, TokenOutputs};
use rto_rng::{seed_for, Stream};
use std::ops::Range;
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
    /// Index into [`Experience::prompts`]: the prompt's index in the rollout batch, which is
    /// also the response's group (the K responses to one prompt share it).
    pub prompt: usize,
    /// Generated tokens, EOS included when the policy emitted it.
    pub response: Vec<i64>,
    pub finished: bool,
    pub logp_old: Vec<f32>,
    /// Critic values V(s_h); empty without a critic.
    pub values: Vec<f32>,
    /// The total token rewards (the table's `reward` column).
    pub rewards: Vec<f32>,
    /// The sentence reward β3·clamp(r_RM) on the last token (already in `rewards` there; 0
    /// without a reward model): the outcome part the group estimators baseline on its own.
    pub outcome: f32,
    /// The advantages the update uses and the critic's regression targets, set by
    /// [`Experience::compute_advantages`].
    pub advantages: Vec<f32>,
    pub returns: Vec<f32>,
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
    /// Every model's forward time (the policy's and critic's with the scorers').
    pub times: ForwardTimes,
}

/// The ppo-train path from a batch of responses to what each token earned (no gradients):
/// old log-probs and entropies of the policy (from `sampled`, the sampler's own, when given:
/// then no policy forward runs), the shared token reward for `mode`, values.
pub fn score_responses(
    models: &RolloutModels,
    batch: &ForwardBatch,
    sampled: Option<TokenOutputs>,
    mode: RewardMode,
    weights: &RewardWeights,
) -> Result<ScoredBatch> {
    let mut times = ForwardTimes::on(models.policy.device());
    let policy = match sampled {
        Some(outputs) => outputs,
        None => times.time("policy", || tch::no_grad(|| batch.logprobs(models.policy, true))),
    };
    let entropy = policy.entropy.context("entropy was asked for")?;
    let scores = score_batch(models.scorers, batch, Some(policy.logprobs), mode, weights)?;
    times.absorb(&scores.times);
    let values = models.critic.map(|critic| times.time("critic", || tch::no_grad(|| batch.values(critic))));
    if let Some(v) = &values {
        if !bool::try_from(v.isfinite().all())? {
            bail!("the critic produced non-finite values on this batch");
        }
    }
    Ok(ScoredBatch { scores, entropy, values, times })
}

/// The sampler's log-probs and entropies of `generation` in the layout of `batch` (its
/// responses): what the policy forward of the scoring would give, within float rounding.
pub fn sampled_outputs(generation: &Generation, batch: &SequenceBatch) -> TokenOutputs {
    let (width, device) = (batch.response_width, batch.input_ids.device());
    TokenOutputs {
        logprobs: pad_rows(generation.logprobs.iter().map(Vec::as_slice), width, device),
        entropy: Some(pad_rows(generation.entropies.iter().map(Vec::as_slice), width, device)),
    }
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

/// Running sums behind a rollout's metrics: one per generation batch, and their total.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Tally {
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
}

fn add(slot: &mut Option<f64>, value: f64) {
    *slot = Some(slot.unwrap_or(0.0) + value);
}

fn sum(t: &Tensor) -> f64 {
    t.to_kind(Kind::Double).sum(Kind::Double).double_value(&[])
}

impl Tally {
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

    /// Adds `other`'s sums to these (what a batch adds to the rollout's totals).
    fn absorb(&mut self, other: &Tally) {
        self.samples += other.samples;
        self.tokens += other.tokens;
        self.finished += other.finished;
        self.kl += other.kl;
        self.entropy += other.entropy;
        self.reward += other.reward;
        self.sentence_reward += other.sentence_reward;
        for (slot, value) in [
            (&mut self.rm_score, other.rm_score),
            (&mut self.dpo_return, other.dpo_return),
            (&mut self.judge, other.judge),
        ] {
            if let Some(value) = value {
                add(slot, value);
            }
        }
    }

    /// The sums as f64s, each optional one behind a presence flag (for the collectives).
    pub(crate) fn to_row(self) -> [f64; 13] {
        let flag = |o: Option<f64>| [f64::from(u8::from(o.is_some())), o.unwrap_or(0.0)];
        let ([a, b], [c, d], [e, f]) = (flag(self.rm_score), flag(self.dpo_return), flag(self.judge));
        let sums = [self.samples, self.tokens, self.finished, self.kl, self.entropy, self.reward, self.sentence_reward];
        let [g, h, i, j, k, l, m] = sums;
        [g, h, i, j, k, l, m, a, b, c, d, e, f]
    }

    /// The element-wise sum over the ranks of `group` (an option is present if it is anywhere).
    fn reduce(self, group: &ProcessGroup) -> Result<Self> {
        let sums = group.all_reduce_f64s(&self.to_row(), ReduceOp::Sum)?;
        Ok(Self::from_row(&sums.try_into().map_err(|_| anyhow::anyhow!("all_reduce_f64s changed the length"))?))
    }

    pub(crate) fn from_row(row: &[f64; 13]) -> Self {
        let optional = |flag: f64, value: f64| (flag > 0.0).then_some(value);
        Self {
            samples: row[0],
            tokens: row[1],
            finished: row[2],
            kl: row[3],
            entropy: row[4],
            reward: row[5],
            sentence_reward: row[6],
            rm_score: optional(row[7], row[8]),
            dpo_return: optional(row[9], row[10]),
            judge: optional(row[11], row[12]),
        }
    }
}

/// A rollout's metrics: the sums of every generation batch (kept per batch, so the totals of a
/// rollout collected by several ranks are summed in the order of one process, see
/// [`gather::gather_stats`]) and the wall-clock seconds.
#[derive(Debug, Default)]
pub struct RolloutStats {
    total: Tally,
    pub(crate) batches: Vec<Tally>,
    pub generation_s: f64,
    pub scoring_s: f64,
    /// This process's scoring forwards per model (`time/scoring/<model>`).
    pub forward_s: std::collections::BTreeMap<&'static str, f64>,
    /// Token slots of this process's scoring forwards, of their padded layout, and the real
    /// tokens among them.
    pub token_slots: (i64, i64, i64),
}

impl RolloutStats {
    fn push(&mut self, batch: Tally) {
        self.total.absorb(&batch);
        self.batches.push(batch);
    }

    /// Per-iteration metrics under the names users know from OpenRLHF/TRL. `kl` is the mean
    /// per-response Σ(logp_policy − logp_ref) in nats, the quantity the adaptive controller
    /// steers; `reward` the mean per-response Σ of the token rewards (the `return` column);
    /// `sentence_reward` the mean β3·clamp(r_RM) the reward used, `rm_score` the mean
    /// (normalized) reward-model score before that. `time/scoring` covers the scoring
    /// forwards, the host copies and the rollout-table rows; `time/scoring/<model>` each
    /// model's forwards; `scoring_padding_share` the share of the forwards' token slots that
    /// held padding, and `scoring_padding_share_unpacked` that share in the padded layout (the
    /// same without `--packing-samples`).
    pub fn metrics(&self) -> Metrics {
        let t = &self.total;
        let n = t.samples.max(1.0);
        let mut m = Metrics::from([
            ("kl".into(), t.kl / n),
            ("entropy".into(), t.entropy / t.tokens.max(1.0)),
            ("reward".into(), t.reward / n),
            ("sentence_reward".into(), t.sentence_reward / n),
            ("response_length".into(), t.tokens / n),
            ("eos_fraction".into(), t.finished / n),
            ("time/generation".into(), self.generation_s),
            ("time/scoring".into(), self.scoring_s),
            ("generation_tokens_per_s".into(), t.tokens / self.generation_s.max(1e-9)),
        ]);
        for (key, total) in [("rm_score", t.rm_score), ("dpo_return", t.dpo_return), ("judge_score", t.judge)] {
            if let Some(total) = total {
                m.insert(key.into(), total / n);
            }
        }
        for (model, seconds) in &self.forward_s {
            m.insert(format!("time/scoring/{model}"), *seconds);
        }
        let (slots, padded, real) = self.token_slots;
        if slots > 0 {
            m.insert("scoring_padding_share".into(), 1.0 - real as f64 / slots as f64);
            m.insert("scoring_padding_share_unpacked".into(), 1.0 - real as f64 / padded as f64);
        }
        m
    }

    /// How many forward batches these stats sum (a rank's share, or the whole rollout).
    pub fn forward_batches(&self) -> usize {
        self.batches.len()
    }

    pub fn kl_per_sample(&self) -> f64 {
        self.total.kl / self.total.samples.max(1.0)
    }
}

/// How one iteration samples and prices.
pub struct RolloutConfig {
    /// Sampling settings; the seed is replaced per generation batch (see [`batch_seed`]).
    pub sampling: SamplingConfig,
    /// Prompts per generate call.
    pub generation_batch: usize,
    /// Prompts per scoring forward: a multiple of `generation_batch` (or the whole rollout).
    /// The unit ranks share a rollout by.
    pub forward_batch: usize,
    /// Responses per prompt (K): each prompt fills K consecutive rows of its generate call,
    /// so the K responses to prompt p are samples p·K .. p·K + K − 1 of the rollout. The
    /// sampler draws one uniform per row and step, so the K rows sample independently; with
    /// K = 1 the rows, seeds and draws are those of a rollout before this setting existed.
    pub samples_per_prompt: usize,
    pub mode: RewardMode,
    pub weights: RewardWeights,
    pub pad_id: i64,
    /// Derived from (stage seed, iteration), so a resumed run samples what the first run did.
    pub seed: u64,
    /// Scoring forwards over packed sequences (`--packing-samples`).
    pub packing: bool,
    /// Old log-probs and entropies from the sampler, no policy forward (`--sampler-logprobs`).
    pub sampler_logprobs: bool,
}

/// The sampling seed of generation batch `index` of an iteration whose seed is `seed`.
pub fn batch_seed(seed: u64, index: usize) -> u64 {
    seed_for(seed, Stream::Sampling, index as u64)
}

/// How many scoring forwards a rollout of `prompts` prompts makes (the unit ranks share; each
/// holds whole generation batches).
pub fn forward_batches(prompts: usize, config: &RolloutConfig) -> usize {
    prompts.div_ceil(config.forward_batch.max(1))
}

/// Generates and prices `config.samples_per_prompt` responses to each of `prompts`; hands them
/// to `table` when given (it writes them once the advantages are known).
pub fn collect(
    models: &RolloutModels,
    prompts: Vec<EncodedPrompt>,
    config: &RolloutConfig,
    table: Option<&mut RolloutTable>,
    judge: Option<&dyn ResponseJudge>,
) -> Result<(Experience, RolloutStats)> {
    let batches = 0..forward_batches(prompts.len(), config);
    collect_batches(models, prompts, config, batches, table, judge)
}

/// [`collect`] for the forward batches `batches` of `prompts` only (a rank's
/// [`crate::dist::share`]). Each is the one a single process forms, and each of its generation
/// batches samples with the seed of its index in the rollout, so the ranks' samples together
/// are a single process's; the returned buffer holds every prompt and this call's samples.
pub fn collect_batches(
    models: &RolloutModels,
    prompts: Vec<EncodedPrompt>,
    config: &RolloutConfig,
    batches: Range<usize>,
    mut table: Option<&mut RolloutTable>,
    judge: Option<&dyn ResponseJudge>,
) -> Result<(Experience, RolloutStats)> {
    let device = models.policy.device();
    let (k, size) = (config.samples_per_prompt.max(1), config.forward_batch.max(1));
    let mut stats = RolloutStats::default();
    let mut samples = Vec::with_capacity(batches.len() * size * k);
    for index in batches {
        let first = index * size;
        let chunk = &prompts[first..(first + size).min(prompts.len())];
        let rows: Vec<&EncodedPrompt> = chunk.iter().flat_map(|p| std::iter::repeat_n(p, k)).collect();
        let ids: Vec<Vec<i64>> = rows.iter().map(|p| p.ids.clone()).collect();
        let clock = Instant::now();
        let generation = generate_forward_batch(models.policy, &ids, first, config)?;
        stats.generation_s += clock.elapsed().as_secs_f64();
        let clock = Instant::now();
        let batch = generation.to_batch(&ids, config.pad_id, device)?;
        let forward = ForwardBatch::new(&batch, config.packing, config.pad_id)?;
        let sampled = config.sampler_logprobs.then(|| sampled_outputs(&generation, &batch));
        let scored = score_responses(models, &forward, sampled, config.mode, &config.weights)?;
        scored.times.add_into(&mut stats.forward_s);
        let (slots, padded, real) = forward.token_slots();
        let total = &mut stats.token_slots;
        *total = (total.0 + slots, total.1 + padded, total.2 + real);
        let mut tally = Tally::default();
        tally.add_batch(&scored, &batch, &generation.finished);
        let host = HostRows::of(&scored, &batch.response_lengths)?;
        let judged = judge_chunk(judge, models.tokenizer, &rows, &generation.responses)?;
        if let Some(scores) = &judged {
            add(&mut tally.judge, scores.iter().sum());
        }
        stats.push(tally);
        if let Some(table) = table.as_deref_mut() {
            table.push(&scored, &rows, &generation.responses, judged.as_deref())?;
        }
        samples.extend(host.into_samples(generation, first, k));
        stats.scoring_s += clock.elapsed().as_secs_f64();
    }
    Ok((Experience { prompts, samples, samples_per_prompt: k }, stats))
}

/// A scored forward batch's per-row outputs on the host, each row cut to its response.
struct HostRows {
    logp_old: Vec<Vec<f32>>,
    rewards: Vec<Vec<f32>>,
    /// Empty rows without a critic.
    values: Vec<Vec<f32>>,
    outcome: Vec<f32>,
}

impl HostRows {
    fn of(scored: &ScoredBatch, lengths: &[i64]) -> Result<HostRows> {
        Ok(HostRows {
            logp_old: host_rows(scored.scores.logp_policy.as_ref().context("policy log-probs")?, lengths)?,
            rewards: host_rows(&scored.scores.rewards.reward, lengths)?,
            values: match &scored.values {
                Some(v) => host_rows(v, lengths)?,
                None => vec![vec![]; lengths.len()],
            },
            outcome: row_sums(&scored.scores.rewards.sentence_reward)?,
        })
    }

    /// The samples of a forward batch whose first prompt is prompt `first` (K rows each).
    fn into_samples(self, generation: Generation, first: usize, k: usize) -> impl Iterator<Item = Sample> {
        let per_row = generation.responses.into_iter().zip(generation.finished).zip(self.logp_old).zip(self.rewards);
        per_row.zip(self.values).zip(self.outcome).enumerate().map(
            move |(row, (((((response, finished), logp_old), rewards), values), outcome))| Sample {
                prompt: first + row / k,
                response,
                finished,
                logp_old,
                values,
                rewards,
                outcome,
                advantages: vec![],
                returns: vec![],
            },
        )
    }
}

/// The responses to `ids` (the K rows of each prompt of a forward batch whose first prompt is
/// prompt `first` of the rollout), sampled in generation batches, each with the seed of its
/// index in the rollout.
fn generate_forward_batch(
    policy: &CausalLm,
    ids: &[Vec<i64>],
    first: usize,
    config: &RolloutConfig,
) -> Result<Generation> {
    let (k, size) = (config.samples_per_prompt.max(1), config.generation_batch.max(1));
    let mut all = Generation::default();
    for (offset, rows) in (0..).step_by(size).zip(ids.chunks(size * k)) {
        let seed = batch_seed(config.seed, (first + offset) / size);
        all.append(generate(policy, rows, &SamplingConfig { seed, ..config.sampling.clone() }, config.pad_id)?);
    }
    Ok(all)
}

/// Σ of each row of `t` [B, R] on the host (the sentence reward sits on one token per row).
fn row_sums(t: &Tensor) -> Result<Vec<f32>> {
    let sums = t.to_kind(Kind::Float).sum_dim_intlist([1].as_slice(), false, Kind::Float);
    Ok(Vec::<f32>::try_from(&sums.to_device(Device::Cpu))?)
}

/// Judge scores of a chunk's responses (`rows[i]` is the prompt of response i), when a judge
/// was supplied.
fn judge_chunk(
    judge: Option<&dyn ResponseJudge>,
    tokenizer: &TextTokenizer,
    rows: &[&EncodedPrompt],
    responses: &[Vec<i64>],
) -> Result<Option<Vec<f64>>> {
    let Some(judge) = judge else { return Ok(None) };
    let mut scores = Vec::with_capacity(rows.len());
    for (prompt, response) in rows.iter().zip(responses) {
        scores.push(judge.score(&prompt.text, &tokenizer.decode(response, true)?));
    }
    Ok(Some(scores))
}

/// Greedy responses to held-out prompts, scored by the reward model (`eval/rm_score`, the
/// normalized score before clamping) and by the judge when there is one (`eval/judge_score`).
/// Under several ranks each takes its [`crate::dist::share`] of the generation batches and the
/// sums are added over ranks (every rank gets the metrics).
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    group: &ProcessGroup,
    policy: &CausalLm,
    scorers: &RewardModels,
    prompts: &[EncodedPrompt],
    sampling: &SamplingConfig,
    generation_batch: usize,
    tokenizer: &TextTokenizer,
    judge: Option<&dyn ResponseJudge>,
) -> Result<Metrics> {
    let sampling = SamplingConfig { greedy: true, ..sampling.clone() };
    let mut sums = Tally::default();
    let chunks: Vec<&[EncodedPrompt]> = prompts.chunks(generation_batch.max(1)).collect();
    for chunk in &chunks[crate::dist::my_share(group, chunks.len())] {
        let ids: Vec<Vec<i64>> = chunk.iter().map(|p| p.ids.clone()).collect();
        let generation = generate(policy, &ids, &sampling, tokenizer.pad_id)?;
        sums.tokens += generation.responses.iter().map(Vec::len).sum::<usize>() as f64;
        let batch = generation.to_batch(&ids, tokenizer.pad_id, policy.device())?;
        if let Some(scores) = tch::no_grad(|| scorers.sentence_rewards(&(&batch).into())) {
            add(&mut sums.rm_score, sum(&scores));
        }
        if let Some(judge) = judge {
            for (prompt, response) in chunk.iter().zip(&generation.responses) {
                add(&mut sums.judge, judge.score(&prompt.text, &tokenizer.decode(response, true)?));
            }
        }
    }
    let sums = sums.reduce(group).context("summing the evaluation over ranks")?;
    let n = prompts.len().max(1) as f64;
    let mut metrics = Metrics::from([("eval/response_length".into(), sums.tokens / n)]);
    for (key, total) in [("eval/rm_score", sums.rm_score), ("eval/judge_score", sums.judge)] {
        if let Some(total) = total {
            metrics.insert(key.into(), total / n);
        }
    }
    Ok(metrics)
}
