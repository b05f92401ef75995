//! Pairwise preference losses for `dpo-train` (DESIGN.md §4, "DPO") and the Bradley-Terry loss
//! for `rm-train` (DESIGN.md §4, "Reward model").
//!
//! Inputs are per-sequence *summed* response log-probs `[B]` (e.g. `response_logprobs(..)`
//! summed over the response mask), so every variant sees the same quantities and the metrics
//! are comparable across variants. Metrics are those TRL users know: `rewards/chosen`,
//! `rewards/rejected`, `rewards/margins`, `rewards/accuracies` (see [`PreferenceMetrics`]).

use crate::check;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Which pairwise loss `dpo-train` optimises. Serialized as `{type: sigmoid, beta: .., ..}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum PreferenceLoss {
    /// DPO, and cDPO when `label_smoothing` ε > 0:
    /// −(1−ε)·logσ(βΔ) − ε·logσ(−βΔ), Δ = (πw − πl) − (refw − refl) on summed log-probs.
    Sigmoid {
        beta: f64,
        #[serde(default)]
        label_smoothing: f64,
    },
    /// IPO: (Δ − 1/(2β))². Δ is built from *summed* log-probs as DESIGN.md §4 writes it; TRL
    /// instead length-averages the log-probs for IPO, so β values do not transfer one-to-one.
    Ipo { beta: f64 },
    /// SimPO (Meng et al. 2024), reference-free: −logσ(β·(avg_w − avg_l) − γ), avg = Σlp/|y|.
    /// `gamma` is the paper's absolute target reward margin γ (TRL's `CPOConfig.simpo_gamma`);
    /// the SimPO repository's `gamma_beta_ratio` equals γ/β.
    Simpo { beta: f64, gamma: f64 },
    /// R-DPO (Park et al. 2024), length-regularised: −logσ(βΔ − α·(|y_w| − |y_l|)).
    Rdpo { beta: f64, alpha: f64 },
}

impl Default for PreferenceLoss {
    /// DPO with DESIGN.md §4's defaults: β = 0.1, ε = 0.
    fn default() -> Self {
        PreferenceLoss::Sigmoid { beta: 0.1, label_smoothing: 0.0 }
    }
}

/// Per-sequence inputs, all `[B]`. `reference_*` are required except for SimPO (ignored there).
/// Lengths are response token counts (any numeric kind); SimPO and R-DPO read them.
#[derive(Debug)]
pub struct PreferenceInputs<'a> {
    pub policy_chosen: &'a Tensor,
    pub policy_rejected: &'a Tensor,
    pub reference_chosen: Option<&'a Tensor>,
    pub reference_rejected: Option<&'a Tensor>,
    pub chosen_lengths: &'a Tensor,
    pub rejected_lengths: &'a Tensor,
}

/// Losses carry the graph; the reward metrics are detached.
#[derive(Debug)]
pub struct PreferenceOutputs {
    /// `[B]` per-pair loss.
    pub losses: Tensor,
    /// Scalar mean of `losses`: what to backpropagate.
    pub loss: Tensor,
    /// `[B]` implicit reward of the chosen response: β(Σlp_θ(y_w) − Σlp_ref(y_w)); SimPO: β·avg_w.
    pub rewards_chosen: Tensor,
    /// `[B]` the same for the rejected response.
    pub rewards_rejected: Tensor,
    /// `[B]` rewards_chosen − rewards_rejected.
    pub margins: Tensor,
    /// `[B]` 1.0 where rewards_chosen > rewards_rejected, else 0.0.
    pub accuracies: Tensor,
}

/// Batch means of [`PreferenceOutputs`], named as TRL logs them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PreferenceMetrics {
    pub loss: f64,
    #[serde(rename = "rewards/chosen")]
    pub rewards_chosen: f64,
    #[serde(rename = "rewards/rejected")]
    pub rewards_rejected: f64,
    #[serde(rename = "rewards/margins")]
    pub margins: f64,
    #[serde(rename = "rewards/accuracies")]
    pub accuracies: f64,
}

impl PreferenceOutputs {
    pub fn metrics(&self) -> PreferenceMetrics {
        let mean = |t: &Tensor| t.mean(Kind::Double).double_value(&[]);
        PreferenceMetrics {
            loss: mean(&self.losses),
            rewards_chosen: mean(&self.rewards_chosen),
            rewards_rejected: mean(&self.rewards_rejected),
            margins: mean(&self.margins),
            accuracies: mean(&self.accuracies),
        }
    }
}

impl PreferenceLoss {
    pub fn beta(&self) -> f64 {
        match *self {
            Self::Sigmoid { beta, .. } | Self::Ipo { beta } | Self::Simpo { beta, .. } | Self::Rdpo { beta, .. } => {
                beta
            }
        }
    }

    /// Whether the loss needs reference-model log-probs (all but SimPO).
    pub fn needs_reference(&self) -> bool {
        !matches!(self, Self::Simpo { .. })
    }

    /// Rejects settings that make the loss meaningless, naming the field.
    pub fn validate(&self) -> Result<()> {
        check::positive("beta", self.beta())?;
        match *self {
            Self::Sigmoid { label_smoothing, .. } => {
                if !(0.0..0.5).contains(&label_smoothing) {
                    bail!("label_smoothing must lie in [0, 0.5), got {label_smoothing}");
                }
            }
            Self::Ipo { .. } => {}
            Self::Simpo { gamma, .. } => check::non_negative("gamma", gamma)?,
            Self::Rdpo { alpha, .. } => check::non_negative("alpha", alpha)?,
        }
        Ok(())
    }

    /// Per-pair losses and TRL metrics for one batch of pairs.
    pub fn compute(&self, inputs: &PreferenceInputs) -> Result<PreferenceOutputs> {
        self.validate()?;
        inputs.check()?;
        let beta = self.beta();
        let kind = inputs.policy_chosen.kind();
        let (losses, rewards_chosen, rewards_rejected) = match *self {
            Self::Simpo { gamma, .. } => {
                let avg_w = inputs.policy_chosen / inputs.chosen_lengths.to_kind(kind);
                let avg_l = inputs.policy_rejected / inputs.rejected_lengths.to_kind(kind);
                let losses = -((&avg_w - &avg_l) * beta - gamma).log_sigmoid();
                (losses, avg_w * beta, avg_l * beta)
            }
            _ => {
                let (ref_w, ref_l) = inputs.reference()?;
                let chosen_ratio = inputs.policy_chosen - ref_w;
                let rejected_ratio = inputs.policy_rejected - ref_l;
                let delta = &chosen_ratio - &rejected_ratio;
                (self.reference_loss(&delta, inputs), chosen_ratio * beta, rejected_ratio * beta)
            }
        };
        let rewards_chosen = rewards_chosen.detach();
        let rewards_rejected = rewards_rejected.detach();
        let margins = &rewards_chosen - &rewards_rejected;
        let accuracies = rewards_chosen.gt_tensor(&rewards_rejected).to_kind(kind);
        Ok(PreferenceOutputs { loss: losses.mean(kind), losses, rewards_chosen, rewards_rejected, margins, accuracies })
    }

    /// The losses written in Δ, for the variants with a reference model.
    fn reference_loss(&self, delta: &Tensor, inputs: &PreferenceInputs) -> Tensor {
        match *self {
            Self::Sigmoid { beta, label_smoothing: eps } => {
                let logits = delta * beta;
                -(logits.log_sigmoid() * (1.0 - eps)) - (-&logits).log_sigmoid() * eps
            }
            Self::Ipo { beta } => (delta - 1.0 / (2.0 * beta)).square(),
            Self::Rdpo { beta, alpha } => {
                let kind = delta.kind();
                let length_gap = inputs.chosen_lengths.to_kind(kind) - inputs.rejected_lengths.to_kind(kind);
                -(delta * beta - length_gap * alpha).log_sigmoid()
            }
            Self::Simpo { .. } => unreachable!("SimPO has no reference term"),
        }
    }
}

impl PreferenceInputs<'_> {
    fn check(&self) -> Result<()> {
        let shape = self.policy_chosen.size();
        if shape.len() != 1 {
            bail!("policy_chosen must be per-sequence [B], got shape {shape:?}");
        }
        check::same_shape("policy_rejected", self.policy_rejected, &shape)?;
        check::same_shape("chosen_lengths", self.chosen_lengths, &shape)?;
        check::same_shape("rejected_lengths", self.rejected_lengths, &shape)?;
        if let Some(t) = self.reference_chosen {
            check::same_shape("reference_chosen", t, &shape)?;
        }
        if let Some(t) = self.reference_rejected {
            check::same_shape("reference_rejected", t, &shape)?;
        }
        Ok(())
    }

    fn reference(&self) -> Result<(&Tensor, &Tensor)> {
        match (self.reference_chosen, self.reference_rejected) {
            (Some(w), Some(l)) => Ok((w, l)),
            _ => bail!("this preference loss needs reference_chosen and reference_rejected log-probs"),
        }
    }
}

/// Bradley-Terry reward-model loss: −logσ(r_w − r_l − margin), per pair and mean.
#[derive(Debug)]
pub struct BradleyTerryOutputs {
    /// `[B]` per-pair loss.
    pub losses: Tensor,
    /// Scalar mean of `losses`.
    pub loss: Tensor,
    /// `[B]` r_w − r_l (detached, without the margin).
    pub margins: Tensor,
    /// `[B]` 1.0 where r_w > r_l.
    pub accuracies: Tensor,
}

/// DESIGN.md §4 "Reward model": −logσ(r(x,y_w) − r(x,y_l) − margin); `margin` `[B]` is optional
/// (e.g. the score gap of a judged pair, as in Llama-2's margin loss). Accuracy ignores it.
pub fn bradley_terry_loss(
    r_chosen: &Tensor,
    r_rejected: &Tensor,
    margin: Option<&Tensor>,
) -> Result<BradleyTerryOutputs> {
    let shape = r_chosen.size();
    if shape.len() != 1 {
        bail!("r_chosen must be per-sequence [B], got shape {shape:?}");
    }
    check::same_shape("r_rejected", r_rejected, &shape)?;
    let gap = r_chosen - r_rejected;
    let logits = match margin {
        Some(m) => {
            check::same_shape("margin", m, &shape)?;
            &gap - m
        }
        None => gap.shallow_clone(),
    };
    let losses = -logits.log_sigmoid();
    let kind = r_chosen.kind();
    let margins = gap.detach();
    Ok(BradleyTerryOutputs { loss: losses.mean(kind), losses, accuracies: margins.gt(0.0).to_kind(kind), margins })
}
