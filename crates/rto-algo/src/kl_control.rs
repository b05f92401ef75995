//! The KL-penalty coefficient β2 of the token reward (DESIGN.md §4: fixed 0.01, adaptive
//! controller optional). `ppo-train` reads `coef()` into `RewardWeights::beta2` before
//! composing each rollout's rewards and calls `update` with the rollout's measured KL.

use crate::check;
use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

/// Ziegler et al. (2019) proportional controller: after a rollout of `n_steps` samples with
/// mean KL `kl`, coef ← coef·(1 + clip(kl/target − 1, −0.2, 0.2)·n_steps/horizon).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveKl {
    /// Current coefficient (the initial β2 when configured).
    pub coef: f64,
    /// KL the controller steers towards (nats per sequence, as measured by the caller).
    pub target: f64,
    /// Samples over which a full ±20 % correction is applied.
    pub horizon: f64,
}

impl Default for AdaptiveKl {
    /// β2 = 0.01 from DESIGN.md §4; target 6 and horizon 10000 as in Ziegler et al./TRL.
    fn default() -> Self {
        Self { coef: 0.01, target: 6.0, horizon: 10_000.0 }
    }
}

impl AdaptiveKl {
    pub fn validate(&self) -> Result<()> {
        check::non_negative("coef", self.coef)?;
        check::positive("target", self.target)?;
        check::positive("horizon", self.horizon)
    }

    /// Applies one update and returns the new coefficient. A non-finite KL is an error (it
    /// would poison the coefficient for the rest of the run).
    pub fn update(&mut self, observed_kl: f64, n_steps: u64) -> Result<f64> {
        ensure!(observed_kl.is_finite(), "observed KL is not finite ({observed_kl})");
        let error = (observed_kl / self.target - 1.0).clamp(-0.2, 0.2);
        self.coef *= 1.0 + error * n_steps as f64 / self.horizon;
        Ok(self.coef)
    }
}

/// A fixed or adaptive β2. Serialized as `{type: fixed, coef: 0.01}` or
/// `{type: adaptive, coef: .., target: .., horizon: ..}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum KlController {
    Fixed { coef: f64 },
    Adaptive(AdaptiveKl),
}

impl Default for KlController {
    fn default() -> Self {
        KlController::Fixed { coef: 0.01 }
    }
}

impl KlController {
    pub fn coef(&self) -> f64 {
        match self {
            Self::Fixed { coef } => *coef,
            Self::Adaptive(a) => a.coef,
        }
    }

    pub fn validate(&self) -> Result<()> {
        match self {
            Self::Fixed { coef } => check::non_negative("coef", *coef),
            Self::Adaptive(a) => a.validate(),
        }
    }

    /// Feeds a rollout's KL to the controller (a no-op for the fixed variant); returns the
    /// coefficient to use next.
    pub fn update(&mut self, observed_kl: f64, n_steps: u64) -> Result<f64> {
        match self {
            Self::Fixed { coef } => Ok(*coef),
            Self::Adaptive(a) => a.update(observed_kl, n_steps),
        }
    }
}
