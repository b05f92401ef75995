//! The algorithms of the RTO toolkit as pure functions on `tch` tensors: no I/O, no models.
//!
//! Stages (`dpo-train`, `rm-train`, `token-reward-annotate`, `ppo-train`) compute log-probs,
//! scores and values with `rto-model` and hand the tensors to the functions here. The formulas
//! follow DESIGN.md §4, which is normative; each module cites the part it implements.
//!
//! Tensor conventions (those of `rto_model::batch`): per-sequence tensors are `[B]`, per-token
//! tensors are `[B, R]` over the right-padded response columns, and every per-token function
//! takes the response mask `[B, R]` (1.0 on real tokens, 0.0 on padding). Outputs give padding
//! exactly 0.
//!
//! Modules:
//! - [`preference_loss`]: DPO / cDPO / IPO / SimPO / R-DPO losses and TRL-style metrics, and
//!   the Bradley-Terry reward-model loss.
//! - [`token_reward`]: the one RTO token-reward composition shared by annotation and PPO.
//! - [`advantage`]: GAE, whitening, REINFORCE++ returns.
//! - [`group_advantage`]: critic-free group estimators over K responses per prompt (GRPO,
//!   Dr. GRPO, RLOO, REINFORCE++-baseline) on the dense token reward.
//! - [`ppo_loss`]: clipped policy (with DAPO's asymmetric clip and the loss aggregations) and
//!   value losses, explained variance, KL controllers.
//! - [`schedule`]: cosine learning-rate schedule with warmup, global grad-norm clipping.
//! - [`masked`]: masked reductions the other modules share.

pub mod advantage;
mod check;
pub mod group_advantage;
pub mod kl_control;
pub mod masked;
pub mod ppo_loss;
pub mod preference_loss;
pub mod schedule;
pub mod token_reward;

pub use advantage::{discounted_returns, gae, reinforce_plus_plus_returns, whiten, GaeSettings};
pub use group_advantage::{centered_returns, group_baseline, group_scale, GroupBaseline, GroupEstimator};
pub use kl_control::{AdaptiveKl, KlController};
pub use masked::{masked_mean, masked_mean_per_row, masked_sum, masked_var};
pub use ppo_loss::{
    explained_variance, policy_loss, value_loss, ClipRange, LossAggregation, PolicyLossOutputs, ValueLossOutputs,
};
pub use preference_loss::{
    bradley_terry_loss, BradleyTerryOutputs, PreferenceInputs, PreferenceLoss, PreferenceOutputs,
};
pub use schedule::{clip_coefficient, clip_grad_norm, cosine_with_warmup, global_norm, CosineSchedule};
pub use token_reward::{compose, RewardMode, RewardWeights, TokenRewardInputs, TokenRewards};
