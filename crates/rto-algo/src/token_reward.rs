//! The RTO token reward (DESIGN.md §4, "RTO token reward"): the one implementation that
//! `token-reward-annotate` writes to Parquet and `ppo-train` optimises, so the table a user
//! inspects is exactly the reward PPO saw.
//!
//! For response token h of H (padding columns get exactly 0 in every output):
//!   dpo_reward(h) = clip(β1·(lp_dpo(h) − lp_ref(h)), −c, c)
//!   kl_penalty(h) = −β2·(lp_policy(h) − lp_ref(h))
//!   reward(h)     = dpo_reward(h) + kl_penalty(h) + [h = H]·β3·clamp(r_RM, −rm_clamp, rm_clamp)

use crate::check;
use crate::masked::{last_token_mask, mask_like, zero_padding};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use tch::Tensor;

/// Which terms make up the reward (the paper's method and its baselines/ablations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RewardMode {
    /// All terms: dense DPO reward + KL penalty + sentence reward at the last token.
    #[default]
    Rto,
    /// The sentence-level PPO baseline: β1 = 0.
    Ppo,
    /// The DPO token reward without the reward model: β3 = 0.
    DpoOnly,
    /// DDPO ablation: the sequence total of the (clipped) DPO reward placed at the last token
    /// instead of per token; KL and sentence terms as in RTO.
    Ddpo,
    /// RS-PPO ablation: RTO with the sequence total of the DPO reward subtracted at the last
    /// token, so the DPO term only shapes credit assignment (its per-sequence sum is 0).
    RsPpo,
}

impl RewardMode {
    pub const ALL: [RewardMode; 5] = [Self::Rto, Self::Ppo, Self::DpoOnly, Self::Ddpo, Self::RsPpo];

    /// The kebab-case name used in configs, CLI flags and file metadata.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rto => "rto",
            Self::Ppo => "ppo",
            Self::DpoOnly => "dpo-only",
            Self::Ddpo => "ddpo",
            Self::RsPpo => "rs-ppo",
        }
    }

    /// The weights this mode actually applies: `ppo` zeroes β1, `dpo-only` zeroes β3. Record
    /// these (not the configured ones) in artifact metadata.
    pub fn effective_weights(self, weights: &RewardWeights) -> RewardWeights {
        match self {
            Self::Ppo => RewardWeights { beta1: 0.0, ..*weights },
            Self::DpoOnly => RewardWeights { beta3: 0.0, ..*weights },
            Self::Rto | Self::Ddpo | Self::RsPpo => *weights,
        }
    }

    /// [`RewardWeights::validate`], plus what only makes sense per mode: every mode but `ppo`
    /// exists for the DPO token reward, so β1 = 0 there (whatever the clip, even 0) is a
    /// setting mistake that would silently train the PPO baseline under another name.
    pub fn check_weights(self, weights: &RewardWeights) -> Result<()> {
        weights.validate()?;
        if self != Self::Ppo && weights.beta1 == 0.0 {
            bail!(
                "beta1 = 0 (clip {}) turns off the DPO token reward that mode {self} is for: use mode ppo for a reward without it, or set beta1 > 0",
                weights.clip
            );
        }
        Ok(())
    }
}

impl fmt::Display for RewardMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RewardMode {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match Self::ALL.into_iter().find(|m| m.name() == s) {
            Some(mode) => Ok(mode),
            None => {
                let names: Vec<_> = Self::ALL.iter().map(|m| m.name()).collect();
                bail!("unknown reward mode {s:?}: expected one of {}", names.join(", "))
            }
        }
    }
}

/// The coefficients of DESIGN.md §4 with its defaults. `clip` and `rm_clamp` may be +inf
/// (no clipping). `beta2` is the KL coefficient at this step (an adaptive controller updates it).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RewardWeights {
    /// β1, scale of the DPO log-ratio (0.05).
    pub beta1: f64,
    /// c, the DPO reward is clipped to [−c, c] per token (0.05).
    pub clip: f64,
    /// β2, KL-penalty coefficient against the reference (SFT) model (0.01).
    pub beta2: f64,
    /// β3, weight of the sentence (reward-model) reward (1.0).
    pub beta3: f64,
    /// The raw reward-model score is clamped to [−rm_clamp, rm_clamp] (10.0).
    pub rm_clamp: f64,
}

impl Default for RewardWeights {
    fn default() -> Self {
        Self { beta1: 0.05, clip: 0.05, beta2: 0.01, beta3: 1.0, rm_clamp: 10.0 }
    }
}

impl RewardWeights {
    /// Rejects negative coefficients and a clip ≤ 0 when the DPO term is on, naming the field.
    pub fn validate(&self) -> Result<()> {
        check::non_negative("beta1", self.beta1)?;
        check::non_negative("beta2", self.beta2)?;
        check::non_negative("beta3", self.beta3)?;
        if self.beta1 > 0.0 {
            check::positive_or_inf("clip", self.clip)?;
        }
        check::positive_or_inf("rm_clamp", self.rm_clamp)
    }
}

