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

pub use command::{main_cli, AnnotateCli, AnnotateCommand};

use crate::encode::{Encoder, LengthLimits};
use crate::progress;
use crate::stage;
use crate::token_scoring::{check_same_tokenizer, model_metadata, score_batch, table_rows, RewardModels, Sources};
use anyhow::{bail, Context, Result};
use rto_algo::{RewardMode, RewardWeights};
use rto_data::cli::CommonArgs;
use rto_data::dataset::{
    read_preference_pairs, read_responses, ColumnNames, DatasetStats, PreferencePair, Prompt, ResponseRecord,
};
use rto_data::store::{hash_file, input_key, StageDir};
use rto_data::token_table::{SampleRecord, TableLayout, TableOptions, TableSummary, TokenTableWriter};
use rto_model::{parse_device, response_logprobs, CausalLm, ChatTurn, Head, ModelConfig, SequenceBatch, TextTokenizer};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

pub const STAGE: &str = "annotate";
const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
pub struct AnnotateSettings {
    /// Reward composition: rto, ppo (β1 = 0), dpo-only (β3 = 0), ddpo, rs-ppo.
    #[arg(long, default_value = "rto")]
    pub mode: RewardMode,
    /// β1: scale of the DPO log-ratio.
    #[arg(long, default_value_t = 0.05)]
    pub beta1: f64,
    /// c: each token's DPO reward is clipped to [−c, c] ("inf" turns clipping off).
    #[arg(long, default_value_t = 0.05)]
    pub clip: f64,
    /// β2: KL-penalty coefficient (only with --policy).
    #[arg(long, default_value_t = 0.01)]
    pub beta2: f64,
    /// β3: weight of the reward model's sentence reward (only with --reward-model).
    #[arg(long, default_value_t = 1.0)]
    pub beta3: f64,
    /// The reward-model score is clamped to [−x, x] before β3.
    #[arg(long, default_value_t = 10.0)]
    pub rm_clamp: f64,
    /// Read --data as preference pairs (default: pairs when the file has chosen/rejected
    /// columns and no response column).
    #[arg(long)]
    pub pairs: bool,
    /// Sequences per forward pass (a pair counts as two).
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    #[command(flatten)]
    pub limits: LengthLimits,
    #[command(flatten)]
    pub columns: ColumnNames,
}

impl AnnotateSettings {
    pub fn weights(&self) -> RewardWeights {
        RewardWeights {
            beta1: self.beta1,
            clip: self.clip,
            beta2: self.beta2,
            beta3: self.beta3,
            rm_clamp: self.rm_clamp,
        }
    }
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
    settings.mode.check_weights(&settings.weights())?;
    if settings.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    check_models(&args)?;
    let rows = read_rows(&args.data, settings)?;
    let mut spec = stage::spec(STAGE, SCHEMA_VERSION, &args.common, settings)?
        .with_input("data", &args.data)
        .with_input("reference", &args.ref_model)
        .with_input("dpo", &args.dpo);
    for (role, dir) in [("policy", &args.policy), ("reward_model", &args.reward_model)] {
        if let Some(dir) = dir {
            spec = spec.with_input(role, dir);
        }
    }
    stage::run(&args.common, &spec, |out| run(&args, &rows, out))?;
    Ok(())
}

/// Same tokenizer and vocab_size everywhere, a tokenizer that fits the models, and length
/// limits the models can hold (a batch is as wide as its longest prompt plus its longest
/// response, so the two limits together must fit every model's positions).
fn check_models(args: &AnnotateArgs) -> Result<()> {
    let folders: Vec<&Path> =
        [Some(&args.ref_model), Some(&args.dpo), args.policy.as_ref(), args.reward_model.as_ref()]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
            .collect();
    check_same_tokenizer(&folders)?;
    let config = |dir: &Path| ModelConfig::from_file(&dir.join("config.json"));
    let reference = config(&args.ref_model)?;
    let limits = &args.settings.limits;
    let width = (limits.max_prompt_len + limits.max_response_len) as i64;
    for dir in &folders {
        let other = config(dir)?;
        if other.vocab_size != reference.vocab_size {
            bail!(
                "{} has vocab_size {}, the reference {} has {}: the models do not share a vocabulary",
                dir.join("config.json").display(),
                other.vocab_size,
                args.ref_model.join("config.json").display(),
                reference.vocab_size
            );
        }
        if width > other.max_position_embeddings {
            bail!(
                "--max-prompt-len {} + --max-response-len {} = {width} tokens exceeds max_position_embeddings {} of {}: lower the limits",
                limits.max_prompt_len,
                limits.max_response_len,
                other.max_position_embeddings,
                dir.join("config.json").display()
            );
        }
    }
    TextTokenizer::from_dir(&args.ref_model)?.check_fits(reference.vocab_size, &args.ref_model)
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

/// The loaded models and everything a batch needs.
struct Annotator<'a> {
    models: RewardModels,
    policy: Option<CausalLm>,
    tokenizer: TextTokenizer,
    settings: &'a AnnotateSettings,
    weights: RewardWeights,
    sources: Sources,
    device: Device,
}

