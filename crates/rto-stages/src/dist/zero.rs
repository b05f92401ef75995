//! ZeRO-1 (`--zero-stage 1`): AdamW's state sharded over the ranks, as DeepSpeed's stage 1.
//!
//! The trainable parameters, in the optimizer's name order, are laid end to end as one flat
//! vector of N elements, padded with zeros to a multiple of the world size W; rank r owns the
//! contiguous shard [r·S, (r+1)·S) with S = ⌈N/W⌉. It holds the fp32 moments (and, under
//! `--bf16`, the fp32 masters) of its shard only: 8N/W (12N/W) bytes instead of 8N (12N).
//!
//! A step: the gradients are reduce-scattered (summed over ranks, each rank receiving its
//! shard) in rounds of about [`grads::BUCKET_BYTES`]; the global norm is the sum over ranks of
//! each shard's squares; each rank runs the same per-element AdamW update as [`AdamW`]
//! ([`Step`]) on its shard's segment of every parameter; the updated fp32 shard is
//! all-gathered, again in rounds, into every rank's parameters. Only the grad-norm's summation
//! order differs from plain data parallelism (one f64 sum per shard, not per tensor), so the
//! weights agree with `--zero-stage 0` up to fp32 rounding of the clip factor.
//!
//! Checkpoints: each rank writes its shard as `<name>.optim.rank<r>.safetensors` into the
//! checkpoint being assembled (see `Checkpointer::save_sharded`), so no rank ever holds the
//! whole state; a resume needs the same world size (which is in the stage key anyway).
//!
//! [`AdamW`]: crate::optim::AdamW

use super::grads;
use crate::optim::{self, decays, AdamWSettings, Step};
use anyhow::{bail, Context, Result};
use rto_dist::{ProcessGroup, ReduceOp};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use tch::{nn::VarStore, Kind, Tensor};

/// The part of parameter `param` that falls in this rank's shard: its flat elements `within`,
/// at `at` in the shard.
struct Segment {
    param: usize,
    within: Range<i64>,
    at: i64,
}

/// AdamW over a sharded state; see the module docs.
pub struct ZeroAdamW<'g> {
    group: &'g ProcessGroup,
    settings: AdamWSettings,
    params: Vec<(String, Tensor)>,
    /// Where each parameter starts in the flat vector.
    offsets: Vec<i64>,
    /// Elements in all parameters (N) and per shard (S).
    total: i64,
    shard: i64,
    segments: Vec<Segment>,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    /// fp32 masters of the shard, when any parameter is held in a lower precision.
    masters: Option<Tensor>,
    steps: i64,
}

