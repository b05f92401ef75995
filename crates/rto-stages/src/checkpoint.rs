//! Periodic training checkpoints in a stage's scratch folder, and the metrics log.
//!
//! A checkpoint is a folder `ckpt/` holding the variables of every trained model, the optimizer
//! states and `state.json` (step, data position, anything else the stage needs). It is written
//! as `ckpt.tmp/` and renamed over the old one, so a kill at any moment leaves either the
//! previous or the new checkpoint, never a mix. Data order and sampling are derived from
//! (seed, step), so the step is all the RNG state a resume needs.

use crate::metrics::tensorboard::EventLog;
use crate::optim::AdamW;
use anyhow::{Context, Result};
use rto_dist::ProcessGroup;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use tch::{nn::VarStore, Tensor};

pub struct Checkpointer {
    dir: PathBuf,
}

/// What a resumed run gets back.
pub struct Restored {
    pub step: usize,
    pub state: Value,
    /// The checkpoint folder it came from (where ZeRO-1's optimizer shards are).
    pub dir: PathBuf,
}

impl Checkpointer {
    pub fn new(scratch: &Path) -> Self {
        Self { dir: scratch.to_path_buf() }
    }

    fn current(&self) -> PathBuf {
        self.dir.join("ckpt")
    }

    /// Saves `models` and `optimizers` (paired by name) at `step`, atomically.
    pub fn save(
        &self,
        step: usize,
        models: &[(&str, &VarStore)],
        optimizers: &[(&str, &AdamW)],
        state: Value,
    ) -> Result<()> {
        let tmp = self.begin()?;
        self.write(&tmp, step, models, state)?;
        for (name, optimizer) in optimizers {
            optimizer.save(&tmp.join(format!("{name}.optim.safetensors")))?;
        }
        self.publish(&tmp)
    }

    /// [`Self::save`] with optimizer state sharded over the ranks of `group` (ZeRO-1): rank 0
    /// starts the checkpoint and writes `models` and the state, then every rank writes its
    /// shard (`write_shard`, into the folder it is given), then rank 0 publishes. Barriers
    /// order the three, so a checkpoint missing a shard is never published. Every rank calls it.
    pub fn save_sharded(
        &self,
        group: &ProcessGroup,
        step: usize,
        models: &[(&str, &VarStore)],
        state: Value,
        write_shard: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        let tmp = self.dir.join("ckpt.tmp");
        if group.is_main() {
            self.begin()?;
            self.write(&tmp, step, models, state)?;
        }
        group.barrier().context("waiting for rank 0 to start the checkpoint")?;
        write_shard(&tmp)?;
        group.barrier().context("waiting for every rank's optimizer shard")?;
        if group.is_main() {
            self.publish(&tmp)?;
        }
        Ok(())
    }

    /// A fresh `ckpt.tmp/`.
    fn begin(&self) -> Result<PathBuf> {
        let tmp = self.dir.join("ckpt.tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
        }
        std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        Ok(tmp)
    }

    /// The models' variables and `state.json` into `tmp`.
    fn write(&self, tmp: &Path, step: usize, models: &[(&str, &VarStore)], state: Value) -> Result<()> {
        for (name, vs) in models {
            let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
            vars.sort_by(|a, b| a.0.cmp(&b.0));
            let path = tmp.join(format!("{name}.safetensors"));
            Tensor::write_safetensors(&vars, &path).with_context(|| format!("writing {}", path.display()))?;
        }
        let state = serde_json::json!({"step": step, "state": state});
        std::fs::write(tmp.join("state.json"), serde_json::to_vec_pretty(&state)?)?;
        Ok(())
    }

    /// Renames the finished `tmp` over the current checkpoint.
    fn publish(&self, tmp: &Path) -> Result<()> {
        let old = self.dir.join("ckpt.old");
        let current = self.current();
        if current.exists() {
            // A kill after the last publish but before its cleanup leaves `ckpt.old` too;
            // `ckpt` only ever appears complete (by renaming a finished tmp), so the old one
            // is stale, and renaming over a non-empty folder would fail every later save.
            if old.exists() {
                std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
            }
            std::fs::rename(&current, &old).with_context(|| format!("moving {} aside", current.display()))?;
        }
        std::fs::rename(tmp, &current).with_context(|| format!("publishing checkpoint {}", current.display()))?;
        if old.exists() {
            std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
        }
        Ok(())
    }

