//! PPO losses and diagnostics for `ppo-train` (DESIGN.md §4, "PPO").
//!
//! The value loss averages per sequence over its tokens and then over the sequences of the
//! batch (as OpenRLHF's `ValueLoss` does, so a long response does not outweigh a short one).
//! The policy loss does the same by default (DESIGN.md §4) and takes the other reductions of
//! [`LossAggregation`] and DAPO's asymmetric clip ([`ClipRange`]). Diagnostics (clip fractions,
//! approximate KL) are token-level means and carry no gradient.

use crate::check;
use crate::masked::{mask_like, mean_over_nonempty_rows, zero_padding};
use anyhow::Result;
use tch::{Kind, Tensor};

pub use crate::kl_control::{AdaptiveKl, KlController};
pub use crate::masked::{masked_mean, masked_mean_per_row, masked_sum, masked_var};

/// The ratio range of the clipped surrogate: ρ is clipped to [1 − low, 1 + high].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClipRange {
    pub low: f64,
    /// DAPO's "clip-higher" (Yu et al. 2025, §3.1) raises this one (ε_low 0.2, ε_high 0.28) so
    /// that unlikely tokens with a positive advantage can grow and entropy does not collapse.
    pub high: f64,
}

impl ClipRange {
    /// PPO's [1 − ε, 1 + ε].
    pub fn symmetric(eps: f64) -> Self {
        Self { low: eps, high: eps }
    }

    /// Both bounds finite and > 0, named by their flags.
    pub fn validate(&self) -> Result<()> {
        check::positive("eps_clip", self.low)?;
        check::positive("clip_high", self.high)
    }
}

/// How a batch's per-token policy loss l_{i,t} becomes one number (B responses, H_i tokens).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LossAggregation {
    /// (1/B)·Σ_i (1/H_i)·Σ_t l_{i,t}: per sequence, then over the batch (DESIGN.md §4; the
    /// paper's code, verl's `seq-mean-token-mean`).
    SeqMeanTokenMean,
    /// Σ_{i,t} l_{i,t} / Σ_i H_i: every token weighs the same, so long responses are not
    /// under-weighted (DAPO, Yu et al. 2025, §3.3 "token-level policy gradient loss").
    TokenMean,
    /// Σ_{i,t} l_{i,t} / (B·C) with a constant C (Dr. GRPO, Liu et al. 2025, §3.2: the 1/H_i
    /// length normalization biases towards long wrong answers; C is the generation budget).
    SeqMeanTokenSumNorm { constant: f64 },
}

impl LossAggregation {
    /// The aggregated loss of `per_token` [B, R] over the real tokens of `mask`.
    pub fn reduce(&self, per_token: &Tensor, mask: &Tensor) -> Tensor {
        let m = mask_like(mask, per_token);
        match self {
            Self::SeqMeanTokenMean => mean_over_nonempty_rows(&masked_mean_per_row(per_token, &m), &m),
            Self::TokenMean => masked_mean(per_token, &m),
            Self::SeqMeanTokenSumNorm { constant } => {
                masked_sum(per_token, &m) / (per_token.size()[0] as f64 * constant).max(f64::MIN_POSITIVE)
            }
        }
    }

    /// The weight of a micro batch's [`Self::reduce`] in its train batch's, so that the
    /// weighted micro-batch losses add up to the train batch's loss: its share of the rows
    /// (both per-sequence forms) or of the tokens (token mean).
    pub fn micro_weight(&self, micro: (usize, usize), batch: (usize, usize)) -> f64 {
        let ((micro_rows, micro_tokens), (batch_rows, batch_tokens)) = (micro, batch);
        match self {
            Self::TokenMean => micro_tokens as f64 / batch_tokens.max(1) as f64,
            Self::SeqMeanTokenMean | Self::SeqMeanTokenSumNorm { .. } => micro_rows as f64 / batch_rows.max(1) as f64,
        }
    }

    /// The constant must be finite and > 0.
    pub fn validate(&self) -> Result<()> {
        match self {
            Self::SeqMeanTokenSumNorm { constant } => check::positive("loss constant", *constant),
            Self::SeqMeanTokenMean | Self::TokenMean => Ok(()),
        }
    }
}

#[derive(Debug)]
pub struct PolicyLossOutputs {
    /// Scalar −min(ρA, clip(ρ, 1 − low, 1 + high)·A), reduced by the [`LossAggregation`].
    pub loss: Tensor,
    /// Fraction of tokens where the clipped term is the smaller one (its gradient is cut),
    /// i.e. clip(ρ)·A < ρ·A strictly, as TRL's `pg_clipfrac`.
    pub clipfrac: f64,
    /// k3 estimator of KL(π_old ‖ π_new): token mean of (ρ − 1) − log ρ, ≥ 0 and unbiased.
    pub approx_kl: f64,
}