/// One sequence waiting for its batch: ids, and the sample row to fill in.
struct Item {
    prompt: Vec<i64>,
    response: Vec<i64>,
    sample: SampleRecord,
    /// The source row, for pairs (to compare chosen with rejected).
    pair_row: Option<usize>,
}

fn run(args: &AnnotateArgs, rows: &Rows, out: &StageDir) -> Result<Value> {
    let settings = &args.settings;
    let device = parse_device(&args.common.device)?;
    let models = RewardModels::load(&args.ref_model, Some(&args.dpo), args.reward_model.as_deref(), device)?;
    let policy =
        args.policy.as_ref().map(|dir| CausalLm::load(dir, Head::LanguageModel, device, Kind::Float)).transpose()?;
    let sources = Sources { dpo: true, policy: policy.is_some(), reward_model: models.reward_model.is_some() };
    let tokenizer = TextTokenizer::from_dir(&args.ref_model)?;
    let annotator = Annotator { models, policy, tokenizer, settings, weights: settings.weights(), sources, device };
    let is_pairs = matches!(rows, Rows::Pairs(_));
    let options = TableOptions {
        layout: TableLayout { side: is_pairs, gold_score: has_gold(rows), iteration: false },
        metadata: table_metadata(args)?,
        ..TableOptions::default()
    };
    let writer = TokenTableWriter::create(out.path(), options)?;
    let (summary, tally, stats, seconds) = annotator.annotate_all(rows, &args.data, writer)?;
    Ok(tally.metrics(&summary, &stats, seconds, is_pairs))
}

fn has_gold(rows: &Rows) -> bool {
    matches!(rows, Rows::Pairs(p) if p.iter().any(|p| p.score_chosen.is_some() || p.score_rejected.is_some()))
}

/// File-level metadata: the effective weights (what `mode` applied), the settings, and the
/// content keys of the models, tokenizer and data, so a table says what priced its tokens.
fn table_metadata(args: &AnnotateArgs) -> Result<BTreeMap<String, String>> {
    let s = &args.settings;
    let w = s.mode.effective_weights(&s.weights());
    let mut meta = BTreeMap::from([
        ("rto.stage".to_string(), STAGE.to_string()),
        ("rto.mode".to_string(), s.mode.name().to_string()),
        ("rto.beta1".to_string(), w.beta1.to_string()),
        ("rto.clip".to_string(), w.clip.to_string()),
        ("rto.beta2".to_string(), w.beta2.to_string()),
        ("rto.beta3".to_string(), w.beta3.to_string()),
        ("rto.rm_clamp".to_string(), w.rm_clamp.to_string()),
        ("rto.settings".to_string(), serde_json::to_string(s)?),
        ("rto.tokenizer".to_string(), hash_file(&args.ref_model.join("tokenizer.json"))?.as_str().to_string()),
        ("rto.data".to_string(), input_key(&args.data)?.as_str().to_string()),
    ]);
    let folders = [
        ("reference", Some(&args.ref_model)),
        ("dpo", Some(&args.dpo)),
        ("policy", args.policy.as_ref()),
        ("reward_model", args.reward_model.as_ref()),
    ];
    meta.extend(model_metadata(&folders)?);
    Ok(meta)
}