    /// Is there a checkpoint to resume from (the current one, or the previous one left by a
    /// kill between the two renames of [`Self::save`])?
    pub fn exists(&self) -> bool {
        self.current().join("state.json").exists() || self.dir.join("ckpt.old/state.json").exists()
    }

    /// Restores the latest checkpoint into `models` and `optimizers`, if there is one.
    pub fn restore(
        &self,
        models: &mut [(&str, &mut VarStore)],
        optimizers: &mut [(&str, &mut AdamW)],
    ) -> Result<Option<Restored>> {
        let Some(current) = self.latest() else { return Ok(None) };
        for (name, vs) in models.iter_mut() {
            let path = current.join(format!("{name}.safetensors"));
            // Copying into trainable leaves must not be recorded by autograd.
            tch::no_grad(|| vs.read_safetensors(&path)).with_context(|| format!("restoring {}", path.display()))?;
        }
        for (name, optimizer) in optimizers.iter_mut() {
            optimizer.load(&current.join(format!("{name}.optim.safetensors")))?;
        }
        let text = std::fs::read_to_string(current.join("state.json"))?;
        let value: Value = serde_json::from_str(&text)?;
        let step = value["step"].as_u64().context("checkpoint state.json without step")? as usize;
        Ok(Some(Restored { step, state: value["state"].clone(), dir: current }))
    }

    /// The folder of the checkpoint to resume from: the current one, or the previous one a
    /// kill between the two renames of a save left alone.
    fn latest(&self) -> Option<PathBuf> {
        [self.current(), self.dir.join("ckpt.old")].into_iter().find(|dir| dir.join("state.json").exists())
    }
}

/// Where a failed run's last good checkpoint is, for its error message; a failure before the
/// first checkpoint must not send the user looking for one.
pub fn last_good(scratch: &Path) -> String {
    if Checkpointer::new(scratch).exists() {
        format!("the last good checkpoint is in {}", scratch.display())
    } else {
        "no checkpoint had been saved yet".to_string()
    }
}

/// `metrics.jsonl`: one JSON object per line, each with a `step`. Reopening for a resumed run
/// drops lines past the checkpoint, so the final file equals an uninterrupted run's. With a
/// TensorBoard run folder, every record also goes there as scalars, the folder started over
/// from the kept records on each opening (see [`crate::metrics::tensorboard`]).
pub struct MetricsLog {
    file: std::fs::File,
    path: PathBuf,
    events: Option<EventLog>,
}

impl MetricsLog {
    pub fn open(path: &Path, resume_step: usize) -> Result<Self> {
        Self::open_with_tensorboard(path, resume_step, None)
    }

    /// [`Self::open`], mirrored into the TensorBoard run folder `tensorboard` when given.
    pub fn open_with_tensorboard(path: &Path, resume_step: usize, tensorboard: Option<&Path>) -> Result<Self> {
        let kept: Vec<(String, Value)> = match std::fs::read_to_string(path) {
            Ok(text) => text
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok().map(|v| (line.to_string(), v)))
                .filter(|(_, v)| v["step"].as_u64().is_some_and(|s| s as usize <= resume_step && resume_step > 0))
                .collect(),
            Err(_) => vec![],
        };
        // Rewrite through a temporary file and a rename: truncating in place, a kill before the
        // kept lines are back would lose the records up to the checkpoint for good.
        let tmp = path.with_extension("jsonl.tmp");
        let mut text = String::new();
        for (line, _) in &kept {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        let records: Vec<Value> = kept.into_iter().map(|(_, v)| v).collect();
        let events = tensorboard.map(|dir| EventLog::open(dir, &records)).transpose()?;
        Ok(Self { file, path: path.to_path_buf(), events })
    }

    pub fn write(&mut self, record: &Value) -> Result<()> {
        writeln!(self.file, "{record}").with_context(|| format!("writing {}", self.path.display()))?;
        self.file.flush()?;
        if let Some(events) = &mut self.events {
            events.write(record)?;
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
