//! Advantages and returns for `ppo-train` (DESIGN.md §4, "PPO"): GAE over masked per-token
//! rewards and values, whitening over the whole rollout buffer, and the REINFORCE++ variant
//! (critic-free: whitened discounted returns-to-go, the paper's App. E baseline). The group
//! estimators, which compare several responses to one prompt, are in [`crate::group_advantage`].
//!
//! All recurrences run backwards over the response columns of the right-padded layout; a padded
//! column contributes nothing and its outputs are exactly 0, so nothing leaks across the end
//! of a response. Inputs are detached: advantages and returns are regression targets.

use crate::check;
use crate::masked::{mask_like, masked_mean, masked_var, zero_padding};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// Discount γ and GAE λ. Defaults are the paper's code: γ = 1, λ = 0.95.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GaeSettings {
    pub gamma: f64,
    pub lambda: f64,
}

impl Default for GaeSettings {
    fn default() -> Self {
        Self { gamma: 1.0, lambda: 0.95 }
    }
}

impl GaeSettings {
    /// Both must lie in [0, 1].
    pub fn validate(&self) -> Result<()> {
        check::unit_interval("gamma", self.gamma)?;
        check::unit_interval("lambda", self.lambda)
    }
}

/// Generalised advantage estimation (Schulman et al. 2016):
///   δ_t = r_t + γ·V_{t+1} − V_t   (V after the last real token is 0: the episode ends there)
///   A_t = δ_t + γλ·A_{t+1}
/// Returns `(advantages, returns)`, both [B, R], with returns = advantages + values.
pub fn gae(rewards: &Tensor, values: &Tensor, mask: &Tensor, gamma: f64, lambda: f64) -> Result<(Tensor, Tensor)> {
    GaeSettings { gamma, lambda }.validate()?;
    let shape = check::per_token("rewards", rewards)?;
    check::same_shape("values", values, &shape)?;
    check::same_shape("mask", mask, &shape)?;
    let m = mask_like(mask, rewards);
    let r = zero_padding(&rewards.detach(), &m);
    let v = zero_padding(&values.detach().to_kind(r.kind()), &m);
    let mut next_value = r.select(1, 0).zeros_like();
    let mut running = next_value.zeros_like();
    let mut columns = Vec::with_capacity(shape[1] as usize);
    for t in (0..shape[1]).rev() {
        let v_t = v.select(1, t);
        let delta = r.select(1, t) + &next_value * gamma - &v_t;
        running = (delta + running * (gamma * lambda)) * m.select(1, t);
        next_value = v_t;
        columns.push(running.shallow_clone());
    }
    columns.reverse();
    let advantages = zero_padding(&Tensor::stack(&columns, 1), &m);
    let returns = zero_padding(&(&advantages + &v), &m);
    Ok((advantages, returns))
}

/// Normalises `x` to mean 0 and variance 1 over all unmasked entries of the whole tensor
/// (the rollout buffer, not per row), as DESIGN.md §4 asks for advantages. The variance is the
/// population one (÷N) as OpenRLHF computes it, with 1e-8 added under the square root. With
/// `shift_mean = false` the mean is added back (only the scale changes). Padding stays 0.
pub fn whiten(x: &Tensor, mask: &Tensor, shift_mean: bool) -> Tensor {
    let m = mask_like(mask, x);
    let mean = masked_mean(x, &m);
    let scaled = (x - &mean) * (masked_var(x, &m) + 1e-8).rsqrt();
    let out = if shift_mean { scaled } else { scaled + mean };
    zero_padding(&out, &m)
}

/// Discounted returns-to-go G_t = r_t + γ·G_{t+1}, with G = 0 after the last real token.
pub fn discounted_returns(rewards: &Tensor, mask: &Tensor, gamma: f64) -> Result<Tensor> {
    check::unit_interval("gamma", gamma)?;
    let shape = check::per_token("rewards", rewards)?;
    check::same_shape("mask", mask, &shape)?;
    let m = mask_like(mask, rewards);
    let r = zero_padding(&rewards.detach(), &m);
    let mut running = r.select(1, 0).zeros_like();
    let mut columns = Vec::with_capacity(shape[1] as usize);
    for t in (0..shape[1]).rev() {
        running = (r.select(1, t) + running * gamma) * m.select(1, t);
        columns.push(running.shallow_clone());
    }
    columns.reverse();
    Ok(zero_padding(&Tensor::stack(&columns, 1), &m))
}

/// REINFORCE++ advantages (OpenRLHF's `reinforce++`, the paper's App. E): discounted
/// returns-to-go of the token rewards, whitened over the whole batch (mean 0, variance 1 over
/// the unmasked entries). No critic is involved.
pub fn reinforce_plus_plus_returns(rewards: &Tensor, mask: &Tensor, gamma: f64) -> Result<Tensor> {
    let returns = discounted_returns(rewards, mask, gamma)?;
    Ok(whiten(&returns, mask, true))
}
