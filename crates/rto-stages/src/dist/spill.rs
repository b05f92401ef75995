//! Where a rank other than 0 puts its rows of a token table in a multi-process run
//! (token-reward-annotate's table, ppo-train's rollout tables): one JSON line per sample
//! (`[sample, tokens]`) in `<scratch>/<name>.rank<r>.jsonl`, streamed, so no rank holds more
//! than a batch. Rank 0 appends them to the one table after its own block, rank by rank, which
//! restores the original row order (the blocks are contiguous, `dist::share`). serde_json
//! writes f32 in their shortest round-trip form, so the values come back bit for bit.

use anyhow::{Context, Result};
use rto_data::token_table::{SampleRecord, TokenRecord, TokenTableWriter};
use rto_dist::ProcessGroup;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

/// The spill file of table `name` of `rank` in the scratch folder.
pub fn path(scratch: &Path, name: &str, rank: usize) -> PathBuf {
    scratch.join(format!("{name}.rank{rank}.jsonl"))
}

pub struct SpillWriter {
    file: BufWriter<File>,
    path: PathBuf,
}

impl SpillWriter {
    pub fn create(path: PathBuf) -> Result<Self> {
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { file: BufWriter::new(file), path })
    }

    pub fn push(&mut self, sample: &SampleRecord, tokens: &[TokenRecord]) -> Result<()> {
        serde_json::to_writer(&mut self.file, &(sample, tokens))
            .and_then(|()| self.file.write_all(b"\n").map_err(serde_json::Error::io))
            .with_context(|| format!("writing {}", self.path.display()))
    }

    pub fn finish(mut self) -> Result<()> {
        self.file.flush().with_context(|| format!("writing {}", self.path.display()))
    }
}

/// Calls `each` on every sample of the spill file at `path`, in order.
pub fn replay(path: &Path, mut each: impl FnMut(SampleRecord, Vec<TokenRecord>) -> Result<()>) -> Result<()> {
    let file = File::open(path).with_context(|| format!("opening another rank's samples {}", path.display()))?;
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        let (sample, tokens): (SampleRecord, Vec<TokenRecord>) =
            serde_json::from_str(&line).with_context(|| format!("{} line {}", path.display(), n + 1))?;
        each(sample, tokens)?;
    }
    Ok(())
}

/// Where a rank's rows of a sharded table go: the table (rank 0) or its spill file (the others).
pub enum Sink {
    Table(Box<TokenTableWriter>),
    Spill(SpillWriter),
}

impl Sink {
    pub fn push(&mut self, sample: SampleRecord, tokens: &[TokenRecord]) -> Result<()> {
        match self {
            Sink::Table(writer) => writer.push_sample(sample, tokens),
            Sink::Spill(spill) => spill.push(&sample, tokens),
        }
    }

    /// Ends this rank's part of the table `name` once its own rows are in: another rank closes
    /// its spill file and tells rank 0 (a barrier); rank 0 waits for all of them and appends
    /// their rows rank by rank (`each` sees every sample first), removing the spill files.
    /// Returns rank 0's writer, to be finished. Every rank calls it.
    pub fn gather(
        self,
        group: &ProcessGroup,
        scratch: &Path,
        name: &str,
        mut each: impl FnMut(&SampleRecord),
    ) -> Result<Option<TokenTableWriter>> {
        let mut writer = match self {
            Sink::Table(writer) => *writer,
            Sink::Spill(spill) => {
                spill.finish()?;
                group.barrier().context("telling rank 0 this rank's samples are written")?;
                return Ok(None);
            }
        };
        if group.is_distributed() {
            group.barrier().context("waiting for every rank's samples")?;
            for rank in 1..group.world_size() {
                let path = path(scratch, name, rank);
                replay(&path, |sample, tokens| {
                    each(&sample);
                    writer.push_sample(sample, &tokens)
                })?;
                std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            }
        }
        Ok(Some(writer))
    }
}
