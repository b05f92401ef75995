//! The frame every stage binary shares: key the stage, run it through the store, report.

use anyhow::Result;
use rto_data::cli::{CommonArgs, TrainingLogArgs};
use rto_data::store::{StageDir, StageOutcome, StageSpec};
use serde::Serialize;
use serde_json::{json, Value};

/// The spec of `stage` with the stage's own settings plus the seed and device in the key.
pub fn spec(stage: &str, schema_version: u32, common: &CommonArgs, settings: &impl Serialize) -> Result<StageSpec> {
    let settings = json!({"stage": serde_json::to_value(settings)?, "common": common.key_settings()});
    StageSpec::new(stage, schema_version, &settings)
}

/// Fails unless `--flag` holds a finite learning rate > 0. Stages call it (and their other
/// setting checks) before [`run`], so a typo fails before the store or a model is touched.
pub fn check_learning_rate(flag: &str, lr: f64) -> Result<()> {
    anyhow::ensure!(lr.is_finite() && lr > 0.0, "--{flag} must be a finite number > 0, got {lr}");
    Ok(())
}

/// Runs `compute` through the cache (no-op when a verified output exists), honours `--link`,
/// and prints the output folder as the last line of stdout.
pub fn run(
    common: &CommonArgs,
    spec: &StageSpec,
    compute: impl FnOnce(&StageDir) -> Result<Value>,
) -> Result<StageOutcome> {
    let outcome = common.store().run(spec, common.force, compute)?;
    if outcome.reused {
        eprintln!("{}: inputs and settings unchanged, reusing {}", spec.stage, outcome.path.display());
    }
    common.finish(&outcome)?;
    Ok(outcome)
}

/// [`run`] for a training stage. When the output is reused (no training ran), `--tensorboard`
/// still gets its curves, from the folder's metrics.jsonl.
pub fn run_training(
    common: &CommonArgs,
    logs: &TrainingLogArgs,
    spec: &StageSpec,
    compute: impl FnOnce(&StageDir) -> Result<Value>,
) -> Result<StageOutcome> {
    let outcome = run(common, spec, compute)?;
    if let (true, Some(dir)) = (outcome.reused, logs.run_dir(&spec.stage, &outcome.key)) {
        crate::metrics::tensorboard::export(&dir, &outcome.path.join("metrics.jsonl"))?;
    }
    Ok(outcome)
}
