//! `sft-train show FOLDER` (and dpo-train, rm-train, ppo-train): a training stage's folder in
//! a screenful — stage, key, inputs, the settings that shape the run, the final value of every
//! metric (train and eval side by side), and a sparkline with first/min/max/last of each curve
//! metrics.png draws. Wired like `token-reward-annotate show`: training stays the default
//! command, so flags and YAML configs work as before.

use super::{is_axis, is_wall_clock, read_records, series, view, View, PLOT_FILE};
use anyhow::{Context, Result};
use rto_data::store::{Manifest, MANIFEST_FILE};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, clap::Args)]
pub struct ShowStageArgs {
    /// A training stage's output folder (runs/<stage>/<key>, or a runs/latest/NAME link).
    pub folder: PathBuf,
}

#[derive(Debug, clap::Subcommand)]
pub enum StageCommand {
    /// Summarize a training stage's output folder: inputs, settings, final metrics, curves.
    Show(ShowStageArgs),
}

/// A training binary's command line: train by default, or `show FOLDER`.
///
/// Written by hand for the reason given on `crate::annotate::AnnotateCli`: the derive cannot
/// make a struct with flattened parts optional next to a subcommand.
#[derive(Debug)]
pub enum TrainingCli<A> {
    Train(Box<A>),
    Show(ShowStageArgs),
}

impl<A: clap::Parser> clap::CommandFactory for TrainingCli<A> {
    fn command() -> clap::Command {
        let cmd = A::command().args_conflicts_with_subcommands(true).subcommand_negates_reqs(true);
        <StageCommand as clap::Subcommand>::augment_subcommands(cmd)
    }

    fn command_for_update() -> clap::Command {
        Self::command()
    }
}

impl<A: clap::Parser> clap::FromArgMatches for TrainingCli<A> {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        Self::from_arg_matches_mut(&mut matches.clone())
    }

    fn from_arg_matches_mut(matches: &mut clap::ArgMatches) -> Result<Self, clap::Error> {
        if matches.subcommand_name().is_some() {
            let StageCommand::Show(args) = <StageCommand as clap::FromArgMatches>::from_arg_matches_mut(matches)?;
            return Ok(Self::Show(args));
        }
        Ok(Self::Train(Box::new(A::from_arg_matches_mut(matches)?)))
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl<A: clap::Parser> clap::Parser for TrainingCli<A> {}

/// Entry point of a training binary: `train` its arguments, or print the summary of a folder.
pub fn main_cli<A>(parsed: TrainingCli<A>, train: impl FnOnce(A) -> Result<()>) -> Result<()> {
    match parsed {
        TrainingCli::Train(args) => train(*args),
        TrainingCli::Show(args) => {
            print!("{}", summary(&args.folder)?);
            Ok(())
        }
    }
}

/// The text `show` prints for `folder`.
pub fn summary(folder: &Path) -> Result<String> {
    let manifest = read_manifest(folder)?;
    let mut out = String::new();
    let wall = format!("{:.1} s", manifest.wall_time_s);
    writeln!(out, "{:<10}{}  key {}  ({wall})", "stage", manifest.stage, manifest.key.short())?;
    writeln!(out, "{:<10}{}", "folder", folder.display())?;
    let role_width = manifest.inputs.iter().map(|i| i.role.len()).max().unwrap_or(0);
    for (i, input) in manifest.inputs.iter().enumerate() {
        let label = if i == 0 { "inputs" } else { "" };
        writeln!(out, "{label:<10}{:<role_width$}  {}  {}", input.role, input.key.short(), input.path)?;
    }
    let Some(view) = view(&manifest.stage) else {
        writeln!(out, "{:<10}not a training stage: no metrics to show", "")?;
        return Ok(out);
    };
    out.push_str(&wrap("settings", &settings(&manifest.settings, view)));
    let metrics_path = folder.join("metrics.jsonl");
    let records = read_records(&metrics_path)?;
    writeln!(out, "{:<10}{} records, last {} {}", "metrics", records.len(), view.axis, last_step(&records))?;
    out.push_str(&final_table(&records));
    out.push_str(&curves(view, &records));
    if folder.join(PLOT_FILE).is_file() {
        writeln!(out, "{:<10}{}", "plot", folder.join(PLOT_FILE).display())?;
    }
    Ok(out)
}

fn read_manifest(folder: &Path) -> Result<Manifest> {
    let path = folder.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!("{}: no {MANIFEST_FILE}; `show` takes a stage output folder (runs/<stage>/<key>)", folder.display())
    })?;
    serde_json::from_str(&text).with_context(|| format!("{}: not an RTO manifest", path.display()))
}

fn last_step(records: &[Value]) -> String {
    records.last().and_then(|r| r.get("step")).map_or("-".into(), Value::to_string)
}

