//! Where a rank other than 0 puts its annotated samples in a multi-process run: one JSON line
//! per sample (`[sample, tokens]`) in `<scratch>/annotate.rank<r>.jsonl`, streamed, so no rank
//! holds more than a batch. Rank 0 appends them to the one table after its own block, rank by
//! rank, which restores the original row order (the blocks are contiguous, `dist::share`).
//! serde_json writes f32 in their shortest round-trip form, so the values come back bit for bit.

use anyhow::{Context, Result};
use rto_data::token_table::{SampleRecord, TokenRecord};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

pub fn path(scratch: &Path, rank: usize) -> PathBuf {
    scratch.join(format!("annotate.rank{rank}.jsonl"))
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
