//! make-pairs: preference pairs like UltraFeedback's, at machine scale. Two samples of the SFT
//! model per prompt, labelled by a seeded Bradley–Terry draw on their gold scores (the gold
//! judge stands in for GPT-4), written in the dataset layer's format (`pairs.jsonl` with
//! prompt/chosen/rejected/score_chosen/score_rejected).
//!
//! Under torchrun/srun the sampling runs sharded over the ranks (see `generation`); the
//! labelling runs on rank 0.

use crate::generation::{generation_stage, read_generations, GenerationSettings};
use crate::stage;
use anyhow::Result;
use rto_data::cli::CommonArgs;
use rto_task::{label_samples, write_pairs_jsonl, BT_TEMPERATURE};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::PathBuf;

pub const PAIRS_FILE: &str = "pairs.jsonl";

#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
pub struct PairSettings {
    /// Temperature τ of the Bradley–Terry draw: P(a ≻ b) = σ((g_a − g_b)/τ).
    #[arg(long, default_value_t = BT_TEMPERATURE)]
    pub bt_temperature: f64,
}

#[derive(Debug, clap::Parser)]
#[command(
    name = "make-pairs",
    version,
    about = "Sample two SFT responses per prompt and label them with the gold judge"
)]
pub struct PairArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The SFT model to sample from.
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub prompts: PathBuf,
    #[command(flatten)]
    pub labels: PairSettings,
    #[command(flatten)]
    pub generation: GenerationSettings,
}

pub fn cli(mut args: PairArgs) -> Result<()> {
    args.generation.samples_per_prompt = args.generation.samples_per_prompt.max(2);
    let group = crate::dist::group(&args.common.device)?;
    let samples = generation_stage(&group, &args.common, &args.generation, &args.model, &args.prompts)?;
    let spec = stage::spec("pairs", 1, &args.common, &args.labels)?.with_input("samples", &samples);
    stage::run_on_main(&group, &args.common, &spec, |out| {
        let generations = read_generations(&samples)?;
        let rows: Vec<(String, String)> = generations.prompts.into_iter().zip(generations.responses).collect();
        let (pairs, stats) = label_samples(&rows, args.labels.bt_temperature, args.common.seed);
        write_pairs_jsonl(&out.join(PAIRS_FILE), &pairs)?;
        let agree = pairs.iter().filter(|p| p.score_chosen > p.score_rejected).count();
        Ok(json!({"labels": stats, "chosen_has_higher_gold": agree as f64 / pairs.len().max(1) as f64}))
    })?;
    Ok(())
}