impl Annotator<'_> {
    /// Encodes, scores and writes `rows` batch by batch.
    fn annotate_all(
        &self,
        rows: &Rows,
        file: &Path,
        mut writer: TokenTableWriter,
    ) -> Result<(TableSummary, Tally, DatasetStats, f64)> {
        let encoder = Encoder::new(&self.tokenizer, self.settings.limits.clone())?;
        let mut stats = DatasetStats::new(rows.len());
        let mut tally = Tally::default();
        let bar = progress::bar(rows.sequences(), STAGE);
        let started = Instant::now();
        let mut pending: Vec<Item> = Vec::new();
        for index in 0..rows.len() {
            pending.extend(
                self.encode_row(&encoder, rows, index, &mut stats)
                    .with_context(|| format!("{} row {index}", file.display()))?,
            );
            while pending.len() >= self.settings.batch_size || (index + 1 == rows.len() && !pending.is_empty()) {
                let take = pending.len().min(self.settings.batch_size);
                let batch: Vec<Item> = pending.drain(..take).collect();
                self.annotate_batch(batch, &mut writer, &mut tally)
                    .with_context(|| format!("annotating {}", file.display()))?;
                let seconds = started.elapsed().as_secs_f64().max(1e-9);
                bar.set_position(tally.samples);
                bar.set_message(format!("{:.0} tok/s", tally.tokens as f64 / seconds));
            }
        }
        bar.finish_and_clear();
        if tally.samples == 0 {
            bail!(
                "{}: no usable rows out of {} (skipped: {:?}){}",
                file.display(),
                rows.len(),
                stats.skipped,
                crate::encode::skip_hint(&stats)
            );
        }
        let summary = writer.finish()?;
        Ok((summary, tally, stats, started.elapsed().as_secs_f64()))
    }

    /// The sequences of source row `index` (none when a limit or rule skips it).
    fn encode_row(&self, encoder: &Encoder, rows: &Rows, index: usize, stats: &mut DatasetStats) -> Result<Vec<Item>> {
        let (prompt, responses): (&Prompt, Vec<(&str, Option<&str>, Option<f64>)>) = match rows {
            Rows::Responses(r) => (&r[index].prompt, vec![(r[index].response.as_str(), None, None)]),
            Rows::Pairs(p) => {
                let pair = &p[index];
                // As in DPO training: a pair without a preference is not annotated.
                if pair.chosen.trim() == pair.rejected.trim() {
                    stats.skip("chosen_equals_rejected");
                    return Ok(Vec::new());
                }
                let sides = vec![
                    (pair.chosen.as_str(), Some("chosen"), pair.score_chosen),
                    (pair.rejected.as_str(), Some("rejected"), pair.score_rejected),
                ];
                (&pair.prompt, sides)
            }
        };
        let Some(prompt_ids) = encoder.prompt(prompt, stats)? else { return Ok(Vec::new()) };
        let mut encoded = Vec::new();
        for (text, _, _) in &responses {
            let Some(ids) = encoder.response(text, stats)? else { return Ok(Vec::new()) };
            encoded.push(ids);
        }
        let prompt_text = self.render_prompt(prompt)?;
        let is_pair = matches!(rows, Rows::Pairs(_));
        let items = responses.into_iter().zip(encoded).enumerate().map(|(k, ((text, side, gold), ids))| Item {
            prompt: prompt_ids.clone(),
            response: ids,
            sample: SampleRecord {
                sample_id: if is_pair { 2 * index as u64 + k as u64 } else { index as u64 },
                prompt_id: prompt.id(),
                prompt: prompt_text.clone(),
                response: text.to_string(),
                n_tokens: 0,
                dpo_return: None,
                sentence_reward: None,
                ret: 0.0,
                gold_score: gold,
                iteration: None,
                side: side.map(str::to_string),
            },
            pair_row: is_pair.then_some(index),
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

    fn annotate_batch(&self, items: Vec<Item>, writer: &mut TokenTableWriter, tally: &mut Tally) -> Result<()> {
        let (first, last) = (items[0].sample.sample_id, items[items.len() - 1].sample.sample_id);
        let prompts: Vec<Vec<i64>> = items.iter().map(|i| i.prompt.clone()).collect();
        let responses: Vec<Vec<i64>> = items.iter().map(|i| i.response.clone()).collect();
        let batch = SequenceBatch::new(&prompts, &responses, self.tokenizer.pad_id, self.device)?;
        let logp_policy: Option<Tensor> =
            self.policy.as_ref().map(|p| tch::no_grad(|| response_logprobs(p, &batch, false).logprobs));
        let scores = score_batch(&self.models, &batch, logp_policy, self.settings.mode, &self.weights)
            .with_context(|| format!("samples {first}..={last}"))?;
        let host = scores.to_host()?;
        for (row, item) in items.into_iter().enumerate() {
            let (sample, tokens) = table_rows(&host, self.sources, &item.response, row, &self.tokenizer, item.sample);
            tally.add(&sample, item.pair_row);
            writer.push_sample(sample, &tokens)?;
        }
        Ok(())
    }
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
