//! The stage frame of a multi-process run: **rank 0 owns the store.** It alone resolves the
//! key, takes the stage lock, checks for a reusable output, creates the temporary and scratch
//! folders, writes checkpoints and publishes; it tells the other ranks (`broadcast_bytes`)
//! whether to compute and where the scratch folder is. The ranks share a filesystem (one node,
//! or a shared file system across nodes): the others read checkpoints from rank 0's scratch
//! folder to resume, and never write into the store.
//!
//! Failures: a rank that errors exits; the collective the others are in fails at once (closed
//! sockets) or within the group's timeout, so every rank ends with an error. On rank 0 the
//! store's publish guard then restores the store (only the scratch folder with its checkpoints
//! stays), and rerunning the same command resumes. Before publishing, rank 0 waits for every
//! rank to finish its part (a barrier), so no output is accepted that a rank failed to compute.

use anyhow::{bail, Context, Result};
use rto_data::store::{StageDir, StageOutcome, StageSpec, Store};
use rto_dist::ProcessGroup;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::cell::Cell;
use std::path::{Path, PathBuf};

/// What rank 0 tells the others.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "word", rename_all = "snake_case")]
enum Word {
    /// Compute your share; checkpoints live in `scratch`.
    Compute { scratch: PathBuf },
    /// A verified output exists at `path`: nothing to compute.
    Reused { path: PathBuf },
    /// Rank 0 published the output at `path`.
    Done { path: PathBuf },
    /// Rank 0 failed where the others wait for its word.
    Failed { error: String },
}

/// Where this rank works during a stage's computation.
pub struct Work<'a> {
    group: &'a ProcessGroup,
    /// Rank 0's output folder; `None` on the other ranks.
    out: Option<&'a StageDir>,
    /// The scratch folder rank 0 created, on the other ranks.
    peer_scratch: Option<PathBuf>,
}

impl<'a> Work<'a> {
    pub fn group(&self) -> &'a ProcessGroup {
        self.group
    }

    /// The output folder, on rank 0 only: what every write of an artifact goes through.
    pub fn output(&self) -> Option<&'a StageDir> {
        self.out
    }

    /// The resumable scratch folder (created by rank 0, shared by every rank).
    pub fn scratch(&self) -> Result<PathBuf> {
        match (self.out, &self.peer_scratch) {
            (Some(dir), _) => dir.scratch(),
            (None, Some(path)) => Ok(path.clone()),
            (None, None) => bail!("no scratch folder: rank 0 did not send one"),
        }
    }
}

/// A stage's result on every rank.
pub struct Ranked {
    /// `<store>/<stage>/<key>/`, the same on every rank.
    pub path: PathBuf,
    pub reused: bool,
    /// Rank 0's outcome (manifest included); `None` on the others.
    pub outcome: Option<StageOutcome>,
}

/// Runs `compute` for `spec` on every rank of `group`, rank 0 going through `store` (see the
/// module docs). With a single process this is exactly `store.run`.
pub fn run_stage(
    group: &ProcessGroup,
    store: &Store,
    spec: &StageSpec,
    force: bool,
    compute: impl FnOnce(&Work) -> Result<Value>,
) -> Result<Ranked> {
    if group.is_main() {
        main_rank(group, store, spec, force, compute)
    } else {
        other_rank(group, spec, compute)
            .with_context(|| format!("stage {} on rank {} of {}", spec.stage, group.rank(), group.world_size()))
    }
}

fn main_rank(
    group: &ProcessGroup,
    store: &Store,
    spec: &StageSpec,
    force: bool,
    compute: impl FnOnce(&Work) -> Result<Value>,
) -> Result<Ranked> {
    // Where the others are when rank 0 fails: waiting for its first word (nothing started),
    // inside the computation (they are in some collective: rank 0 just exits), or waiting for
    // its last word (everyone finished computing).
    let (started, computed) = (Cell::new(false), Cell::new(false));
    let result = store.run(spec, force, |dir| {
        if group.is_distributed() {
            let scratch = dir.scratch()?;
            tell(group, &Word::Compute { scratch })?;
        }
        started.set(true);
        let summary = compute(&Work { group, out: Some(dir), peer_scratch: None })?;
        group.barrier().context("waiting for every rank to finish its share before publishing")?;
        computed.set(true);
        Ok(summary)
    });
    match result {
        Ok(outcome) => {
            let path = outcome.path.clone();
            let word = if outcome.reused { Word::Reused { path } } else { Word::Done { path } };
            tell(group, &word)?;
            Ok(Ranked { path: outcome.path.clone(), reused: outcome.reused, outcome: Some(outcome) })
        }
        Err(error) => {
            if !started.get() || computed.get() {
                // The others wait for this word; their own failure to hear it adds nothing.
                let _ = tell(group, &Word::Failed { error: format!("{error:#}") });
            }
            Err(error)
        }
    }
}

fn other_rank(group: &ProcessGroup, spec: &StageSpec, compute: impl FnOnce(&Work) -> Result<Value>) -> Result<Ranked> {
    let stage = &spec.stage;
    match hear(group).with_context(|| format!("waiting for rank 0 to decide whether to compute {stage}"))? {
        Word::Compute { scratch } => {
            compute(&Work { group, out: None, peer_scratch: Some(scratch) })?;
            group.barrier().context("waiting for every rank to finish its share")?;
            match hear(group).context("waiting for rank 0 to publish the output")? {
                Word::Done { path } => Ok(Ranked { path, reused: false, outcome: None }),
                Word::Failed { error } => bail!("rank 0 could not store the output: {error}"),
                other => bail!("rank 0 sent {other:?} after the computation: ranks run different builds?"),
            }
        }
        Word::Reused { path } => Ok(Ranked { path, reused: true, outcome: None }),
        Word::Failed { error } => bail!("rank 0 failed before computing: {error}"),
        Word::Done { path } => bail!("rank 0 published {} before any computation", display(&path)),
    }
}

fn tell(group: &ProcessGroup, word: &Word) -> Result<()> {
    group.broadcast_bytes(serde_json::to_vec(word)?, 0).map(drop)
}

fn hear(group: &ProcessGroup) -> Result<Word> {
    let bytes = group.broadcast_bytes(Vec::new(), 0)?;
    serde_json::from_slice(&bytes).context("reading rank 0's word")
}

fn display(path: &Path) -> String {
    path.display().to_string()
}
