//! `--tensorboard DIR`: a training run's metrics records as TensorBoard scalars, written to
//! `DIR/<stage>-<short key>/` while the run goes, outside the store (the stage folder stays
//! byte-reproducible and the flag is in no key).
//!
//! Every number of a record is a scalar under its metrics.jsonl name (`train/loss`,
//! `eval/rewards/accuracies`, `lr`, ...) at the record's `step` (PPO's `iteration`, equal to
//! it, is the axis, not a scalar).
//!
//! A resumed run must show each step once. The event file mirrors [`crate::checkpoint::MetricsLog`]:
//! opening the log for a run (fresh or resumed) writes a NEW file holding exactly the records
//! the metrics log kept, then deletes the earlier files, so the folder never holds the points a
//! killed run wrote past its checkpoint. The new file's name sorts after the old ones (a
//! sequence number), so a TensorBoard that is watching moves on to it, and it opens with a
//! SessionLog START at step 1, on which TensorBoard drops every point it had loaded before: it
//! then holds what the file holds. Points rewritten from the kept records carry the wall time of
//! the reopening, not of their first writing (metrics.jsonl keeps no clock).

use super::tfevents::{event, record, Payload};
use anyhow::{Context, Result};
use serde_json::Value;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

const PREFIX: &str = "events.out.tfevents.";
/// Our files end so; other event files in the folder (a user's own) are left alone.
const SUFFIX: &str = ".rto";

/// An open event file of one run folder.
pub struct EventLog {
    file: fs::File,
    path: PathBuf,
}

impl EventLog {
    /// Starts the run folder `dir` over with the records `kept` (see the module doc).
    pub fn open(dir: &Path, kept: &[Value]) -> Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("--tensorboard: cannot create {}", dir.display()))?;
        let old = our_files(dir)?;
        let sequence = old.iter().map(|(n, _)| n + 1).max().unwrap_or(1);
        let path = dir.join(format!("{PREFIX}{sequence:010}{SUFFIX}"));
        let now = wall_time();
        let mut bytes = record(&event(now, 0, Payload::FileVersion));
        bytes.extend(record(&event(now, 1, Payload::SessionStart)));
        for kept in kept {
            bytes.extend(scalars_record(kept, now));
        }
        fs::write(&path, bytes).with_context(|| format!("--tensorboard: writing {}", path.display()))?;
        for (_, stale) in old {
            fs::remove_file(&stale).with_context(|| format!("--tensorboard: removing {}", stale.display()))?;
        }
        let file = fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .with_context(|| format!("--tensorboard: opening {}", path.display()))?;
        eprintln!("tensorboard: writing {} ({} records so far)", dir.display(), kept.len());
        Ok(Self { file, path })
    }

    /// Appends the scalars of one metrics record.
    pub fn write(&mut self, metrics: &Value) -> Result<()> {
        let bytes = scalars_record(metrics, wall_time());
        self.file.write_all(&bytes).with_context(|| format!("--tensorboard: writing {}", self.path.display()))?;
        self.file.flush().with_context(|| format!("--tensorboard: writing {}", self.path.display()))
    }
}

/// Writes the run folder `dir` from a finished stage's metrics.jsonl (a reused output: no
/// training ran, but `--tensorboard` should still show its curves).
pub fn export(dir: &Path, metrics_jsonl: &Path) -> Result<()> {
    let records = super::read_records(metrics_jsonl)?;
    EventLog::open(dir, &records).map(drop)
}

/// The step and scalars of a metrics record: every number but the axis keys.
pub fn scalars(metrics: &Value) -> Option<(i64, Vec<(String, f32)>)> {
    let step = metrics.get("step")?.as_i64()?;
    let object = metrics.as_object()?;
    let values = object
        .iter()
        .filter(|(key, _)| !super::is_axis(key))
        .filter_map(|(key, value)| value.as_f64().map(|v| (key.clone(), v as f32)))
        .collect();
    Some((step, values))
}

fn scalars_record(metrics: &Value, wall_time: f64) -> Vec<u8> {
    match scalars(metrics) {
        Some((step, values)) => record(&event(wall_time, step, Payload::Scalars(&values))),
        None => Vec::new(),
    }
}

/// The event files this module wrote in `dir`, with their sequence numbers.
fn our_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let entries = fs::read_dir(dir).with_context(|| format!("--tensorboard: reading {}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("--tensorboard: reading {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let number = name.strip_prefix(PREFIX).and_then(|rest| rest.strip_suffix(SUFFIX));
        if let Some(n) = number.and_then(|n| n.parse::<u64>().ok()) {
            files.push((n, entry.path()));
        }
    }
    Ok(files)
}

fn wall_time() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}
