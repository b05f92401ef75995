//! The AdamW of a data-parallel training run, shared by the supervised trainer and ppo-train:
//! the whole state on every rank (gradients summed over ranks in buckets, [`grads`]), or this
//! rank's ZeRO-1 shard ([`zero`]); plus `--zero-stage`'s meaning (when it shards, what the
//! memory plan and the key say) and checkpoints of several models with their optimizers.

use super::grads;
use super::zero::{self, ZeroAdamW};
use crate::checkpoint::{Checkpointer, Restored};
use crate::optim::{AdamW, AdamWSettings};
use anyhow::{ensure, Result};
use rto_data::store::StageSpec;
use rto_dist::ProcessGroup;
use serde_json::Value;
use tch::nn::VarStore;

/// Whether `--zero-stage` shards the optimizer state on `group`: stage 1 with several ranks.
pub fn shards(zero_stage: u8, group: &ProcessGroup) -> bool {
    zero_stage == 1 && group.world_size() > 1
}

/// Ranks the optimizer state will be sharded over in a launch of `world` ranks, for the memory
/// plan (made before the group is joined; `stage::plan_world_size`): `world` under
/// `--zero-stage 1`, else 1.
pub fn planned_shards(zero_stage: u8, world: u64) -> u64 {
    if zero_stage == 0 {
        1
    } else {
        world
    }
}

/// `spec` keyed by `--zero-stage 1` when it shards (it changes the grad norm's summation
/// order, so the last bits); otherwise unchanged, as stage 0 and one process are the same run.
pub fn keyed(mut spec: StageSpec, zero_stage: u8, group: &ProcessGroup) -> StageSpec {
    if shards(zero_stage, group) {
        spec.settings["zero_stage"] = zero_stage.into();
    }
    spec
}

/// A trained model's AdamW: the whole state on every rank, or this rank's ZeRO-1 shard.
pub enum Optimizer<'g> {
    Whole(AdamW),
    Sharded(ZeroAdamW<'g>),
}

impl<'g> Optimizer<'g> {
    /// Over the trainable variables of `vs`, sharded over `group` when `sharded`.
    pub fn new(vs: &VarStore, adam: &AdamWSettings, sharded: bool, group: &'g ProcessGroup) -> Result<Self> {
        Ok(if sharded {
            Optimizer::Sharded(ZeroAdamW::new(vs, adam.clone(), group)?)
        } else {
            Optimizer::Whole(AdamW::new(vs, adam.clone())?)
        })
    }

    pub fn zero_grad(&mut self) {
        match self {
            Optimizer::Whole(adam) => adam.zero_grad(),
            Optimizer::Sharded(zero) => zero.zero_grad(),
        }
    }

    /// Clips and steps on this process's gradients, or, under a process group, on their sum
    /// over ranks. Returns the norm before clipping.
    pub fn step(&mut self, group: &ProcessGroup, lr: f64) -> Result<f64> {
        match self {
            Optimizer::Whole(adam) if !group.is_distributed() => adam.clip_and_step(lr),
            Optimizer::Whole(adam) => {
                let grads = grads::all_reduce(group, &adam.params())?;
                adam.clip_and_step_with(lr, &grads)
            }
            Optimizer::Sharded(zero) => zero.clip_and_step(lr),
        }
    }
}

/// Restores each (name, variables, optimizer) of `models` and this rank's optimizer state from
/// the latest checkpoint, if any.
pub fn restore(
    checkpointer: &Checkpointer,
    models: &mut [(&str, &mut VarStore, &mut Optimizer)],
) -> Result<Option<Restored>> {
    let (mut vars, mut whole, mut sharded) = (Vec::new(), Vec::new(), Vec::new());
    for (name, vs, optimizer) in models.iter_mut() {
        vars.push((*name, &mut **vs));
        match &mut **optimizer {
            Optimizer::Whole(adam) => whole.push((*name, adam)),
            Optimizer::Sharded(zero) => sharded.push((*name, zero)),
        }
    }
    let restored = checkpointer.restore(&mut vars, &mut whole)?;
    if let Some(restored) = &restored {
        for (name, zero) in sharded {
            zero.load(&restored.dir.join(zero::shard_file(name, zero.rank())))?;
        }
    }
    Ok(restored)
}

/// A checkpoint of `models` at `step` with `state`: rank 0 alone writes whole optimizer
/// states; sharded ones are written by every rank (see `Checkpointer::save_sharded`). Every
/// rank calls it.
pub fn save(
    checkpointer: &Checkpointer,
    group: &ProcessGroup,
    step: usize,
    models: &[(&str, &VarStore, &Optimizer)],
    state: Value,
) -> Result<()> {
    let vars: Vec<(&str, &VarStore)> = models.iter().map(|(name, vs, _)| (*name, *vs)).collect();
    let (mut whole, mut sharded) = (Vec::new(), Vec::new());
    for (name, _, optimizer) in models {
        match optimizer {
            Optimizer::Whole(adam) => whole.push((*name, adam)),
            Optimizer::Sharded(zero) => sharded.push((*name, zero)),
        }
    }
    if sharded.is_empty() {
        return if group.is_main() { checkpointer.save(step, &vars, &whole, state) } else { Ok(()) };
    }
    ensure!(whole.is_empty(), "a checkpoint mixing whole and ZeRO-1 sharded optimizers: one --zero-stage for all");
    checkpointer.save_sharded(group, step, &vars, state, |tmp| {
        sharded.iter().try_for_each(|(name, zero)| zero.save(&tmp.join(zero::shard_file(name, zero.rank()))))
    })
}
