//! ppo-train's memory plan: the models it holds and the batches they run, and the largest
//! rollout forward batch a budget allows.

use super::{Inputs, PpoArgs};
use crate::stage::{self, Budget};
use anyhow::Result;
use rto_model::memory::{MemoryPlan, PlannedModel, Role};
use rto_model::Head;
use std::path::Path;

/// The models of a PPO/RTO run for the memory plan: the actor and (for GAE) the critic trained
/// on micro batches, and the frozen reference (the initial policy), DPO and reward models
/// scoring a forward batch; plus the KV cache of sampling a generation batch.
pub(super) fn planned_models(
    args: &PpoArgs,
    inputs: &Inputs,
    forward_batch: usize,
) -> Result<(Vec<PlannedModel>, MemoryPlan)> {
    let s = &args.settings;
    let tokens = s.limits.max_prompt_len + s.max_new_tokens();
    let (train_rows, scoring_rows) = (s.micro_batch(), forward_batch * s.n_samples_per_prompt);
    let generation_rows = s.generation_batch() * s.n_samples_per_prompt;
    let checkpointing = args.trained.gradient_checkpointing;
    let shards = crate::dist::optimizer::planned_shards(s.zero_stage, stage::plan_world_size(&args.common)?);
    // Every LM forward of ppo-train runs its head on the response columns only.
    let response = s.max_new_tokens() as u64;
    let lm = |name: &str, dir: &Path, role: Role, rows: usize| {
        Ok::<_, anyhow::Error>(
            stage::planned(name, dir, Head::LanguageModel, role, rows, tokens)?.with_head_tokens(response),
        )
    };
    let actor_lora = stage::planned_lora(&args.trained, &args.policy)?;
    // A LoRA actor lends its frozen base to the reference and to a DPO model over that base
    // (see `run`); else the DPO model may stand on the reference's.
    let donor =
        if actor_lora.is_some() { ("actor", args.policy.as_path()) } else { ("reference", args.policy.as_path()) };
    let reference = stage::planned_frozen_lm(
        "reference",
        &args.policy,
        actor_lora.is_some().then_some(donor),
        scoring_rows,
        tokens,
    )?
    .with_head_tokens(response);
    let mut models = vec![
        lm("actor", &args.policy, Role::Trained, train_rows)?
            .with_gradient_checkpointing(checkpointing)
            .with_lora(actor_lora)
            .with_optimizer_shards(shards),
        reference,
    ];
    if let Some(critic_dir) = &inputs.critic {
        let critic = stage::planned("critic", critic_dir, Head::Score, Role::Trained, train_rows, tokens)?;
        models.push(
            critic
                .with_gradient_checkpointing(checkpointing)
                .with_lora(stage::planned_lora(&args.trained, critic_dir)?)
                .with_optimizer_shards(shards),
        );
    }
    if let Some(dpo) = &inputs.dpo {
        models
            .push(stage::planned_frozen_lm("dpo", dpo, Some(donor), scoring_rows, tokens)?.with_head_tokens(response));
    }
    if let Some(rm) = &inputs.reward_model {
        models.push(stage::planned_frozen("reward model", rm, Head::Score, Some(donor), scoring_rows, tokens)?);
    }
    let mut kv_cache = MemoryPlan::default();
    kv_cache.add_kv_cache(&models[0].config, generation_rows as u64, tokens as u64, stage::precision(&args.common));
    Ok((models, kv_cache))
}

/// The largest forward batch (a multiple of the generation batch, at most the rollout) whose
/// plan `budget` holds: what the plan suggests for --local-rollout-forward-batch-size. The plan
/// grows with the batch, so a bisection finds it (a few config.json reads per step).
/// `None` when not even one generation batch fits.
pub(super) fn largest_forward_batch(args: &PpoArgs, inputs: &Inputs, budget: &Budget) -> Result<Option<usize>> {
    let s = &args.settings;
    let (generation, rollout) = (s.generation_batch(), s.rollout_batch_size);
    let batch = |multiple: usize| (multiple * generation).min(rollout);
    let fits = |multiple: usize| -> Result<bool> {
        let (models, kv_cache) = planned_models(args, inputs, batch(multiple))?;
        Ok(budget.holds(&stage::build_plan(&args.common, &models, Some(&kv_cache))))
    };
    let (mut low, mut high) = (0, rollout.div_ceil(generation)); // fits(low) (or low = 0), search up to high
    while low < high {
        let mid = (low + high).div_ceil(2);
        if fits(mid)? {
            low = mid;
        } else {
            high = mid - 1;
        }
    }
    Ok((low > 0).then(|| batch(low)))
}
