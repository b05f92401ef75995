//! token-reward-annotate: the RTO token rewards of DESIGN.md §4 for every token of a dataset's
//! responses, written as the token-reward table of §3 (`tokens.parquet` + `samples.parquet`).
//!
//! The pricing itself (forwards and the reward formula) is `token_scoring`, shared with
//! ppo-train; this module only reads the data, batches it, and streams rows to the table
//! writer, so memory is bounded by one batch (plus the dataset's text) however large the
//! dataset is.
//!
//! Data: (prompt, response) rows, or preference pairs (`--pairs`, or detected when the file
//! has no response column but does have chosen/rejected). Sample ids follow the source rows so
//! a user can join back to the file: row r is sample r; for pairs, 2r is the chosen and 2r+1
//! the rejected response (column `side`). Skipped rows (see `encode`) leave gaps.
//!
//! `token-reward-annotate show FOLDER` (see [`crate::inspect`]) displays a finished table.

mod command;
mod gold;

pub use command::{main_cli, AnnotateCli, AnnotateCommand};

use crate::compat::check_models;
use crate::dist::spill::{self, Sink};
use crate::dist::Work;
use crate::encode::{fits_context, Encoder, LengthLimits, SEQUENCE_TOO_LONG};
use crate::progress;
use crate::stage;
use crate::token_scoring::{
    load_lm, score_batch, table_rows, BaseDonor, RewardConfig, RewardMetadata, RewardModels, Sources,
};
use anyhow::{bail, Context, Result};
use rto_algo::RewardWeights;
use rto_data::cli::{CommonArgs, ForwardArgs};
use rto_data::dataset::{
    read_preference_pairs, read_responses, ColumnNames, DatasetStats, PreferencePair, Prompt, ResponseRecord,
};
use rto_data::store::{input_key, StageSpec};
use rto_data::token_table::{SampleRecord, TableLayout, TableOptions, TableSummary, TokenTableWriter};
use rto_model::packing::ForwardBatch;
use rto_model::{parse_device, CausalLm, ChatTurn, Head, SequenceBatch, TextTokenizer};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Tensor};

pub const STAGE: &str = "annotate";
const SCHEMA_VERSION: u32 = 1;
/// The name of the other ranks' spill files in the scratch folder (`dist::spill`).
const SPILL: &str = "annotate";

#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
pub struct AnnotateSettings {
    /// The reward: ppo-train's flags (--mode --beta1 --dpo-clip --kl-coef --beta3 --rm-clamp).
    #[command(flatten)]
    #[serde(flatten)]
    pub reward: RewardConfig,
    /// Read --data as preference pairs (default: pairs when the file has chosen/rejected
    /// columns and no response column).
    #[arg(long)]
    pub pairs: bool,
    /// Sequences per forward pass (a pair counts as two).
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    #[command(flatten)]
    #[serde(flatten)]
    pub forward: ForwardArgs,
    #[command(flatten)]
    pub limits: LengthLimits,
    #[command(flatten)]
    pub columns: ColumnNames,
    /// Score every response with a gold judge: `toy` (the shipped task's judge, as in
    /// ppo-train and rto-eval). Adds the `gold_credit` token column (each word's share of the
    /// gold score on its tokens) and sets `gold_score` to the judge's score.
    #[arg(long, value_name = "NAME")]
    // Left out of the key when unset, so tables annotated without a judge keep their keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct AnnotateArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    // Not named `reference`: that arg id is taken by ColumnNames' `--reference-column`.
    /// The reference (SFT) model folder, π_ref.
    #[arg(long = "ref", value_name = "DIR")]
    pub ref_model: PathBuf,
    /// The DPO model folder.
    #[arg(long, value_name = "DIR")]
    pub dpo: PathBuf,
    /// A policy folder: adds logp_policy and the KL penalty −β2·(logp_policy − logp_ref).
    #[arg(long, value_name = "DIR")]
    pub policy: Option<PathBuf>,
    /// A reward model folder: adds the sentence reward on each response's last token.
    #[arg(long, value_name = "DIR")]
    pub reward_model: Option<PathBuf>,
    /// Parquet or JSONL with prompt + response columns, or preference pairs.
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    #[command(flatten)]
    pub settings: AnnotateSettings,
}

