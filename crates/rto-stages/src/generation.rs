//! The "generate" stage: one model's responses to a prompt file, cached, so every evaluation
//! (and the preference-pair builder) that needs that model's answers reuses them.
//!
//! Under several ranks (torchrun/srun) every rank encodes every prompt (cheap) and forms the
//! batches of one process; each generates its contiguous block of those batches
//! (`dist::share`), each batch sampled from `seed_for(seed, Sampling, batch index)` with the
//! global index; rank 0 gathers the responses in rank order and writes the one table. The
//! batches, their seeds and so every token are those of one process: the table is its bytes,
//! and world size is not in the key.

use crate::dist::Work;
use crate::encode::{Encoder, LengthLimits};
use crate::stage;
use anyhow::{bail, Context, Result};
use arrow::array::{Array, StringArray, UInt32Array};
use rto_data::cli::CommonArgs;
use rto_data::dataset::{read_prompts, ColumnNames, DatasetStats};
use rto_data::records::{read_batches, write_columns, Column};
use rto_dist::ProcessGroup;
use rto_model::{generate, parse_device, Head, SamplingConfig, TextTokenizer};
use rto_rng::{seed_for, Stream};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const GENERATIONS: &str = "generations.parquet";

/// One model's answers, row-aligned.
pub struct Generations {
    pub prompts: Vec<String>,
    pub responses: Vec<String>,
    pub lengths: Vec<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
pub struct GenerationSettings {
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// Argmax decoding instead of sampling.
    #[arg(long)]
    pub greedy: bool,
    /// Replay each generate call's decode steps from a CUDA graph captured at its first step
    /// (as vLLM and SGLang do): one launch per step instead of a few hundred. CUDA only, in a
    /// build with CUDA graphs (`make build-cuda`). In the key when set.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cuda_graph: bool,
    /// Evaluate on the first N prompts only (0 = all).
    #[arg(long, default_value_t = 0)]
    pub num_prompts: usize,
    #[arg(long, default_value_t = 32)]
    pub generation_batch_size: usize,
    /// Responses sampled per prompt (2 for preference pairs).
    #[arg(long, default_value_t = 1)]
    pub samples_per_prompt: usize,
    #[command(flatten)]
    pub limits: LengthLimits,
    #[command(flatten)]
    pub columns: ColumnNames,
}

impl GenerationSettings {
    /// The sampling settings of the stage; chunk `i` samples with `seed_for(seed, Sampling, i)`.
    fn sampling(&self, stop_ids: Vec<i64>, seed: u64) -> SamplingConfig {
        SamplingConfig {
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            greedy: self.greedy,
            stop_ids,
            seed,
            cuda_graph: self.cuda_graph,
            ..Default::default()
        }
    }

