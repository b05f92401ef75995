//! dpo-train: direct preference optimization of a policy (DESIGN.md §4, "DPO") with the
//! variants of `rto_algo::PreferenceLoss` (cDPO via label smoothing, IPO, SimPO, R-DPO).
//!
//! Two stages. `dpo-ref-logps` runs the reference model once over every usable pair and stores
//! the summed chosen/rejected log-probs as its own artifact, keyed on the reference, the data,
//! the tokenizer and the encoding settings only; `dpo` takes that artifact as an input. So a
//! rerun with another β, loss or learning rate reuses the reference pass, and a different
//! reference changes the `dpo` key. SimPO has no reference and skips the first stage.

use crate::compat::check_models;
use crate::dist::{gather_f32s, Work};
use crate::encode::{EncodedPair, LengthLimits};
use crate::preference::{self, batch_tokens, halves, mean, metrics_of, pair_batch, response_lengths, summed_logprobs};
use crate::stage;
use crate::trainer::{self, LoopSettings, Metrics, SupervisedTask};
use anyhow::{bail, Context, Result};
use rto_algo::{PreferenceInputs, PreferenceLoss};
use rto_data::cli::{CommonArgs, TrainedModelArgs, TrainingLogArgs};
use rto_data::dataset::{split, ColumnNames, DatasetStats, EvalSize};
use rto_data::store::StageSpec;
use rto_dist::ProcessGroup;
use rto_model::{adapter, parse_device, CausalLm, Head, TextTokenizer};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

pub const STAGE: &str = "dpo";
pub const REF_STAGE: &str = "dpo-ref-logps";
const SCHEMA_VERSION: u32 = 1;
const REF_SCHEMA_VERSION: u32 = 1;
/// The file of the `dpo-ref-logps` artifact.
pub const REF_LOGPS_FILE: &str = "ref_logps.safetensors";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LossType {
    /// DPO (cDPO with --label-smoothing).
    Sigmoid,
    Ipo,
    /// Reference-free, length-normalized.
    Simpo,
    /// Length-regularized DPO.
    Rdpo,
}

#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
pub struct DpoSettings {
    #[arg(long, value_enum, default_value_t = LossType::Sigmoid)]
    pub loss: LossType,
    /// β; default 0.1, or 2.5 for simpo (its paper's value).
    #[arg(long)]
    pub beta: Option<f64>,
    /// ε of cDPO (sigmoid loss only).
    #[arg(long, default_value_t = 0.0)]
    pub label_smoothing: f64,
    /// SimPO's target margin γ.
    #[arg(long, default_value_t = 0.5)]
    pub simpo_gamma: f64,
    /// R-DPO's length penalty α per token of length difference.
    #[arg(long, default_value_t = 0.01)]
    pub rdpo_alpha: f64,
    /// The paper's DPO learning rate; small models want far more.
    #[arg(long, default_value_t = 5e-7)]
    pub learning_rate: f64,
    /// Fraction of pairs held out for evaluation.
    #[arg(long, default_value_t = 0.05)]
    pub eval_fraction: f64,
    /// Pairs per reference forward (dpo-ref-logps only; it does not touch training).
    #[arg(long, default_value_t = 8)]
    pub ref_batch_size: usize,
    #[command(flatten)]
    pub limits: LengthLimits,
    #[command(flatten)]
    pub columns: ColumnNames,
    #[command(flatten)]
    pub train: LoopSettings,
}

impl DpoSettings {
    /// The loss the flags describe; flags of other variants are dropped, so they stay out of
    /// the cache key (changing --simpo-gamma does not retrain a sigmoid run).
    pub fn preference_loss(&self) -> Result<PreferenceLoss> {
        let beta = self.beta.unwrap_or(if self.loss == LossType::Simpo { 2.5 } else { 0.1 });
        let loss = match self.loss {
            LossType::Sigmoid => PreferenceLoss::Sigmoid { beta, label_smoothing: self.label_smoothing },
            LossType::Ipo => PreferenceLoss::Ipo { beta },
            LossType::Simpo => PreferenceLoss::Simpo { beta, gamma: self.simpo_gamma },
            LossType::Rdpo => PreferenceLoss::Rdpo { beta, alpha: self.rdpo_alpha },
        };
        loss.validate()?;
        Ok(loss)
    }

    /// What enters the `dpo` key: the resolved loss and the training settings.
    fn key(&self) -> Result<Value> {
        Ok(json!({
            "loss": self.preference_loss()?, "learning_rate": self.learning_rate,
            "eval_fraction": self.eval_fraction, "limits": self.limits, "columns": self.columns,
            "train": self.train,
        }))
    }