/// The dataset, as read: one response per row, or pairs.
enum Rows {
    Responses(Vec<ResponseRecord>),
    Pairs(Vec<PreferencePair>),
}

impl Rows {
    fn len(&self) -> usize {
        match self {
            Rows::Responses(r) => r.len(),
            Rows::Pairs(p) => p.len(),
        }
    }

    /// The prompt and response texts of row `index`; `None` for a pair without a preference
    /// (skipped, as in DPO training).
    fn texts(&self, index: usize, stats: &mut DatasetStats) -> Option<(&Prompt, Vec<Response<'_>>)> {
        match self {
            Rows::Responses(r) => {
                Some((&r[index].prompt, vec![Response { text: &r[index].response, side: None, gold: None }]))
            }
            Rows::Pairs(p) => {
                let pair = &p[index];
                if pair.chosen.trim() == pair.rejected.trim() {
                    stats.skip("chosen_equals_rejected");
                    return None;
                }
                let sides = vec![
                    Response { text: &pair.chosen, side: Some("chosen"), gold: pair.score_chosen },
                    Response { text: &pair.rejected, side: Some("rejected"), gold: pair.score_rejected },
                ];
                Some((&pair.prompt, sides))
            }
        }
    }

    /// Sequences to annotate (a pair is two).
    fn sequences(&self) -> u64 {
        match self {
            Rows::Responses(r) => r.len() as u64,
            Rows::Pairs(p) => 2 * p.len() as u64,
        }
    }
}

/// Annotates `args.data`; everything that can be checked without the forwards (settings,
/// tokenizers, vocabularies, data columns) is checked before the store is touched.
pub fn cli(args: AnnotateArgs) -> Result<()> {
    let settings = &args.settings;
    settings.reward.validate()?;
    if settings.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if let Some(name) = &settings.judge {
        gold::check_judge(name)?;
    }
    let max_positions = context_of_models(&args)?;
    let rows = read_rows(&args.data, settings)?;
    let spec = stage_spec(&args)?;
    if !plan_memory(&args, &spec)? {
        return Ok(());
    }
    let group = crate::dist::group(&args.common.device)?;
    stage::run_ranked(&group, &args.common, &spec, |work| run(&args, &rows, max_positions, work))?;
    Ok(())
}

/// The memory plan of the frozen models (one scoring batch each); `false` under --dry-run.
fn plan_memory(args: &AnnotateArgs, spec: &StageSpec) -> Result<bool> {
    let (rows, tokens) =
        (args.settings.batch_size, args.settings.limits.max_prompt_len + args.settings.limits.max_response_len);
    // The DPO model, the policy and the reward model stand on the reference's weights when they
    // are over its base.
    let reference = Some(("reference", args.ref_model.as_path()));
    // The LM heads run on the response columns only.
    let response = args.settings.limits.max_response_len as u64;
    let lm = |name: &str, dir: &Path, donor| {
        Ok::<_, anyhow::Error>(stage::planned_frozen_lm(name, dir, donor, rows, tokens)?.with_head_tokens(response))
    };
    let mut models = vec![lm("reference", &args.ref_model, None)?, lm("dpo model", &args.dpo, reference)?];
    if let Some(policy) = &args.policy {
        models.push(lm("policy", policy, reference)?);
    }
    if let Some(rm) = &args.reward_model {
        models.push(stage::planned_frozen("reward model", rm, Head::Score, reference, rows, tokens)?);
    }
    stage::plan_memory(&args.common, spec, &models, None)
}

/// The cache key's spec: the settings as resolved (flag aliases leave no trace) and the
/// content of the data and the model folders.
pub fn stage_spec(args: &AnnotateArgs) -> Result<StageSpec> {
    let spec = stage::spec(STAGE, SCHEMA_VERSION, &args.common, &args.settings)?.with_input("data", &args.data);
    let spec = stage::with_model_input(spec, "reference", &args.ref_model)?;
    let mut spec = stage::with_model_input(spec, "dpo", &args.dpo)?;
    for (role, dir) in [("policy", &args.policy), ("reward_model", &args.reward_model)] {
        if let Some(dir) = dir {
            spec = stage::with_model_input(spec, role, dir)?;
        }
    }
    Ok(spec)
}