    /// Checked before the store is touched, so a bad flag fails before a model loads.
    fn validate(&self) -> Result<()> {
        anyhow::ensure!(
            self.generation_batch_size > 0,
            "generation_batch_size must be at least 1 (--generation-batch-size)"
        );
        self.sampling(Vec::new(), 0).validate()
    }
}

/// Runs (or reuses) the "generate" stage for `model` on every rank of `group` (see the module
/// docs); returns its folder, on every rank. Not linked/printed: only the eval folder is the
/// command's output.
pub fn generation_stage(
    group: &ProcessGroup,
    common: &CommonArgs,
    settings: &GenerationSettings,
    model: &Path,
    prompts: &Path,
) -> Result<PathBuf> {
    settings.validate()?;
    let spec = stage::spec("generate", 1, common, settings)?;
    let spec = stage::with_model_input(spec, "model", model)?.with_input("prompts", prompts);
    let ranked = crate::dist::run_stage(group, &common.store(), &spec, common.force, |work| {
        generate_all(common, settings, model, prompts, work)
    })?;
    Ok(ranked.path)
}

fn generate_all(
    common: &CommonArgs,
    settings: &GenerationSettings,
    model_dir: &Path,
    prompts_path: &Path,
    work: &Work,
) -> Result<Value> {
    let device = parse_device(&common.device)?;
    if settings.cuda_graph {
        rto_model::decode_graph::check_cuda_graph(device)?;
    }
    let tokenizer = TextTokenizer::from_dir(model_dir)?;
    let model = rto_model::adapter::load(model_dir, Head::LanguageModel, device, stage::precision(common).kind())?;
    tokenizer.check_fits(model.config.vocab_size, model_dir)?;
    let mut records = read_prompts(prompts_path, &settings.columns)?;
    if settings.num_prompts > 0 {
        records.truncate(settings.num_prompts);
    }
    let encoder = Encoder::new(&tokenizer, settings.limits.clone())?;
    let mut stats = DatasetStats::new(records.len());
    let mut encoded = Vec::new();
    for record in &records {
        if let Some(ids) = encoder.prompt(&record.prompt, &mut stats)? {
            for _ in 0..settings.samples_per_prompt.max(1) {
                encoded.push((record.prompt.display_text().to_string(), ids.clone()));
            }
        }
    }
    if encoded.is_empty() {
        bail!(
            "{}: no usable prompts (skipped: {:?}){}",
            prompts_path.display(),
            stats.skipped,
            crate::encode::skip_hint(&stats)
        );
    }
    let sampling = settings.sampling(tokenizer.eos_id.into_iter().collect(), common.seed);
    let chunks: Vec<&[(String, Vec<i64>)]> = encoded.chunks(settings.generation_batch_size).collect();
    let group = work.group();
    let mine = crate::dist::my_share(group, chunks.len());
    let progress = crate::progress::bar(chunks[mine.clone()].iter().map(|c| c.len() as u64).sum(), "generate");
    if !group.is_main() {
        progress.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut answers: Vec<(String, u32)> = Vec::new();
    for chunk_index in mine {
        let chunk = chunks[chunk_index];
        crate::progress::set_activity(format_args!("generation batch {chunk_index}"));
        let prompts: Vec<Vec<i64>> = chunk.iter().map(|(_, ids)| ids.clone()).collect();
        // Keyed by the batch's global index: the same draws whichever rank generates it.
        let config =
            SamplingConfig { seed: seed_for(sampling.seed, Stream::Sampling, chunk_index as u64), ..sampling.clone() };
        let generation = generate(&model, &prompts, &config, tokenizer.pad_id)?;
        for response in &generation.responses {
            answers.push((tokenizer.decode(response, true)?, response.len() as u32));
        }
        progress.inc(chunk.len() as u64);
    }
    progress.finish_and_clear();
    let answers = gather_answers(group, answers)?;
    let Some(out) = work.output() else { return Ok(Value::Null) };
    anyhow::ensure!(
        answers.len() == encoded.len(),
        "the ranks gathered {} responses for {} prompts: ranks run different builds or inputs?",
        answers.len(),
        encoded.len()
    );
    let (responses, lengths): (Vec<String>, Vec<u32>) = answers.into_iter().unzip();
    let prompts: Vec<String> = encoded.into_iter().map(|(text, _)| text).collect();
    let result = Generations { prompts, responses, lengths };
    write_columns(
        &out.join(GENERATIONS),
        &[
            ("prompt", Column::Text(result.prompts.clone())),
            ("response", Column::Text(result.responses.clone())),
            ("n_tokens", Column::Count(result.lengths.clone())),
        ],
    )?;
    let mean_len = result.lengths.iter().map(|&l| l as f64).sum::<f64>() / result.lengths.len() as f64;
    Ok(json!({"prompts": result.prompts.len(), "mean_length": mean_len, "dataset": stats}))
}

/// Every rank's (response, length) pairs, concatenated in rank order: the rows' original order,
/// as the ranks generate contiguous blocks of the batches.
fn gather_answers(group: &ProcessGroup, mine: Vec<(String, u32)>) -> Result<Vec<(String, u32)>> {
    if !group.is_distributed() {
        return Ok(mine);
    }
    let parts = group.all_gather_bytes(&serde_json::to_vec(&mine)?).context("gathering the ranks' responses")?;
    let mut all = Vec::new();
    for (rank, part) in parts.iter().enumerate() {
        let answers: Vec<(String, u32)> =
            serde_json::from_slice(part).with_context(|| format!("reading rank {rank}'s responses"))?;
        all.extend(answers);
    }
    Ok(all)
}

pub fn read_generations(folder: &Path) -> Result<Generations> {
    let path = folder.join(GENERATIONS);
    let mut out = Generations { prompts: vec![], responses: vec![], lengths: vec![] };
    for batch in read_batches(&path)? {
        let text = |name: &str| -> Result<Vec<String>> {
            let column =
                batch.column_by_name(name).with_context(|| format!("{}: no column `{name}`", path.display()))?;
            let strings = column
                .as_any()
                .downcast_ref::<StringArray>()
                .with_context(|| format!("{}: `{name}` is not text", path.display()))?;
            Ok((0..strings.len()).map(|i| strings.value(i).to_string()).collect())
        };
        out.prompts.extend(text("prompt")?);
        out.responses.extend(text("response")?);
        let lengths = batch.column_by_name("n_tokens").and_then(|c| c.as_any().downcast_ref::<UInt32Array>().cloned());
        let lengths = lengths.with_context(|| format!("{}: `n_tokens` missing or not u32", path.display()))?;
        out.lengths.extend(lengths.values().iter().copied());
    }
    Ok(out)
}