/// `path=value` for the view's settings (nulls left out), then the seed and device.
fn settings(settings: &Value, view: &View) -> Vec<String> {
    let mut leaves = Vec::new();
    flatten("", &settings["stage"], &mut leaves);
    leaves.sort();
    let mut picked: Vec<String> = leaves
        .into_iter()
        .filter(|(path, _)| view.settings.iter().any(|p| path == p || path.starts_with(&format!("{p}."))))
        .map(|(path, value)| format!("{path}={value}"))
        .collect();
    for key in ["seed", "device"] {
        if let Some(value) = settings["common"].get(key) {
            picked.push(format!("{key}={}", plain(value)));
        }
    }
    picked
}

fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                flatten(&path, child, out);
            }
        }
        Value::Null => {}
        other => out.push((prefix.to_string(), plain(other))),
    }
}

/// A JSON scalar as a user would type it (strings without quotes).
fn plain(value: &Value) -> String {
    value.as_str().map_or_else(|| value.to_string(), str::to_string)
}

/// `items` after a label, wrapped at 110 columns under the label's indent.
fn wrap(label: &str, items: &[String]) -> String {
    let mut out = format!("{label:<10}");
    let mut width = 10;
    for item in items {
        if width > 10 && width + 2 + item.len() > 110 {
            out.push_str(&format!("\n{:<10}", ""));
            width = 10;
        } else if width > 10 {
            out.push_str("  ");
            width += 2;
        }
        out.push_str(item);
        width += item.len();
    }
    out.push('\n');
    out
}

/// The last value of every metric, `train/x` (or a bare `x`) and `eval/x` on one row.
fn final_table(records: &[Value]) -> String {
    let mut rows: BTreeMap<String, [Option<f64>; 2]> = BTreeMap::new();
    for record in records {
        for (key, value) in record.as_object().into_iter().flatten() {
            let Some(number) = value.as_f64() else { continue };
            if is_axis(key) || is_wall_clock(key) {
                continue;
            }
            let (name, column) = match key.strip_prefix("eval/") {
                Some(name) => (name, 1),
                None => (key.strip_prefix("train/").unwrap_or(key), 0),
            };
            rows.entry(name.to_string()).or_default()[column] = Some(number);
        }
    }
    let width = rows.keys().map(String::len).max().unwrap_or(0).max(6);
    let mut out = format!("{:<10}{:<width$}  {:>12}  {:>12}\n", "final", "metric", "train", "eval");
    for (name, [train, eval]) in rows {
        out.push_str(&format!("{:<10}{name:<width$}  {:>12}  {:>12}\n", "", number(train), number(eval)));
    }
    out
}

/// A metric value in at most 12 characters.
pub fn number(value: Option<f64>) -> String {
    match value {
        None => "-".into(),
        Some(v) if v.fract() == 0.0 && v.abs() < 1e9 => format!("{v:.0}"),
        Some(v) if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e5) => format!("{v:.3e}"),
        Some(v) => format!("{v:.4}"),
    }
}

/// One line per curve of the view: sparkline, first, min, max, last.
fn curves(view: &View, records: &[Value]) -> String {
    let keys: Vec<&str> = view.panels.iter().flat_map(|p| p.keys.iter().copied()).collect();
    let lines: Vec<(&str, Vec<f64>)> = keys
        .into_iter()
        .map(|key| (key, series(records, key).into_iter().map(|(_, v)| v).collect::<Vec<f64>>()))
        .filter(|(_, values)| !values.is_empty())
        .collect();
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = format!(
        "{:<10}{:<width$}  {:<SPARK_WIDTH$}  {:>10} {:>10} {:>10} {:>10}\n",
        "curves", "metric", "", "first", "min", "max", "last"
    );
    for (key, values) in lines {
        let (min, max) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let ends = [values[0], min, max, values[values.len() - 1]].map(|v| number(Some(v)));
        out.push_str(&format!(
            "{:<10}{key:<width$}  {:<SPARK_WIDTH$}  {:>10} {:>10} {:>10} {:>10}\n",
            "",
            sparkline(&values, SPARK_WIDTH),
            ends[0],
            ends[1],
            ends[2],
            ends[3]
        ));
    }
    out
}

const SPARK_WIDTH: usize = 32;

/// `values` as at most `width` block characters, each the mean of its share of the points,
/// scaled from the lowest (▁) to the highest (█) mean.
pub fn sparkline(values: &[f64], width: usize) -> String {
    const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let buckets = values.len().min(width);
    let means: Vec<f64> = (0..buckets)
        .map(|b| {
            let part = &values[b * values.len() / buckets..(b + 1) * values.len() / buckets];
            part.iter().sum::<f64>() / part.len() as f64
        })
        .collect();
    let (lo, hi) = means.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    means
        .iter()
        .map(|&m| {
            let level = if hi > lo { ((m - lo) / (hi - lo) * 7.0).round() as usize } else { 3 };
            BLOCKS[level.min(7)]
        })
        .collect()
}