/// The model folders by role, reference first.
fn model_roles(args: &AnnotateArgs) -> [(&'static str, Option<&Path>); 4] {
    [
        ("reference", Some(args.ref_model.as_path())),
        ("dpo", Some(args.dpo.as_path())),
        ("policy", args.policy.as_deref()),
        ("reward_model", args.reward_model.as_deref()),
    ]
}

/// Checks that the models belong together and returns the longest sequence they all hold.
/// Limits above it are no error: sequences that do not fit are skipped and counted (a note
/// says so), so a short-context model annotates every row that fits it.
fn context_of_models(args: &AnnotateArgs) -> Result<usize> {
    let roles: Vec<(&str, &Path)> = model_roles(args).into_iter().filter_map(|(r, d)| Some((r, d?))).collect();
    let shared = check_models(&roles)?;
    let limits = &args.settings.limits;
    let width = limits.max_prompt_len + limits.max_response_len;
    if width > shared.max_positions {
        eprintln!(
            "{STAGE}: --max-prompt-len {} + --max-response-len {} = {width} tokens is more than max_position_embeddings {} of {}: sequences longer than that are skipped (counted as {SEQUENCE_TOO_LONG})",
            limits.max_prompt_len,
            limits.max_response_len,
            shared.max_positions,
            shared.max_positions_config.display()
        );
    }
    Ok(shared.max_positions)
}

/// Reads the dataset as pairs or responses (see the module docs for the detection rule).
fn read_rows(path: &Path, settings: &AnnotateSettings) -> Result<Rows> {
    let columns = &settings.columns;
    if settings.pairs {
        return Ok(Rows::Pairs(read_preference_pairs(path, columns)?));
    }
    match read_responses(path, columns) {
        Ok(rows) => Ok(Rows::Responses(rows)),
        Err(as_responses) => match read_preference_pairs(path, columns) {
            Ok(pairs) => Ok(Rows::Pairs(pairs)),
            // Neither shape: say what each attempt found, so the user sees which column is off.
            Err(as_pairs) => {
                let (rows_msg, pairs_msg) = (format!("{as_responses:#}"), format!("{as_pairs:#}"));
                if rows_msg == pairs_msg {
                    return Err(as_responses);
                }
                bail!(
                    "{}: neither (prompt, `{}`) rows nor preference pairs (`{}`/`{}`)\n  as rows: {rows_msg}\n  as pairs: {pairs_msg}",
                    path.display(),
                    columns.response,
                    columns.chosen,
                    columns.rejected
                )
            }
        },
    }
}

/// One response of a row: its text, its side of a pair, and its gold score.
struct Response<'a> {
    text: &'a str,
    side: Option<&'static str>,
    gold: Option<f64>,
}

/// The loaded models and everything a batch needs.
struct Annotator<'a> {
    models: RewardModels,
    policy: Option<CausalLm>,
    tokenizer: TextTokenizer,
    settings: &'a AnnotateSettings,
    weights: RewardWeights,
    sources: Sources,
    device: Device,
    /// The longest sequence every model holds (a batch is never wider).
    max_positions: usize,
}

/// One sequence waiting for its batch: ids, and the sample row to fill in.
struct Item {
    prompt: Vec<i64>,
    response: Vec<i64>,
    sample: SampleRecord,
    /// The source row, for pairs (to compare chosen with rejected).
    pair_row: Option<usize>,
    /// What a judge reads of the prompt (the last user turn).
    judge_prompt: String,
}

