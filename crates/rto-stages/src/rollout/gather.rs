//! A rollout collected by several ranks, made whole on every rank: each rank generated and
//! priced its contiguous block of generation batches ([`super::collect`]); its samples and
//! per-batch sums are all-gathered in rank order, which is the rollout's order. So every rank
//! holds the single process's buffer, and the advantages (whitened over the whole buffer, or
//! per prompt group, whose K responses share a generation batch), the KL controller and the
//! metrics are computed from global numbers, the sums even in the single process's order.
//! Samples travel as little-endian bytes: the f32s come back bit for bit.

use super::{Experience, RolloutStats, Sample, Tally};
use anyhow::{ensure, Context, Result};
use rto_dist::{ProcessGroup, ReduceOp};

/// Every rank's samples of `local` (its batches' samples, every prompt), in rank order.
pub fn gather(group: &ProcessGroup, local: Experience) -> Result<Experience> {
    if !group.is_distributed() {
        return Ok(local);
    }
    let parts = group.all_gather_bytes(&encode(&local.samples)).context("gathering the ranks' rollout samples")?;
    let mut samples = Vec::with_capacity(local.samples.len() * group.world_size());
    for (rank, bytes) in parts.iter().enumerate() {
        samples.extend(decode(bytes).with_context(|| format!("reading rank {rank}'s rollout samples"))?);
    }
    Ok(Experience { samples, ..local })
}

/// The rollout's stats from every rank's batches, summed in batch order (the single
/// process's); the wall-clock times are the slowest rank's.
pub fn gather_stats(group: &ProcessGroup, local: RolloutStats) -> Result<RolloutStats> {
    if !group.is_distributed() {
        return Ok(local);
    }
    let rows: Vec<u8> = local.batches.iter().flat_map(|t| t.to_row()).flat_map(f64::to_le_bytes).collect();
    let parts = group.all_gather_bytes(&rows).context("gathering the ranks' rollout sums")?;
    let mut stats = RolloutStats::default();
    for bytes in &parts {
        let values: Vec<f64> = bytes.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect();
        for row in values.chunks_exact(13) {
            stats.push(Tally::from_row(row.try_into().expect("chunks of 13")));
        }
    }
    let times = group.all_reduce_f64s(&[local.generation_s, local.scoring_s], ReduceOp::Max)?;
    (stats.generation_s, stats.scoring_s) = (times[0], times[1]);
    Ok(stats)
}

fn encode(samples: &[Sample]) -> Vec<u8> {
    let mut out = Vec::new();
    let len = |out: &mut Vec<u8>, n: usize| out.extend((n as u64).to_le_bytes());
    for s in samples {
        len(&mut out, s.prompt);
        out.push(u8::from(s.finished));
        len(&mut out, s.response.len());
        out.extend(s.response.iter().flat_map(|t| t.to_le_bytes()));
        for field in [&s.logp_old, &s.values, &s.rewards] {
            len(&mut out, field.len());
            out.extend(field.iter().flat_map(|v| v.to_le_bytes()));
        }
        out.extend(s.outcome.to_le_bytes());
    }
    out
}

/// Reads [`encode`]'s bytes back.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N]> {
        ensure!(self.bytes.len() >= N, "the sample bytes end early");
        let (head, rest) = self.bytes.split_at(N);
        self.bytes = rest;
        Ok(head.try_into().expect("split at N"))
    }

    fn len(&mut self) -> Result<usize> {
        Ok(u64::from_le_bytes(self.take()?) as usize)
    }

    fn f32s(&mut self) -> Result<Vec<f32>> {
        let n = self.len()?;
        (0..n).map(|_| Ok(f32::from_le_bytes(self.take()?))).collect()
    }
}

fn decode(bytes: &[u8]) -> Result<Vec<Sample>> {
    let mut r = Reader { bytes };
    let mut samples = Vec::new();
    while !r.bytes.is_empty() {
        let prompt = r.len()?;
        let finished = r.take::<1>()?[0] != 0;
        let n = r.len()?;
        let response = (0..n).map(|_| Ok(i64::from_le_bytes(r.take()?))).collect::<Result<Vec<i64>>>()?;
        let (logp_old, values, rewards) = (r.f32s()?, r.f32s()?, r.f32s()?);
        let outcome = f32::from_le_bytes(r.take()?);
        let (advantages, returns) = (vec![], vec![]);
        samples.push(Sample { prompt, response, finished, logp_old, values, rewards, outcome, advantages, returns });
    }
    Ok(samples)
}