/// Per-token log-probs [B, R] of the response under each model (zero or anything on padding),
/// the raw reward-model score `[B]`, and the response mask [B, R]. A missing source contributes
/// 0 to its term (no DPO model: no DPO reward; no policy yet: no KL penalty).
#[derive(Debug)]
pub struct TokenRewardInputs<'a> {
    pub logp_ref: &'a Tensor,
    pub logp_dpo: Option<&'a Tensor>,
    pub logp_policy: Option<&'a Tensor>,
    pub sentence_reward: Option<&'a Tensor>,
    pub mask: &'a Tensor,
}

/// Every term per token [B, R] (padding exactly 0), and per-sequence totals `[B]`: the columns
/// of the token-reward table and of `samples.parquet` (DESIGN.md §3).
#[derive(Debug)]
pub struct TokenRewards {
    pub dpo_reward: Tensor,
    pub kl_penalty: Tensor,
    /// β3·clamp(r) on the last real token, 0 elsewhere.
    pub sentence_reward: Tensor,
    pub reward: Tensor,
    /// Σ_h dpo_reward(h) as emitted (for `rs-ppo` this is 0 up to rounding).
    pub dpo_return: Tensor,
    /// Σ_h reward(h): the `return` column.
    pub total_return: Tensor,
}

/// Composes the token rewards of `mode` (DESIGN.md §4). Computed in `logp_ref`'s kind, no grad.
pub fn compose(mode: RewardMode, weights: &RewardWeights, inputs: &TokenRewardInputs) -> Result<TokenRewards> {
    weights.validate()?;
    inputs.check()?;
    let w = mode.effective_weights(weights);
    let mask = mask_like(inputs.mask, inputs.logp_ref);
    let last = last_token_mask(&mask);
    let per_token_dpo = dpo_term(&w, inputs, &mask);
    let dpo_total = per_token_dpo.sum_dim_intlist([1].as_slice(), true, mask.kind());
    let dpo_reward = match mode {
        RewardMode::Ddpo => &last * &dpo_total,
        RewardMode::RsPpo => &per_token_dpo - &last * &dpo_total,
        RewardMode::Rto | RewardMode::Ppo | RewardMode::DpoOnly => per_token_dpo,
    };
    let kl_penalty = kl_term(&w, inputs, &mask);
    let sentence_reward = sentence_term(&w, inputs, &last);
    let reward = zero_padding(&(&dpo_reward + &kl_penalty + &sentence_reward), &mask);
    let dpo_reward = zero_padding(&dpo_reward, &mask);
    let row_sum = |t: &Tensor| t.sum_dim_intlist([1].as_slice(), false, t.kind());
    Ok(TokenRewards {
        dpo_return: row_sum(&dpo_reward),
        total_return: row_sum(&reward),
        dpo_reward,
        kl_penalty,
        sentence_reward,
        reward,
    })
}

/// clip(β1·(lp_dpo − lp_ref), −c, c), zero without a DPO model or with β1 = 0.
fn dpo_term(w: &RewardWeights, inputs: &TokenRewardInputs, mask: &Tensor) -> Tensor {
    match inputs.logp_dpo {
        Some(lp_dpo) if w.beta1 > 0.0 => {
            let scaled = (lp_dpo.detach() - inputs.logp_ref.detach()) * w.beta1;
            zero_padding(&scaled.clamp(-w.clip, w.clip), mask)
        }
        _ => mask.zeros_like(),
    }
}

/// −β2·(lp_policy − lp_ref), zero without policy log-probs or with β2 = 0.
fn kl_term(w: &RewardWeights, inputs: &TokenRewardInputs, mask: &Tensor) -> Tensor {
    match inputs.logp_policy {
        Some(lp_policy) if w.beta2 > 0.0 => {
            zero_padding(&((lp_policy.detach() - inputs.logp_ref.detach()) * -w.beta2), mask)
        }
        _ => mask.zeros_like(),
    }
}

/// β3·clamp(r, −rm_clamp, rm_clamp) on the last real token of each row.
fn sentence_term(w: &RewardWeights, inputs: &TokenRewardInputs, last: &Tensor) -> Tensor {
    match inputs.sentence_reward {
        Some(score) if w.beta3 > 0.0 => {
            let clamped = score.detach().to_kind(last.kind()).clamp(-w.rm_clamp, w.rm_clamp) * w.beta3;
            // masked by `last` itself: a NaN score must not spread to the other columns
            zero_padding(&(last * clamped.unsqueeze(1)), last)
        }
        _ => last.zeros_like(),
    }
}

impl TokenRewardInputs<'_> {
    fn check(&self) -> Result<()> {
        let shape = check::per_token("logp_ref", self.logp_ref)?;
        check::same_shape("mask", self.mask, &shape)?;
        if let Some(t) = self.logp_dpo {
            check::same_shape("logp_dpo", t, &shape)?;
        }
        if let Some(t) = self.logp_policy {
            check::same_shape("logp_policy", t, &shape)?;
        }
        if let Some(t) = self.sentence_reward {
            check::same_shape("sentence_reward", t, &shape[..1])?;
        }
        Ok(())
    }
}