/// Scores this rank's block of batches; rank 0 writes the table (its block, then the others'
/// in rank order) and returns the manifest's metrics, the other ranks spill theirs (`spill`).
fn run(args: &AnnotateArgs, rows: &Rows, max_positions: usize, work: &Work) -> Result<Value> {
    let settings = &args.settings;
    let device = parse_device(&args.common.device)?;
    let kind = stage::precision(&args.common).kind();
    let models = RewardModels::load(&args.ref_model, Some(&args.dpo), args.reward_model.as_deref(), device, kind)?;
    // A policy over the reference's base stands on its weights, as the DPO model does.
    let donor = BaseDonor { dir: &args.ref_model, model: &models.reference };
    let policy = args.policy.as_ref().map(|dir| load_lm(dir, Some(donor), device, kind)).transpose()?;
    let sources = Sources { dpo: true, policy: policy.is_some(), reward_model: models.reward_model.is_some() };
    let tokenizer = TextTokenizer::from_dir(&args.ref_model)?;
    let weights = settings.reward.weights();
    let annotator = Annotator { models, policy, tokenizer, settings, weights, sources, device, max_positions };
    let is_pairs = matches!(rows, Rows::Pairs(_));
    let judged = settings.judge.is_some();
    let options = TableOptions {
        layout: TableLayout { side: is_pairs, gold_score: judged || has_gold(rows), ..TableLayout::default() },
        metadata: table_metadata(args)?.to_kv(),
        gold_credit: judged,
        ..TableOptions::default()
    };
    let group = work.group();
    let sink = match work.output() {
        Some(out) => Sink::Table(Box::new(TokenTableWriter::create(out.path(), options)?)),
        None => Sink::Spill(spill::SpillWriter::create(spill::path(&work.scratch()?, SPILL, group.rank()))?),
    };
    let Some(done) = annotator.annotate_all(rows, &args.data, sink, work)? else { return Ok(Value::Null) };
    let (summary, tally, stats, seconds) = done;
    Ok(tally.metrics(&summary, &stats, seconds, is_pairs))
}

fn has_gold(rows: &Rows) -> bool {
    matches!(rows, Rows::Pairs(p) if p.iter().any(|p| p.score_chosen.is_some() || p.score_rejected.is_some()))
}

/// File-level metadata: the effective weights (what `mode` applied), the settings, and the
/// content keys of the models, tokenizer and data, so a table says what priced its tokens.
fn table_metadata(args: &AnnotateArgs) -> Result<RewardMetadata> {
    let reward = &args.settings.reward;
    let mut meta = RewardMetadata::new(STAGE, reward.mode, &reward.weights(), &args.ref_model, &model_roles(args))?;
    meta.data = Some(input_key(&args.data)?.as_str().to_string());
    meta.settings = Some(serde_json::to_value(&args.settings)?);
    Ok(meta)
}

