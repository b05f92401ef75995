//! sft-train: supervised fine-tuning, cross-entropy on response tokens only.
//!
//! Starts from a model folder (`--model`) or from random weights of a config (`--init-config`,
//! with `--tokenizer` naming the folder whose tokenizer files the model uses): the toy task's
//! SFT model is trained from scratch on this machine.

use crate::dist::Work;
use crate::encode::{check_batch_width, Encoder, LengthLimits};
use crate::stage;
use crate::trainer::{self, LoopSettings, Metrics, SupervisedTask};
use anyhow::{bail, Context, Result};
use rto_data::cli::{CommonArgs, TrainedModelArgs, TrainingLogArgs};
use rto_data::dataset::{read_responses, split, ColumnNames, DatasetStats, EvalSize};
use rto_dist::{ProcessGroup, ReduceOp};
use rto_model::memory::{BatchShape, PlannedModel, Role};
use rto_model::{
    parse_device, response_logprobs, CausalLm, Head, ModelConfig, Precision, SequenceBatch, TextTokenizer,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

pub const STAGE: &str = "sft";
const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
pub struct SftSettings {
    #[arg(long, default_value_t = 1e-3)]
    pub learning_rate: f64,
    /// Fraction of rows held out for evaluation.
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
#[command(name = "sft-train", version, about = "Supervised fine-tuning on (prompt, response) rows")]
pub struct SftArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub logs: TrainingLogArgs,
    #[command(flatten)]
    pub trained: TrainedModelArgs,
    /// Model folder to fine-tune.
    #[arg(long, conflicts_with = "init_config", required_unless_present = "init_config")]
    pub model: Option<PathBuf>,
    /// config.json of a model to train from random weights.
    #[arg(long, requires = "tokenizer")]
    pub init_config: Option<PathBuf>,
    /// Folder with tokenizer.json (and tokenizer_config.json); default: the --model folder.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Training rows with `prompt` and `response` columns (Parquet or JSONL).
    #[arg(long)]
    pub data: PathBuf,
    #[command(flatten)]
    pub settings: SftSettings,
}

/// Entry point of the `sft-train` binary.
pub fn cli(args: SftArgs) -> Result<()> {
    let tokenizer_dir = args.tokenizer.clone().or(args.model.clone()).context("--tokenizer or --model is required")?;
    args.settings.train.validate()?;
    stage::check_learning_rate("learning-rate", args.settings.learning_rate)?;
    args.logs.check()?;
    // Tokenizer against the model's vocabulary before the store is touched (the weights are
    // checked against the config when they load).
    let lora = stage::lora_config(&args.trained)?;
    if lora.is_some() && args.init_config.is_some() {
        bail!("--lora-rank needs --model (the base the adapters train on): a model trained from --init-config has no base folder");
    }
    let config_path = match (&args.model, &args.init_config) {
        (Some(model), _) => rto_model::adapter::config_folder(model)?.join("config.json"),
        (None, Some(config)) => config.clone(),
        (None, None) => bail!("give --model or --init-config"),
    };
    let config = ModelConfig::from_file(&config_path)?;
    TextTokenizer::from_dir(&tokenizer_dir)?.check_fits_config(config.vocab_size, &config_path)?;
    let tokens = args.settings.limits.max_prompt_len + args.settings.limits.max_response_len;
    let batch = BatchShape { rows: args.settings.train.micro_batch() as u64, tokens: tokens as u64, head_tokens: None };
    let policy = PlannedModel {
        name: "policy".into(),
        config,
        head: Head::LanguageModel,
        role: Role::Trained,
        batch,
        precision: Precision::Fp32, // the stage's, set by plan_memory
        gradient_checkpointing: args.trained.gradient_checkpointing,
        lora,
        shares_base_with: None,
        optimizer_shards: args.settings.train.optimizer_shards(stage::plan_world_size(&args.common)?),
    };
    let mut spec = stage::training_spec(STAGE, SCHEMA_VERSION, &args.common, &args.trained, &args.settings)?
        .with_input("data", &args.data)
        .with_input("tokenizer", tokenizer_dir.join("tokenizer.json"));
    let config_json = tokenizer_dir.join("tokenizer_config.json");
    if config_json.exists() {
        spec = spec.with_input("tokenizer_config", config_json);
    }
    spec = match (&args.model, &args.init_config) {
        (Some(model), _) => stage::with_model_input(spec, "model", model)?,
        (None, Some(config)) => spec.with_input("init_config", config),
        (None, None) => bail!("give --model or --init-config"),
    };
    if !stage::plan_memory(&args.common, &spec, &[policy], None)? {
        return Ok(());
    }
    let group = crate::dist::group(&args.common.device)?;
    let spec = args.settings.train.keyed(stage::keyed_by_world(spec, &group), &group);
    stage::run_training_ranked(&group, &args.common, &args.logs, &spec, |work| run(&args, &tokenizer_dir, work))?;
    Ok(())
}

struct SftTask {
    model: CausalLm,
    train: Vec<EncodedRow>,
    eval: Vec<EncodedRow>,
    pad_id: i64,
    micro_batch: usize,
}

impl SftTask {
    /// Summed response NLL and token count of `rows`.
    fn nll(&self, rows: &[&(Vec<i64>, Vec<i64>)]) -> Result<(Tensor, f64)> {
        let prompts: Vec<Vec<i64>> = rows.iter().map(|r| r.0.clone()).collect();
        let responses: Vec<Vec<i64>> = rows.iter().map(|r| r.1.clone()).collect();
        let batch = SequenceBatch::new(&prompts, &responses, self.pad_id, self.model.device())?;
        let logprobs = response_logprobs(&self.model, &batch, false).logprobs;
        let tokens = batch.response_lengths.iter().sum::<i64>() as f64;
        Ok((-logprobs.sum(Kind::Float), tokens))
    }
}

impl SupervisedTask for SftTask {
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
        let rows: Vec<&(Vec<i64>, Vec<i64>)> = items.iter().map(|&i| &self.train[i]).collect();
        let (nll, tokens) = self.nll(&rows)?;
        // Token-mean within the micro batch, weighted by its share of the batch.
        let loss = nll / tokens;
        self.model.backward(&(&loss * scale));
        Ok(Metrics::from([("loss".into(), loss.double_value(&[])), ("tokens".into(), tokens)]))
    }

    fn evaluate(&mut self, group: &ProcessGroup) -> Result<Metrics> {
        let (mut total, mut tokens) = (0.0, 0.0);
        let chunks: Vec<&[EncodedRow]> = self.eval.chunks(self.micro_batch).collect();
        for chunk in &chunks[crate::dist::my_share(group, chunks.len())] {
            let rows: Vec<_> = chunk.iter().collect();
            let (nll, n) = tch::no_grad(|| self.nll(&rows))?;
            total += nll.double_value(&[]);
            tokens += n;
        }
        let [total, tokens] = group.all_reduce_f64s(&[total, tokens], ReduceOp::Sum)?[..] else {
            unreachable!("two values in, two out")
        };
        let loss = total / tokens.max(1.0);
        Ok(Metrics::from([("loss".into(), loss), ("perplexity".into(), loss.exp())]))
    }
}

