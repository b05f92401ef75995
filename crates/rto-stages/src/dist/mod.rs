//! Data parallelism over the launch's process group (`rto_dist`): the stage frame in which
//! rank 0 owns the store ([`frame`]), how work is shared among ranks ([`share`]), how metrics
//! and gradients are summed over them ([`reduce_metrics`], [`grads`]), the optimizer of a
//! data-parallel run ([`optimizer`], ZeRO-1 in [`zero`]) and the other ranks' rows of a table
//! rank 0 writes ([`spill`]).
//!
//! A single process (no launch variables) has a group of one that never touches c10d: every
//! helper here then returns its input unchanged, so single-process runs keep their bytes.

mod frame;
pub mod grads;
pub mod optimizer;
pub mod spill;
pub mod zero;

pub use frame::{run_stage, Ranked, Work};

use crate::trainer::Metrics;
use anyhow::{Context, Result};
use rto_dist::{ProcessGroup, ReduceOp};
use std::ops::Range;
use std::time::Duration;

/// Bounds the rendezvous and every collective of a multi-process run, in seconds: a rank that
/// crashed fails the others at once (its sockets close), one that hangs within this. It must
/// also cover rank 0's longest solo step (hashing inputs, waiting on another process's stage
/// lock, writing the output), during which the other ranks wait. PyTorch's default.
pub const TIMEOUT_VAR: &str = "RTO_DIST_TIMEOUT_S";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// The process group of this launch (see `rto_dist::ProcessGroup::from_env`), on the stage's
/// `--device`. Built once per binary run, by the stage's `cli`.
pub fn group(device: &str) -> Result<ProcessGroup> {
    let device = rto_model::parse_device(device)?;
    ProcessGroup::from_env(device, timeout()?).context("joining the process group of this launch")
}

fn timeout() -> Result<Duration> {
    match std::env::var(TIMEOUT_VAR) {
        Err(_) => Ok(DEFAULT_TIMEOUT),
        Ok(text) => {
            let secs: f64 =
                text.trim().parse().ok().filter(|s: &f64| s.is_finite() && *s > 0.0).with_context(|| {
                    format!("{TIMEOUT_VAR}={text:?} is not a number of seconds > 0: fix or unset it (default 1800)")
                })?;
            Ok(Duration::from_secs_f64(secs))
        }
    }
}

/// The contiguous block of `n` work items (micro batches, chunks of rows) that `rank` of
/// `world` takes: the first `n % world` ranks take one more, so rank 0 has work whenever there
/// is any, and the blocks in rank order are the items in their original order.
pub fn share(n: usize, rank: usize, world: usize) -> Range<usize> {
    let (base, extra) = (n / world, n % world);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

/// [`share`] for this rank of `group`.
pub fn my_share(group: &ProcessGroup, n: usize) -> Range<usize> {
    share(n, group.rank(), group.world_size())
}

/// Sums every rank's `local` metrics, key by key. Rank 0's keys are the set (it always has
/// work, see [`share`]); a rank without work for them contributes zeros.
pub fn reduce_metrics(group: &ProcessGroup, local: Metrics) -> Result<Metrics> {
    if !group.is_distributed() {
        return Ok(local);
    }
    let keys: Vec<&String> = local.keys().collect();
    let keys = group.broadcast_bytes(serde_json::to_vec(&keys)?, 0).context("sharing the metric names")?;
    let keys: Vec<String> = serde_json::from_slice(&keys).context("reading rank 0's metric names")?;
    let values: Vec<f64> = keys.iter().map(|k| local.get(k).copied().unwrap_or(0.0)).collect();
    let sums = group.all_reduce_f64s(&values, ReduceOp::Sum).context("summing the metrics over ranks")?;
    Ok(keys.into_iter().zip(sums).collect())
}

/// Every rank's `mine` (its [`share`] of the items, as f32s) concatenated in rank order, i.e.
/// in the items' original order, on every rank.
pub fn gather_f32s(group: &ProcessGroup, mine: &[f32]) -> Result<Vec<f32>> {
    if !group.is_distributed() {
        return Ok(mine.to_vec());
    }
    let bytes: Vec<u8> = mine.iter().flat_map(|v| v.to_le_bytes()).collect();
    let parts = group.all_gather_bytes(&bytes).context("gathering the ranks' results")?;
    Ok(parts.concat().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}
