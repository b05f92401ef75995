//! What a training stage's metrics records become besides metrics.jsonl: TensorBoard event
//! files outside the store ([`tensorboard`], `--tensorboard DIR`), `metrics.png` in the stage
//! folder ([`plot`]), and the `show FOLDER` summary of every training binary ([`show`]).
//!
//! The plot and the summary draw the same curves, chosen per stage in [`view`]: loss and the
//! stage's key numbers, train and eval. Wall-clock numbers (`time/*`, `*tokens_per_s`) are never
//! drawn: metrics.png lives in the content-addressed folder and must be the same bytes in every
//! run with the same inputs and settings.

pub mod plot;
pub mod show;
pub mod tensorboard;
pub mod tfevents;

use anyhow::{Context, Result};
use rto_data::store::StageDir;
use serde_json::Value;
use std::path::Path;

/// File name of the plot in a training stage's folder.
pub const PLOT_FILE: &str = "metrics.png";

/// The x axis of the records: `step` (PPO's `iteration` equals it).
pub fn is_axis(key: &str) -> bool {
    key == "step" || key == "iteration"
}

/// Is `key` a wall-clock number (different in every run)?
pub fn is_wall_clock(key: &str) -> bool {
    key.starts_with("time/") || key.ends_with("tokens_per_s")
}

/// The records of a metrics.jsonl file.
pub fn read_records(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .map(|(i, line)| serde_json::from_str(line).with_context(|| format!("{} line {}", path.display(), i + 1)))
        .collect()
}

/// (step, value) of every record that has `key`.
pub fn series(records: &[Value], key: &str) -> Vec<(f64, f64)> {
    records.iter().filter_map(|r| Some((r.get("step")?.as_f64()?, r.get(key)?.as_f64()?))).collect()
}

/// One chart: a title and the metrics it draws (those present in the records).
pub struct Panel {
    pub title: &'static str,
    pub keys: &'static [&'static str],
    /// Whether a long curve is drawn smoothed over the faint raw one (noisy per-batch
    /// numbers), or as it is (a schedule).
    pub smooth: bool,
}

/// What the plot and `show` make of a stage's records.
pub struct View {
    /// The x axis' name.
    pub axis: &'static str,
    pub panels: &'static [Panel],
    /// The settings `show` prints: dotted paths into the manifest's stage settings, each
    /// standing for everything under it.
    pub settings: &'static [&'static str],
}

const fn panel(title: &'static str, keys: &'static [&'static str]) -> Panel {
    Panel { title, keys, smooth: true }
}

const fn exact(title: &'static str, keys: &'static [&'static str]) -> Panel {
    Panel { title, keys, smooth: false }
}

const LOOP: [&str; 4] = ["train.epochs", "train.batch_size", "train.max_steps", "train.warmup_ratio"];

const SFT: View = View {
    axis: "step",
    panels: &[
        panel("loss", &["train/loss", "eval/loss"]),
        panel("eval perplexity", &["eval/perplexity"]),
        exact("learning rate", &["lr"]),
        panel("gradient norm", &["grad_norm"]),
    ],
    settings: &["learning_rate", LOOP[0], LOOP[1], LOOP[2], LOOP[3], "limits"],
};

const DPO: View = View {
    axis: "step",
    panels: &[
        panel("loss", &["train/loss", "eval/loss"]),
        panel("reward accuracy", &["train/rewards/accuracies", "eval/rewards/accuracies"]),
        panel("reward margin", &["train/rewards/margins", "eval/rewards/margins"]),
        panel(
            "rewards of chosen and rejected",
            &["train/rewards/chosen", "train/rewards/rejected", "eval/rewards/chosen", "eval/rewards/rejected"],
        ),
    ],
    settings: &["loss", "learning_rate", LOOP[0], LOOP[1], LOOP[2], LOOP[3], "limits"],
};

const RM: View = View {
    axis: "step",
    panels: &[
        panel("loss", &["train/loss", "eval/loss"]),
        panel("accuracy", &["train/accuracy", "eval/accuracy"]),
        panel("reward margin", &["train/rewards/margins", "eval/rewards/margins"]),
        panel(
            "rewards of chosen and rejected",
            &["train/rewards/chosen", "train/rewards/rejected", "eval/rewards/chosen", "eval/rewards/rejected"],
        ),
    ],
    settings: &["learning_rate", "margin", LOOP[0], LOOP[1], LOOP[2], LOOP[3], "limits"],
};

const PPO: View = View {
    axis: "iteration",
    panels: &[
        panel("reward and return", &["reward", "returns"]),
        panel("KL to the reference", &["kl"]),
        panel("gold (judge) score", &["judge_score", "eval/judge_score"]),
        panel("reward-model score", &["rm_score", "eval/rm_score"]),
        panel("DPO return", &["dpo_return"]),
        panel("policy loss", &["policy_loss"]),
        panel("value loss", &["value_loss"]),
        panel("response length", &["response_length", "eval/response_length"]),
    ],
    settings: &[
        "algo",
        "reward",
        "iterations",
        "max_samples",
        "rollout_batch_size",
        "train_batch_size",
        "ppo_epochs",
        "actor_lr",
        "critic_lr",
        "judge",
    ],
};

/// The view of a stage by its name (as in the store); `None` for stages that do not train.
pub fn view(stage: &str) -> Option<&'static View> {
    match stage {
        crate::sft::STAGE => Some(&SFT),
        crate::dpo::STAGE => Some(&DPO),
        crate::rm::STAGE => Some(&RM),
        crate::ppo::STAGE => Some(&PPO),
        _ => None,
    }
}

/// Publishes a finished training run's metrics into its stage folder: metrics.jsonl (from the
/// scratch folder, where the run appended to it) and the plot of its records.
pub fn publish(metrics_jsonl: &Path, out: &StageDir, stage: &str) -> Result<()> {
    let target = out.join("metrics.jsonl");
    std::fs::copy(metrics_jsonl, &target).with_context(|| format!("copying {}", metrics_jsonl.display()))?;
    let records = read_records(&target)?;
    let view = view(stage).with_context(|| format!("no metrics view for stage `{stage}`"))?;
    let title = format!("{stage} {}", out.key().short());
    plot::write_png(&out.join(PLOT_FILE), &title, view, &records)
}