fn load_model(args: &SftArgs, device: Device) -> Result<CausalLm> {
    let kind = stage::precision(&args.common).kind();
    match (&args.model, &args.init_config) {
        (Some(dir), _) => rto_model::adapter::load(dir, Head::LanguageModel, device, kind),
        (None, Some(config)) => {
            let config = ModelConfig::from_file(config)?;
            CausalLm::random(config, Head::LanguageModel, device, kind, args.common.seed)
        }
        (None, None) => bail!("give --model or --init-config"),
    }
}

/// One demonstration as token ids: (prompt, response).
type EncodedRow = (Vec<i64>, Vec<i64>);

fn encode_rows(
    path: &Path,
    settings: &SftSettings,
    tokenizer: &TextTokenizer,
) -> Result<(Vec<EncodedRow>, DatasetStats)> {
    let rows = read_responses(path, &settings.columns)?;
    let encoder = Encoder::new(tokenizer, settings.limits.clone())?;
    let mut stats = DatasetStats::new(rows.len());
    let mut out = Vec::new();
    for row in &rows {
        let context = || format!("{} row {}", path.display(), row.row);
        let Some(prompt) = encoder.prompt(&row.prompt, &mut stats).with_context(context)? else { continue };
        let Some(response) = encoder.response(&row.response, &mut stats).with_context(context)? else { continue };
        out.push((prompt, response));
    }
    if out.is_empty() {
        bail!(
            "{}: no usable rows out of {} (skipped: {:?}){}",
            path.display(),
            rows.len(),
            stats.skipped,
            crate::encode::skip_hint(&stats)
        );
    }
    Ok((out, stats))
}

fn run(args: &SftArgs, tokenizer_dir: &Path, work: &Work) -> Result<Value> {
    let settings = &args.settings;
    let device = parse_device(&args.common.device)?;
    let tokenizer = TextTokenizer::from_dir(tokenizer_dir)?;
    let model = load_model(args, device)?;
    tokenizer.check_fits(model.config.vocab_size, tokenizer_dir)?;
    let (rows, stats) = encode_rows(&args.data, settings, &tokenizer)?;
    let widest = |f: fn(&EncodedRow) -> usize| rows.iter().map(f).max().unwrap_or(0);
    let model_dir = args.model.as_deref().or(args.init_config.as_deref()).unwrap_or(tokenizer_dir);
    let max_positions = model.config.max_position_embeddings;
    check_batch_width(widest(|r| r.0.len()), widest(|r| r.1.len()), max_positions, model_dir)?;
    let (train, eval) = split(rows, EvalSize::Fraction(settings.eval_fraction), args.common.seed)?;
    let micro_batch = settings.train.micro_batch();
    let model = stage::trained_model(model, &args.trained, args.common.seed)?;
    let mut task = SftTask { model, train, eval, pad_id: tokenizer.pad_id, micro_batch };
    let (lr, seed) = (settings.learning_rate, args.common.seed);
    let (summary, scratch) = trainer::train_in(work, &args.logs, STAGE, &mut task, &settings.train, lr, seed)?;
    let Some(out) = work.output() else { return Ok(Value::Null) };
    stage::save_trained(&task.model, out.path(), &args.trained, model_dir, tokenizer_dir)?;
    crate::metrics::publish(&scratch.join("metrics.jsonl"), out, STAGE)?;
    Ok(json!({"train": summary.train, "eval": summary.eval, "steps": summary.steps, "dataset": stats}))
}