    /// What enters the `dpo-ref-logps` key: only what changes the reference numbers.
    fn ref_key(&self) -> Value {
        json!({"limits": self.limits, "columns": self.columns, "batch_size": self.ref_batch_size})
    }
}

#[derive(Debug, clap::Parser)]
#[command(
    name = "dpo-train",
    version,
    about = "Direct preference optimization (DPO, cDPO, IPO, SimPO, R-DPO) on preference pairs"
)]
pub struct DpoArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub logs: TrainingLogArgs,
    #[command(flatten)]
    pub trained: TrainedModelArgs,
    /// Policy to train (the SFT model); also the reference unless --ref is given.
    #[arg(long)]
    pub model: PathBuf,
    /// Reference model folder (default: --model). Must share the policy's tokenizer.
    #[arg(long = "ref")]
    pub ref_model: Option<PathBuf>,
    /// Preference pairs with `prompt`, `chosen`, `rejected` columns (Parquet or JSONL).
    #[arg(long)]
    pub data: PathBuf,
    #[command(flatten)]
    pub settings: DpoSettings,
}

/// Entry point of the `dpo-train` binary.
pub fn cli(args: DpoArgs) -> Result<()> {
    let loss = args.settings.preference_loss()?;
    args.settings.train.validate()?;
    stage::check_learning_rate("learning-rate", args.settings.learning_rate)?;
    args.logs.check()?;
    stage::lora_config(&args.trained)?;
    let limits = &args.settings.limits;
    let (rows, tokens) = (2 * args.settings.train.micro_batch(), limits.max_prompt_len + limits.max_response_len);
    let policy = stage::planned_trained(
        "policy",
        &args.model,
        Head::LanguageModel,
        (rows, tokens),
        &args.trained,
        (&args.settings.train, stage::plan_world_size(&args.common)?),
    )?;
    let spec = stage::training_spec(STAGE, SCHEMA_VERSION, &args.common, &args.trained, &args.settings.key()?)?;
    let mut spec = stage::with_model_input(spec, "model", &args.model)?.with_input("data", &args.data);
    if !stage::plan_memory(&args.common, &spec, &[policy], None)? {
        return Ok(());
    }
    let group = crate::dist::group(&args.common.device)?;
    spec = args.settings.train.keyed(stage::keyed_by_world(spec, &group), &group);
    let mut ref_logps = None;
    if loss.needs_reference() {
        let reference = args.ref_model.clone().unwrap_or(args.model.clone());
        // DPO subtracts log-probs of the same token ids under both models.
        check_models(&[("policy", &args.model), ("reference", &reference)])?;
        let artifact = reference_logps(&group, &args, &reference)?;
        spec = spec.with_input("ref_logps", &artifact);
        ref_logps = Some(artifact);
    } else if args.ref_model.is_some() {
        eprintln!("dpo-train: {loss:?} needs no reference model; --ref is ignored");
    }
    stage::run_training_ranked(&group, &args.common, &args.logs, &spec, |work| {
        run(&args, loss, ref_logps.as_deref(), work)
    })?;
    Ok(())
}

/// The `dpo-ref-logps` artifact for `reference`: reused when it exists, computed otherwise.
/// `--force` recomputes the `dpo` stage only: the reference artifact is verified on reuse.
/// The policy folder's tokenizer encodes the pairs, exactly as the `dpo` stage will. Under a
/// process group the batches are shared out and gathered: every batch is the one a single
/// process forms, so the artifact is bitwise a single process's and the key has no world size.
fn reference_logps(group: &ProcessGroup, args: &DpoArgs, reference: &Path) -> Result<PathBuf> {
    let settings = &args.settings;
    // No seed in this key: the reference pass draws no random numbers.
    let key = json!({"stage": settings.ref_key(), "common": args.common.numerics_key()});
    let spec = StageSpec::new(REF_STAGE, REF_SCHEMA_VERSION, &key)?;
    let mut spec = stage::with_model_input(spec, "model", reference)?
        .with_input("data", &args.data)
        .with_input("tokenizer", args.model.join("tokenizer.json"));
    let config_json = args.model.join("tokenizer_config.json");
    if config_json.exists() {
        spec = spec.with_input("tokenizer_config", config_json);
    }
    let store = args.common.store();
    let ranked = crate::dist::run_stage(group, &store, &spec, false, |work| compute_reference(args, reference, work))?;
    if ranked.reused && group.is_main() {
        eprintln!("{REF_STAGE}: reusing reference log-probs {}", ranked.path.display());
    }
    Ok(ranked.path)
}