impl Annotator<'_> {
    /// Encodes, scores and writes `rows` batch by batch; under several ranks, scores only this
    /// rank's contiguous block of the batches (the batches are those of one process: every
    /// rank encodes every row, which is cheap next to the forwards). Rank 0 returns the table's
    /// summary and totals.
    fn annotate_all(
        &self,
        rows: &Rows,
        file: &Path,
        mut sink: Sink,
        work: &Work,
    ) -> Result<Option<(TableSummary, Tally, DatasetStats, f64)>> {
        let group = work.group();
        let mine = if group.is_distributed() {
            let count = self.for_each_batch(rows, file, &mut DatasetStats::new(rows.len()), |_, _| Ok(()))?;
            crate::dist::my_share(group, count)
        } else {
            0..usize::MAX
        };
        let mut stats = DatasetStats::new(rows.len());
        let mut tally = Tally::default();
        let bar = progress::bar(rows.sequences(), STAGE);
        if !group.is_main() {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let started = Instant::now();
        let batches = self.for_each_batch(rows, file, &mut stats, |index, batch| {
            if !mine.contains(&index) {
                return Ok(());
            }
            self.annotate_batch(batch, &mut sink, &mut tally)
                .with_context(|| format!("annotating {}", file.display()))?;
            let seconds = started.elapsed().as_secs_f64().max(1e-9);
            bar.set_position(tally.samples);
            bar.set_message(format!("{:.0} tok/s", tally.tokens as f64 / seconds));
            Ok(())
        })?;
        bar.finish_and_clear();
        if batches == 0 {
            bail!(
                "{}: no usable rows out of {} (skipped: {:?}){}",
                file.display(),
                rows.len(),
                stats.skipped,
                crate::encode::skip_hint(&stats)
            );
        }
        let scratch = if group.is_distributed() { work.scratch()? } else { PathBuf::new() };
        let gathered = sink.gather(group, &scratch, SPILL, |sample| {
            // Pair row r holds samples 2r and 2r + 1 (see `encode_row`).
            let pair_row = matches!(rows, Rows::Pairs(_)).then_some((sample.sample_id / 2) as usize);
            tally.add(sample, pair_row);
        })?;
        let Some(writer) = gathered else { return Ok(None) };
        let summary = writer.finish()?;
        Ok(Some((summary, tally, stats, started.elapsed().as_secs_f64())))
    }

    /// Encodes `rows` into batches, calling `each(batch index, batch)` in order; returns how
    /// many batches there were.
    fn for_each_batch(
        &self,
        rows: &Rows,
        file: &Path,
        stats: &mut DatasetStats,
        mut each: impl FnMut(usize, Vec<Item>) -> Result<()>,
    ) -> Result<usize> {
        let encoder = Encoder::new(&self.tokenizer, self.settings.limits.clone())?;
        let mut pending: Vec<Item> = Vec::new();
        let mut count = 0;
        for index in 0..rows.len() {
            pending.extend(
                self.encode_row(&encoder, rows, index, stats)
                    .with_context(|| format!("{} row {index}", file.display()))?,
            );
            let more = index + 1 < rows.len();
            while let Some(take) = next_batch(&pending, self.settings.batch_size, self.max_positions, more) {
                each(count, pending.drain(..take).collect())?;
                count += 1;
            }
        }
        Ok(count)
    }

    /// The sequences of source row `index` (none when a limit or rule skips it).
    fn encode_row(&self, encoder: &Encoder, rows: &Rows, index: usize, stats: &mut DatasetStats) -> Result<Vec<Item>> {
        let Some((prompt, responses)) = rows.texts(index, stats) else { return Ok(Vec::new()) };
        let Some(prompt_ids) = encoder.prompt(prompt, stats)? else { return Ok(Vec::new()) };
        let mut encoded = Vec::new();
        for response in &responses {
            let Some(ids) = encoder.response(response.text, stats)? else { return Ok(Vec::new()) };
            encoded.push(ids);
        }
        // A pair is annotated whole or not at all, like the other skip rules.
        let longest = encoded.iter().map(Vec::len).max().unwrap_or(0);
        if !fits_context(prompt_ids.len(), longest, self.max_positions, stats) {
            return Ok(Vec::new());
        }
        let prompt_text = self.render_prompt(prompt)?;
        let is_pair = matches!(rows, Rows::Pairs(_));
        let items = responses.into_iter().zip(encoded).enumerate().map(|(k, (response, ids))| Item {
            prompt: prompt_ids.clone(),
            response: ids,
            sample: SampleRecord {
                sample_id: if is_pair { 2 * index as u64 + k as u64 } else { index as u64 },
                prompt_id: prompt.id(),
                prompt: prompt_text.clone(),
                response: response.text.to_string(),
                n_tokens: 0,
                dpo_return: None,
                sentence_reward: None,
                ret: 0.0,
                gold_score: response.gold,
                iteration: None,
                side: response.side.map(str::to_string),
                group: None,
            },
            pair_row: is_pair.then_some(index),
            judge_prompt: prompt.display_text().to_string(),
        });
        Ok(items.collect())
    }

    /// The prompt exactly as the models saw it (chat template applied when there is one).
    fn render_prompt(&self, prompt: &Prompt) -> Result<String> {
        let messages = prompt.to_messages();
        let turns: Vec<ChatTurn<'_>> =
            messages.iter().map(|m| ChatTurn { role: &m.role, content: &m.content }).collect();
        if self.tokenizer.has_chat_template() {
            self.tokenizer.apply_chat_template(&turns, true)
        } else {
            Ok(turns.iter().map(|t| t.content).collect::<Vec<_>>().join("\n"))
        }
    }

    fn annotate_batch(&self, items: Vec<Item>, sink: &mut Sink, tally: &mut Tally) -> Result<()> {
        let (first, last) = (items[0].sample.sample_id, items[items.len() - 1].sample.sample_id);
        crate::progress::set_activity(format_args!("samples {first}..={last}"));
        let prompts: Vec<Vec<i64>> = items.iter().map(|i| i.prompt.clone()).collect();
        let responses: Vec<Vec<i64>> = items.iter().map(|i| i.response.clone()).collect();
        let batch = SequenceBatch::new(&prompts, &responses, self.tokenizer.pad_id, self.device)?;
        let forward = ForwardBatch::new(&batch, self.settings.forward.packing_samples, self.tokenizer.pad_id)?;
        let logp_policy: Option<Tensor> =
            self.policy.as_ref().map(|p| tch::no_grad(|| forward.logprobs(p, false).logprobs));
        let scores = score_batch(&self.models, &forward, logp_policy, self.settings.reward.mode, &self.weights)
            .with_context(|| format!("samples {first}..={last}"))?;
        let host = scores.to_host()?;
        for (row, item) in items.into_iter().enumerate() {
            let (mut sample, mut tokens) =
                table_rows(&host, self.sources, &item.response, row, &self.tokenizer, item.sample);
            if self.settings.judge.is_some() {
                gold::add_credit(&self.tokenizer, &item.judge_prompt, &item.response, &mut sample, &mut tokens)
                    .with_context(|| format!("judging sample {}", sample.sample_id))?;
            }
            tally.add(&sample, item.pair_row);
            sink.push(sample, &tokens)?;
        }
        Ok(())
    }
}