impl<'g> ZeroAdamW<'g> {
    pub fn new(vs: &VarStore, settings: AdamWSettings, group: &'g ProcessGroup) -> Result<Self> {
        settings.validate()?;
        let params = optim::trainable(vs);
        let mut offsets = Vec::with_capacity(params.len());
        let mut total = 0;
        for (_, p) in &params {
            offsets.push(total);
            total += p.numel() as i64;
        }
        let world = group.world_size() as i64;
        let shard = (total + world - 1) / world;
        let mine = group.rank() as i64 * shard..(group.rank() as i64 + 1) * shard;
        let segments = segments_in(&params, &offsets, mine.clone())
            .map(|(param, within, flat)| Segment { param, within, at: flat.start - mine.start })
            .collect();
        let zeros = || Tensor::zeros([shard], (Kind::Float, group.device()));
        let mut zero = Self {
            group,
            settings,
            offsets,
            total,
            shard,
            segments,
            exp_avg: zeros(),
            exp_avg_sq: zeros(),
            masters: None,
            params,
            steps: 0,
        };
        if zero.params.iter().any(|(_, p)| p.kind() != Kind::Float) {
            let masters = zero.flat(mine, |i| Some(zero.params[i].1.detach()));
            zero.masters = Some(masters);
        }
        Ok(zero)
    }

    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            p.zero_grad();
        }
    }

    pub fn steps(&self) -> i64 {
        self.steps
    }

    pub fn rank(&self) -> usize {
        self.group.rank()
    }

    /// Reduce-scatters the gradients, clips by the global norm, updates this rank's shard and
    /// all-gathers the parameters. Returns the norm before clipping; a non-finite one is an
    /// error and leaves the weights (and the state) untouched.
    pub fn clip_and_step(&mut self, lr: f64) -> Result<f64> {
        let grads: Vec<Tensor> = self.params.iter().map(|(_, p)| p.grad()).collect();
        let defined = grads::defined_anywhere(self.group, &grads)?;
        let grad = self.reduce_scatter(&grads)?;
        let squares = grad.to_kind(Kind::Double).square().sum(Kind::Double).double_value(&[]);
        let squares = self.group.all_reduce_f64s(&[squares], ReduceOp::Sum).context("summing the grad norm")?;
        let norm = squares[0].sqrt();
        let clip = optim::clip_factor(norm, &self.settings)?;
        self.steps += 1;
        let (correction1, correction2) = self.settings.corrections(self.steps);
        let values = match &self.masters {
            Some(masters) => masters.shallow_clone(),
            None => self.flat(self.mine(), |i| Some(self.params[i].1.detach())),
        };
        tch::no_grad(|| {
            for seg in self.segments.iter().filter(|s| defined[s.param]) {
                let len = seg.within.end - seg.within.start;
                let step = Step {
                    settings: &self.settings,
                    lr,
                    correction1,
                    correction2,
                    decay: decays(&self.params[seg.param].0),
                };
                let g = optim::clipped(&grad.narrow(0, seg.at, len), clip);
                let (mut m, mut v) = (self.exp_avg.narrow(0, seg.at, len), self.exp_avg_sq.narrow(0, seg.at, len));
                step.apply(&values.narrow(0, seg.at, len), &mut m, &mut v, &g);
            }
        });
        self.all_gather(&values)?;
        Ok(norm)
    }

    fn mine(&self) -> Range<i64> {
        let start = self.group.rank() as i64 * self.shard;
        start..start + self.shard
    }

    /// The elements `range` of the flat vector made of `pick(parameter index)` (in fp32; zeros
    /// where `pick` gives nothing and past the last parameter).
    fn flat(&self, range: Range<i64>, pick: impl Fn(usize) -> Option<Tensor>) -> Tensor {
        let device = self.group.device();
        let mut parts = Vec::new();
        let mut at = range.start;
        for (param, within, flat) in segments_in(&self.params, &self.offsets, range.clone()) {
            let len = within.end - within.start;
            let part = match pick(param) {
                Some(t) => t.to_kind(Kind::Float).reshape([-1]).narrow(0, within.start, len),
                None => Tensor::zeros([len], (Kind::Float, device)),
            };
            debug_assert_eq!(flat.start, at);
            parts.push(part);
            at = flat.end;
        }
        if at < range.end {
            parts.push(Tensor::zeros([range.end - at], (Kind::Float, device)));
        }
        Tensor::cat(&parts, 0)
    }

    /// Rounds of at most a bucket: shard offsets [a, b) of every rank at once.
    fn rounds(&self) -> Vec<Range<i64>> {
        let per_rank = (grads::BUCKET_BYTES / 4 / self.group.world_size() as i64).max(1);
        (0..self.shard).step_by(per_rank as usize).map(|a| a..(a + per_rank).min(self.shard)).collect()
    }

    /// This rank's shard of the gradients summed over ranks (fp32, [S]).
    fn reduce_scatter(&self, grads: &[Tensor]) -> Result<Tensor> {
        let out = Tensor::zeros([self.shard], (Kind::Float, self.group.device()));
        let grad_of = |i: usize| grads[i].defined().then(|| grads[i].detach());
        for round in self.rounds() {
            let world = self.group.world_size() as i64;
            let parts: Vec<Tensor> = (0..world)
                .map(|q| self.flat(q * self.shard + round.start..q * self.shard + round.end, grad_of))
                .collect();
            let input = Tensor::cat(&parts, 0);
            let mut slot = out.narrow(0, round.start, round.end - round.start);
            self.group
                .reduce_scatter(&mut slot, &input, ReduceOp::Sum)
                .with_context(|| format!("ZeRO-1: reduce-scattering gradients {round:?} of each shard"))?;
        }
        Ok(out)
    }

    /// Every rank's updated shard `values` (fp32) into every rank's parameters.
    fn all_gather(&self, values: &Tensor) -> Result<()> {
        let world = self.group.world_size() as i64;
        for round in self.rounds() {
            let len = round.end - round.start;
            let mut out = Tensor::zeros([world * len], (Kind::Float, self.group.device()));
            self.group
                .all_gather(&mut out, &values.narrow(0, round.start, len))
                .with_context(|| format!("ZeRO-1: all-gathering parameters {round:?} of each shard"))?;
            for q in 0..world {
                let range = q * self.shard + round.start..q * self.shard + round.end;
                for (param, within, flat) in segments_in(&self.params, &self.offsets, range.clone()) {
                    let n = within.end - within.start;
                    let source = out.narrow(0, q * len + flat.start - range.start, n);
                    tch::no_grad(|| self.params[param].1.view([-1]).narrow(0, within.start, n).copy_(&source));
                }
            }
        }
        Ok(())
    }

    /// Writes this rank's shard of the state to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut named = vec![
            ("exp_avg".to_string(), self.exp_avg.shallow_clone()),
            ("exp_avg_sq".to_string(), self.exp_avg_sq.shallow_clone()),
            ("steps".to_string(), Tensor::from_slice(&[self.steps])),
            ("layout".to_string(), Tensor::from_slice(&self.layout())),
        ];
        if let Some(masters) = &self.masters {
            named.push(("master".into(), masters.shallow_clone()));
        }
        Tensor::write_safetensors(&named, path).with_context(|| format!("writing {}", path.display()))
    }

    /// [rank, world size, flat length]: what a shard file must match to be this rank's.
    fn layout(&self) -> [i64; 3] {
        [self.group.rank() as i64, self.group.world_size() as i64, self.total]
    }

    /// Restores this rank's shard from `path` (and the parameters' values from the masters).
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let stored: BTreeMap<String, Tensor> = Tensor::read_safetensors(path)
            .with_context(|| format!("reading the ZeRO-1 optimizer shard {}", path.display()))?
            .into_iter()
            .collect();
        let get = |key: &str| stored.get(key).with_context(|| format!("{}: missing `{key}`", path.display()));
        let layout = Vec::<i64>::try_from(get("layout")?)?;
        if layout != self.layout() {
            bail!(
                "{}: a shard of rank {:?} for another layout ([rank, world size, parameters] {layout:?}, this run {:?}): \
                 resume with the same number of ranks and model, or remove the scratch folder to start over",
                path.display(),
                layout.first(),
                self.layout()
            );
        }
        tch::no_grad(|| -> Result<()> {
            self.exp_avg.copy_(get("exp_avg")?);
            self.exp_avg_sq.copy_(get("exp_avg_sq")?);
            if let Some(masters) = &mut self.masters {
                masters.copy_(get("master")?);
            }
            Ok(())
        })?;
        self.steps = get("steps")?.int64_value(&[0]);
        // The masters are the fp32 truth; the bf16 parameters were saved rounded from them.
        if let Some(masters) = &self.masters {
            self.all_gather(&masters.shallow_clone())?;
        }
        Ok(())
    }
}

/// The file of `rank`'s shard of the optimizer `name` inside a checkpoint folder.
pub fn shard_file(name: &str, rank: usize) -> String {
    format!("{name}.optim.rank{rank}.safetensors")
}

/// For each parameter overlapping the flat elements `range`: (its index, the overlap within
/// it, the overlap in flat positions), in order.
fn segments_in<'a>(
    params: &'a [(String, Tensor)],
    offsets: &'a [i64],
    range: Range<i64>,
) -> impl Iterator<Item = (usize, Range<i64>, Range<i64>)> + 'a {
    params.iter().enumerate().filter_map(move |(i, (_, p))| {
        let (start, end) = (offsets[i], offsets[i] + p.numel() as i64);
        let (lo, hi) = (start.max(range.start), end.min(range.end));
        (lo < hi).then(|| (i, lo - start..hi - start, lo..hi))
    })
}
