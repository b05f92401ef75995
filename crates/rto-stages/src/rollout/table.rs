//! One iteration's rollouts as a token-reward table (DESIGN.md §3, `iteration` column), with
//! each response's `group` (its prompt's index in the rollout batch) and each token's
//! `advantage`, so a user can see in duckdb what every token was pushed by, e.g.
//! `SELECT "group", sample_id, position, token, reward, advantage FROM 'tokens.parquet'`
//! (`group` is an SQL keyword: quote it). The rows are priced while the rollout is collected,
//! but the advantages exist only once the whole rollout is in, so the table keeps each batch's
//! host copies until [`RolloutTable::finish`] writes them. Under several ranks, each prices its
//! own batches; rank 0 writes the table, the others spill their rows for it (`dist::spill`).

use super::{EncodedPrompt, Experience, ScoredBatch};
use crate::dist::spill::{self, Sink, SpillWriter};
use crate::token_scoring::{table_rows, HostScores, Sources};
use anyhow::{ensure, Result};
use rto_data::token_table::{SampleRecord, TableLayout, TableOptions, TokenTableWriter};
use rto_dist::ProcessGroup;
use rto_model::TextTokenizer;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use tch::Device;

/// The name of the other ranks' spill files in the scratch folder.
const SPILL: &str = "rollouts";

/// A generation batch waiting for its advantages.
struct PendingBatch {
    host: HostScores,
    responses: Vec<Vec<i64>>,
    /// Per response, with everything but the token-derived fields.
    samples: Vec<SampleRecord>,
}

pub struct RolloutTable<'a> {
    sink: Sink,
    tokenizer: &'a TextTokenizer,
    sources: Sources,
    iteration: u32,
    next_id: u64,
    pending: Vec<PendingBatch>,
}

impl<'a> RolloutTable<'a> {
    /// The table in `dir` (rank 0's). `first_id` (the id of this rank's first sample) makes
    /// sample ids unique across iterations, so tables can be concatenated.
    pub fn create(
        dir: &Path,
        tokenizer: &'a TextTokenizer,
        sources: Sources,
        iteration: u32,
        first_id: u64,
        gold_score: bool,
        metadata: BTreeMap<String, String>,
    ) -> Result<Self> {
        let layout = TableLayout { iteration: true, side: false, gold_score, group: true, advantage: true };
        let writer = TokenTableWriter::create(dir, TableOptions { layout, metadata, ..Default::default() })?;
        Ok(Self::new(Sink::Table(Box::new(writer)), tokenizer, sources, iteration, first_id))
    }

    /// The rows of `rank` (not 0) of a table rank 0 writes: spilled into `scratch` for it.
    pub fn spilling(
        scratch: &Path,
        rank: usize,
        tokenizer: &'a TextTokenizer,
        sources: Sources,
        iteration: u32,
        first_id: u64,
    ) -> Result<Self> {
        let spill = SpillWriter::create(spill::path(scratch, SPILL, rank))?;
        Ok(Self::new(Sink::Spill(spill), tokenizer, sources, iteration, first_id))
    }

    fn new(sink: Sink, tokenizer: &'a TextTokenizer, sources: Sources, iteration: u32, next_id: u64) -> Self {
        Self { sink, tokenizer, sources, iteration, next_id, pending: Vec::new() }
    }

    /// Keeps a generation batch: `rows[i]` is the prompt of `responses[i]`.
    pub(super) fn push(
        &mut self,
        scored: &ScoredBatch,
        rows: &[&EncodedPrompt],
        responses: &[Vec<i64>],
        judged: Option<&[f64]>,
    ) -> Result<()> {
        let mut samples = Vec::with_capacity(rows.len());
        for (row, (prompt, response)) in rows.iter().zip(responses).enumerate() {
            samples.push(SampleRecord {
                sample_id: self.next_id,
                prompt_id: prompt.id.clone(),
                prompt: self.tokenizer.decode(&prompt.ids, false)?,
                response: self.tokenizer.decode(response, true)?,
                n_tokens: 0,
                dpo_return: None,
                sentence_reward: None,
                ret: 0.0,
                gold_score: judged.map(|j| j[row]),
                iteration: Some(self.iteration),
                side: None,
                group: None,
            });
            self.next_id += 1;
        }
        let host = scored.scores.to_host()?;
        self.pending.push(PendingBatch { host, responses: responses.to_vec(), samples });
        Ok(())
    }

    /// Writes every kept row with its group and advantages from `experience` (the samples in
    /// the order they were pushed) and closes the files.
    pub fn finish(self, experience: &Experience) -> Result<()> {
        self.finish_ranked(experience, 0..experience.len(), &ProcessGroup::single(Device::Cpu), Path::new(""))
    }

    /// [`Self::finish`] for a rank of `group` whose rows are the samples `mine` of
    /// `experience`: rank 0 appends the other ranks' rows after its own (they spill theirs to
    /// `scratch`). Every rank calls it.
    pub fn finish_ranked(
        mut self,
        experience: &Experience,
        mine: Range<usize>,
        group: &ProcessGroup,
        scratch: &Path,
    ) -> Result<()> {
        let pushed: usize = self.pending.iter().map(|b| b.samples.len()).sum();
        ensure!(
            pushed == mine.len() && mine.end <= experience.len(),
            "rollout table: {pushed} rows kept for samples {mine:?} of {}",
            experience.len()
        );
        let mut trained = experience.samples[mine].iter();
        for batch in std::mem::take(&mut self.pending) {
            for (row, (record, response)) in batch.samples.into_iter().zip(&batch.responses).enumerate() {
                let sample = trained.next().expect("counted above");
                ensure!(
                    sample.advantages.len() == response.len(),
                    "rollout table: sample {} has no advantages",
                    record.sample_id
                );
                let (mut record, mut tokens) =
                    table_rows(&batch.host, self.sources, response, row, self.tokenizer, record);
                record.group = Some(sample.prompt as u32);
                for (token, &advantage) in tokens.iter_mut().zip(&sample.advantages) {
                    token.advantage = Some(advantage);
                }
                self.sink.push(record, &tokens)?;
            }
        }
        match self.sink.gather(group, scratch, SPILL, |_| {})? {
            Some(writer) => writer.finish().map(|_| ()),
            None => Ok(()),
        }
    }
}