/// How many of the first `pending` items make the next batch: at most `batch_size`, and only as
/// many as keep its width (longest prompt + longest response, the padded layout) within
/// `max_positions`. `None` while the batch could still grow (`more` rows to come) or nothing is
/// pending. With limits the models hold, the width rule never cuts and batches are plain runs
/// of `batch_size` sequences.
fn next_batch(pending: &[Item], batch_size: usize, max_positions: usize, more: bool) -> Option<usize> {
    let (mut prompt, mut response, mut take) = (0, 0, 0);
    for item in pending.iter().take(batch_size) {
        let (p, r) = (prompt.max(item.prompt.len()), response.max(item.response.len()));
        // Every item fits alone (`fits_context`), so a batch holds at least one.
        if take > 0 && p + r > max_positions {
            break;
        }
        (prompt, response, take) = (p, r, take + 1);
    }
    let could_grow = take == pending.len() && take < batch_size && more;
    (take > 0 && !could_grow).then_some(take)
}

/// Running totals for the manifest, O(1) memory apart from the one unmatched chosen side
/// that a batch boundary can separate from its rejected side.
#[derive(Default)]
struct Tally {
    samples: u64,
    tokens: u64,
    dpo_return: f64,
    ret: f64,
    sentence_reward: f64,
    chosen_waiting: HashMap<usize, f32>,
    pairs: u64,
    chosen_higher: u64,
}

impl Tally {
    fn add(&mut self, sample: &SampleRecord, pair_row: Option<usize>) {
        self.samples += 1;
        self.tokens += sample.n_tokens as u64;
        let dpo = sample.dpo_return.unwrap_or(0.0);
        self.dpo_return += dpo as f64;
        self.ret += sample.ret as f64;
        self.sentence_reward += sample.sentence_reward.unwrap_or(0.0) as f64;
        let Some(row) = pair_row else { return };
        match sample.side.as_deref() {
            Some("chosen") => {
                self.chosen_waiting.insert(row, dpo);
            }
            _ => {
                if let Some(chosen) = self.chosen_waiting.remove(&row) {
                    self.pairs += 1;
                    self.chosen_higher += u64::from(chosen > dpo);
                }
            }
        }
    }

    fn metrics(&self, summary: &TableSummary, stats: &DatasetStats, seconds: f64, is_pairs: bool) -> Value {
        let n = self.samples.max(1) as f64;
        let mut metrics = json!({
            "samples": summary.samples,
            "tokens": summary.tokens,
            "row_groups": summary.row_groups,
            // Wall-clock fields follow one naming rule (`time/*`, `*tokens_per_s`) so that
            // reproducibility checks can drop them by name; everything else is deterministic.
            "time/total": seconds,
            "tokens_per_s": self.tokens as f64 / seconds.max(1e-9),
            "mean_dpo_return": self.dpo_return / n,
            "mean_return": self.ret / n,
            "mean_sentence_reward": self.sentence_reward / n,
            "dataset": stats,
        });
        if is_pairs {
            metrics["pairs"] = json!(self.pairs);
            // With clip = inf this is DPO's reward accuracy on these pairs; clipping can change it.
            metrics["pairs_chosen_dpo_return_higher"] = json!(self.chosen_higher as f64 / self.pairs.max(1) as f64);
        }
        eprintln!(
            "{STAGE}: {} samples, {} tokens in {seconds:.1}s ({:.0} tokens/s)",
            summary.samples,
            summary.tokens,
            self.tokens as f64 / seconds.max(1e-9)
        );
        metrics
    }
}
