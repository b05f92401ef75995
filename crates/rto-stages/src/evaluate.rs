//! rto-eval: generate on held-out prompts, judge, and compare with a baseline model (the SFT
//! model, as AlpacaEval compares against a reference): win rate with ties counting half, mean
//! gold score, mean length.
//!
//! Two cached stages: "generate" (one model's responses to the prompts, reused by every
//! evaluation that compares against that model) and "eval" (judging a pair of generations).
//! Outputs include an AlpacaEval-style `model_outputs.json`, so the same command serves real
//! models whose outputs go to alpaca_eval.
//!
//! Under torchrun/srun both generations run sharded over the ranks (see `generation`); the
//! judging runs on rank 0.

use crate::generation::{generation_stage, read_generations, GenerationSettings, Generations};
use crate::rollout::ResponseJudge;
use crate::stage;
use anyhow::{bail, Context, Result};
use rto_data::cli::CommonArgs;
use rto_data::records::{write_columns, Column};
use rto_data::store::StageDir;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Parser)]
#[command(name = "rto-eval", version, about = "Win rate against a baseline model under a judge")]
pub struct EvalArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The model to evaluate.
    #[arg(long)]
    pub model: PathBuf,
    /// The baseline (normally the SFT model).
    #[arg(long)]
    pub baseline: PathBuf,
    /// Held-out prompts (Parquet or JSONL).
    #[arg(long)]
    pub prompts: PathBuf,
    /// Judge: `toy` (the shipped task's gold judge).
    #[arg(long, default_value = "toy")]
    pub judge: String,
    /// Name recorded as `generator` in model_outputs.json.
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub generation: GenerationSettings,
}

pub fn cli(args: EvalArgs) -> Result<()> {
    let judge = crate::rollout::judge_named(&args.judge)?;
    // Check both inputs before generating with either, so a wrong --baseline does not leave
    // a finished generation of --model behind.
    for (flag, path) in [("--model", &args.model), ("--baseline", &args.baseline), ("--prompts", &args.prompts)] {
        std::fs::metadata(path)
            .with_context(|| format!("{flag} {} does not exist or cannot be read", path.display()))?;
    }
    let group = crate::dist::group(&args.common.device)?;
    let ours = generation_stage(&group, &args.common, &args.generation, &args.model, &args.prompts)?;
    let baseline = generation_stage(&group, &args.common, &args.generation, &args.baseline, &args.prompts)?;
    let name = args.name.clone().unwrap_or_else(|| folder_name(&args.model));
    // The name is written into the outputs (`generator` in results.json and
    // model_outputs.json), so it is part of the key: two names never share one folder.
    let settings = json!({"judge": judge.name(), "name": name});
    let spec =
        stage::spec("eval", 2, &args.common, &settings)?.with_input("model", &ours).with_input("baseline", &baseline);
    stage::run_on_main(&group, &args.common, &spec, |out| judge_pair(judge.as_ref(), &ours, &baseline, &name, out))?;
    Ok(())
}

fn folder_name(path: &Path) -> String {
    path.file_name().map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned())
}

/// 1 for a win, 0.5 for a tie, 0 for a loss: the per-prompt terms of `rto_task::win_rate`.
fn win(ours: f64, theirs: f64) -> f64 {
    rto_task::win_rate(&[ours], &[theirs]).expect("one pair")
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

fn judge_pair(
    judge: &dyn ResponseJudge,
    ours_dir: &Path,
    baseline_dir: &Path,
    name: &str,
    out: &StageDir,
) -> Result<Value> {
    let ours = read_generations(ours_dir)?;
    let baseline = read_generations(baseline_dir)?;
    if ours.prompts != baseline.prompts {
        bail!("{} and {} answer different prompts", ours_dir.display(), baseline_dir.display());
    }
    let score =
        |g: &Generations| -> Vec<f64> { g.prompts.iter().zip(&g.responses).map(|(p, r)| judge.score(p, r)).collect() };
    let (gold, baseline_gold) = (score(&ours), score(&baseline));
    let wins: Vec<f64> = gold.iter().zip(&baseline_gold).map(|(&a, &b)| win(a, b)).collect();
    write_columns(
        &out.join("scores.parquet"),
        &[
            ("prompt", Column::Text(ours.prompts.clone())),
            ("response", Column::Text(ours.responses.clone())),
            ("baseline_response", Column::Text(baseline.responses.clone())),
            ("gold_score", Column::Float(gold.clone())),
            ("baseline_gold_score", Column::Float(baseline_gold.clone())),
            ("win", Column::Float(wins.clone())),
            ("n_tokens", Column::Count(ours.lengths.clone())),
        ],
    )?;
    let outputs: Vec<Value> = ours
        .prompts
        .iter()
        .zip(&ours.responses)
        .map(|(p, r)| json!({"instruction": p, "output": r, "generator": name}))
        .collect();
    std::fs::write(out.join("model_outputs.json"), serde_json::to_vec_pretty(&outputs)?)?;
    let lengths: Vec<f64> = ours.lengths.iter().map(|&l| l as f64).collect();
    let baseline_lengths: Vec<f64> = baseline.lengths.iter().map(|&l| l as f64).collect();
    let results = json!({
        "generator": name,
        "prompts": wins.len(),
        "win_rate": mean(&wins),
        "mean_gold_score": mean(&gold),
        "baseline_mean_gold_score": mean(&baseline_gold),
        "mean_length": mean(&lengths),
        "baseline_mean_length": mean(&baseline_lengths),
    });
    std::fs::write(out.join("results.json"), serde_json::to_vec_pretty(&results)?)?;
    eprintln!(
        "{name}: win rate {:.3} vs baseline, gold {:.3} (baseline {:.3}), length {:.1}",
        results["win_rate"].as_f64().unwrap_or(0.0),
        results["mean_gold_score"].as_f64().unwrap_or(0.0),
        results["baseline_mean_gold_score"].as_f64().unwrap_or(0.0),
        results["mean_length"].as_f64().unwrap_or(0.0)
    );
    Ok(results)
}