fn compute_reference(args: &DpoArgs, reference: &Path, work: &Work) -> Result<Value> {
    let group = work.group();
    let settings = &args.settings;
    let device = parse_device(&args.common.device)?;
    let tokenizer = TextTokenizer::from_dir(&args.model)?;
    let model = adapter::load(reference, Head::LanguageModel, device, stage::precision(&args.common).kind())?;
    tokenizer.check_fits(model.config.vocab_size, reference)?;
    let (pairs, stats) =
        preference::read_pairs(&args.data, &settings.columns, &settings.limits, &tokenizer, &model, reference)?;
    let chunks: Vec<&[EncodedPair]> = pairs.chunks(settings.ref_batch_size.max(1)).collect();
    let mine = &chunks[crate::dist::my_share(group, chunks.len())];
    let progress = crate::progress::bar(mine.iter().map(|c| c.len() as u64).sum(), REF_STAGE);
    let mut logps: Vec<f32> = Vec::with_capacity(2 * pairs.len());
    let mut rejected: Vec<f32> = Vec::with_capacity(pairs.len());
    for chunk in mine {
        let refs: Vec<&EncodedPair> = chunk.iter().collect();
        let batch = pair_batch(&refs, tokenizer.pad_id, device)?;
        let sums = tch::no_grad(|| summed_logprobs(&model, &batch));
        let (w, l) = halves(&sums);
        logps.extend(Vec::<f32>::try_from(&w)?);
        rejected.extend(Vec::<f32>::try_from(&l)?);
        progress.inc(chunk.len() as u64);
    }
    progress.finish();
    let (logps, rejected) = (gather_f32s(group, &logps)?, gather_f32s(group, &rejected)?);
    let Some(out) = work.output() else { return Ok(Value::Null) };
    let column = |f: fn(&EncodedPair) -> i64| Tensor::from_slice(&pairs.iter().map(f).collect::<Vec<i64>>());
    let tensors = [
        ("row", column(|p| p.row as i64)),
        ("prompt_lengths", column(|p| p.prompt.len() as i64)),
        ("chosen_lengths", column(|p| p.chosen.len() as i64)),
        ("rejected_lengths", column(|p| p.rejected.len() as i64)),
        ("chosen_logps", Tensor::from_slice(&logps)),
        ("rejected_logps", Tensor::from_slice(&rejected)),
    ];
    let path = out.join(REF_LOGPS_FILE);
    Tensor::write_safetensors(&tensors, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(
        json!({"pairs": pairs.len(), "mean_chosen_logps": mean_of(&logps), "mean_rejected_logps": mean_of(&rejected), "dataset": stats}),
    )
}

fn mean_of(values: &[f32]) -> f64 {
    values.iter().map(|&v| v as f64).sum::<f64>() / values.len().max(1) as f64
}

/// Reference sums per source row, checked against the pairs the policy side encoded: the
/// token counts must agree, or the artifact belongs to other data or another tokenizer.
fn attach_reference(pairs: Vec<EncodedPair>, artifact: &Path) -> Result<Vec<DpoExample>> {
    let path = artifact.join(REF_LOGPS_FILE);
    let tensors: HashMap<String, Tensor> =
        Tensor::read_safetensors(&path).with_context(|| format!("reading {}", path.display()))?.into_iter().collect();
    let ints = |name: &str| -> Result<Vec<i64>> {
        let t = tensors.get(name).with_context(|| format!("{}: missing tensor `{name}`", path.display()))?;
        Ok(Vec::<i64>::try_from(&t.to_kind(Kind::Int64))?)
    };
    let floats = |name: &str| -> Result<Vec<f32>> {
        let t = tensors.get(name).with_context(|| format!("{}: missing tensor `{name}`", path.display()))?;
        Ok(Vec::<f32>::try_from(&t.to_kind(Kind::Float))?)
    };
    let (rows, prompt_len, chosen_len, rejected_len) =
        (ints("row")?, ints("prompt_lengths")?, ints("chosen_lengths")?, ints("rejected_lengths")?);
    let (chosen, rejected) = (floats("chosen_logps")?, floats("rejected_logps")?);
    let index: HashMap<i64, usize> = rows.iter().enumerate().map(|(i, &r)| (r, i)).collect();
    pairs
        .into_iter()
        .map(|pair| {
            let i = *index.get(&(pair.row as i64)).with_context(|| format!("{}: no reference log-probs for data row {}", path.display(), pair.row))?;
            let ours = [pair.prompt.len(), pair.chosen.len(), pair.rejected.len()].map(|n| n as i64);
            if ours != [prompt_len[i], chosen_len[i], rejected_len[i]] {
                bail!("{}: data row {}: token counts {ours:?} differ from the reference pass's; the artifact was made from other data or another tokenizer", path.display(), pair.row);
            }
            Ok(DpoExample { pair, reference: Some([chosen[i], rejected[i]]) })
        })
        .collect()
}

struct DpoExample {
    pair: EncodedPair,
    /// Summed reference log-probs (chosen, rejected); `None` for SimPO.
    reference: Option<[f32; 2]>,
}

struct DpoTask {
    model: CausalLm,
    loss: PreferenceLoss,
    train: Vec<DpoExample>,
    eval: Vec<DpoExample>,
    pad_id: i64,
    micro_batch: usize,
}

impl DpoTask {
    /// Loss (with graph) and metrics of `examples`; metrics are means over them.
    fn forward(&self, examples: &[&DpoExample]) -> Result<(Tensor, Metrics)> {
        let device = self.model.device();
        let pairs: Vec<&EncodedPair> = examples.iter().map(|e| &e.pair).collect();
        let batch = pair_batch(&pairs, self.pad_id, device)?;
        let (policy_chosen, policy_rejected) = halves(&summed_logprobs(&self.model, &batch));
        let (chosen_lengths, rejected_lengths) = response_lengths(&pairs, device);
        let reference = |side: usize| -> Option<Tensor> {
            let v: Option<Vec<f32>> = examples.iter().map(|e| e.reference.map(|r| r[side])).collect();
            v.map(|v| Tensor::from_slice(&v).to_device(device))
        };
        let (reference_chosen, reference_rejected) = (reference(0), reference(1));
        let outputs = self.loss.compute(&PreferenceInputs {
            policy_chosen: &policy_chosen,
            policy_rejected: &policy_rejected,
            reference_chosen: reference_chosen.as_ref(),
            reference_rejected: reference_rejected.as_ref(),
            chosen_lengths: &chosen_lengths,
            rejected_lengths: &rejected_lengths,
        })?;
        let mut metrics = metrics_of(&outputs.metrics())?;
        metrics.insert("logps/chosen".into(), mean(&policy_chosen.detach()));
        metrics.insert("logps/rejected".into(), mean(&policy_rejected.detach()));
        metrics.insert("tokens".into(), batch_tokens(&batch));
        Ok((outputs.loss, metrics))
    }
}

impl SupervisedTask for DpoTask {
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

fn load_examples(
    args: &DpoArgs,
    loss: PreferenceLoss,
    ref_logps: Option<&Path>,
    tokenizer: &TextTokenizer,
    model: &CausalLm,
) -> Result<(Vec<DpoExample>, DatasetStats)> {
    let settings = &args.settings;
    let (pairs, stats) =
        preference::read_pairs(&args.data, &settings.columns, &settings.limits, tokenizer, model, &args.model)?;
    let examples = match (loss.needs_reference(), ref_logps) {
        (true, Some(artifact)) => attach_reference(pairs, artifact)?,
        (true, None) => bail!("{loss:?} needs the {REF_STAGE} artifact"),
        (false, _) => pairs.into_iter().map(|pair| DpoExample { pair, reference: None }).collect(),
    };
    Ok((examples, stats))
}

fn run(args: &DpoArgs, loss: PreferenceLoss, ref_logps: Option<&Path>, work: &Work) -> Result<Value> {
    let settings = &args.settings;
    let device: Device = parse_device(&args.common.device)?;
    let tokenizer = TextTokenizer::from_dir(&args.model)?;
    let model = adapter::load(&args.model, Head::LanguageModel, device, stage::precision(&args.common).kind())?;
    tokenizer.check_fits(model.config.vocab_size, &args.model)?;
    let (examples, stats) = load_examples(args, loss, ref_logps, &tokenizer, &model)?;
    let (train, eval) = split(examples, EvalSize::Fraction(settings.eval_fraction), args.common.seed)?;
    let micro_batch = settings.train.micro_batch();
    let model = stage::trained_model(model, &args.trained, args.common.seed)?;
    let mut task = DpoTask { model, loss, train, eval, pad_id: tokenizer.pad_id, micro_batch };
    let (lr, seed) = (settings.learning_rate, args.common.seed);
    let (summary, scratch) = trainer::train_in(work, &args.logs, STAGE, &mut task, &settings.train, lr, seed)?;
    let Some(out) = work.output() else { return Ok(Value::Null) };
    stage::save_trained(&task.model, out.path(), &args.trained, &args.model, &args.model)?;
    crate::metrics::publish(&scratch.join("metrics.jsonl"), out, STAGE)?;
    let ref_key = ref_logps.map(rto_data::store::input_key).transpose()?;
    Ok(json!({
        "train": summary.train, "eval": summary.eval, "steps": summary.steps, "dataset": stats,
        "loss": loss, "ref_logps": ref_key.map(|k| k.as_str().to_string()),
    }))
}