/// Clipped surrogate policy loss (Schulman et al. 2017) with ρ = exp(logp_new − logp_old),
/// l_{i,t} = −min(ρA, clip(ρ, 1 − clip.low, 1 + clip.high)·A), reduced by `aggregation`.
/// `advantages` are detached; `logp_old` is detached.
pub fn policy_loss(
    logp_new: &Tensor,
    logp_old: &Tensor,
    advantages: &Tensor,
    mask: &Tensor,
    clip: ClipRange,
    aggregation: LossAggregation,
) -> Result<PolicyLossOutputs> {
    clip.validate()?;
    aggregation.validate()?;
    let shape = check::per_token("logp_new", logp_new)?;
    check::same_shape("logp_old", logp_old, &shape)?;
    check::same_shape("advantages", advantages, &shape)?;
    check::same_shape("mask", mask, &shape)?;
    let m = mask_like(mask, logp_new);
    let log_ratio = zero_padding(&(logp_new - logp_old.detach()), &m);
    let ratio = log_ratio.exp();
    let adv = zero_padding(&advantages.detach().to_kind(ratio.kind()), &m);
    let surrogate = &ratio * &adv;
    let clipped = ratio.clamp(1.0 - clip.low, 1.0 + clip.high) * &adv;
    let per_token = -surrogate.minimum(&clipped);
    let loss = aggregation.reduce(&per_token, &m);
    let clipfrac = scalar(&masked_mean(&clipped.lt_tensor(&surrogate).to_kind(m.kind()), &m));
    let k3 = (ratio.detach() - 1.0) - log_ratio.detach();
    Ok(PolicyLossOutputs { loss, clipfrac, approx_kl: scalar(&masked_mean(&k3, &m)) })
}

#[derive(Debug)]
pub struct ValueLossOutputs {
    /// Scalar 0.5·max((V−R)², (clip(V, V_old±c)−R)²), averaged per sequence, then over the batch.
    pub loss: Tensor,
    /// Fraction of tokens where the clipped error is the larger one (0 without clipping).
    pub clipfrac: f64,
}

/// Clipped value loss (DESIGN.md §4): the new value may move at most `clip` from the rollout
/// value before its error counts in full. `clip = None` gives the plain 0.5·(V−R)².
pub fn value_loss(
    values_new: &Tensor,
    values_old: &Tensor,
    returns: &Tensor,
    mask: &Tensor,
    clip: Option<f64>,
) -> Result<ValueLossOutputs> {
    let shape = check::per_token("values_new", values_new)?;
    check::same_shape("values_old", values_old, &shape)?;
    check::same_shape("returns", returns, &shape)?;
    check::same_shape("mask", mask, &shape)?;
    let m = mask_like(mask, values_new);
    let targets = zero_padding(&returns.detach(), &m);
    let v = zero_padding(values_new, &m);
    let unclipped = (&v - &targets).square();
    let (per_token, clipfrac) = match clip {
        Some(c) => {
            check::positive("value clip", c)?;
            let old = zero_padding(&values_old.detach(), &m);
            let v_clipped = &old + (&v - &old).clamp(-c, c);
            let clipped = (v_clipped - &targets).square();
            let frac = scalar(&masked_mean(&clipped.gt_tensor(&unclipped).to_kind(m.kind()), &m));
            (unclipped.maximum(&clipped), frac)
        }
        None => (unclipped, 0.0),
    };
    let loss = mean_over_nonempty_rows(&masked_mean_per_row(&per_token, &m), &m) * 0.5;
    Ok(ValueLossOutputs { loss, clipfrac })
}

/// 1 − Var(R − V) / Var(R) over unmasked tokens (population variances): 1 is a perfect critic,
/// ≤ 0 one no better than a constant. NaN when the returns have zero variance.
pub fn explained_variance(values: &Tensor, returns: &Tensor, mask: &Tensor) -> f64 {
    let m = mask_like(mask, returns);
    let var_returns = scalar(&masked_var(returns, &m));
    if var_returns == 0.0 {
        return f64::NAN;
    }
    1.0 - scalar(&masked_var(&(returns - values.to_kind(returns.kind())), &m)) / var_returns
}

fn scalar(t: &Tensor) -> f64 {
    t.to_kind(Kind::Double).double_value(&[])
}
