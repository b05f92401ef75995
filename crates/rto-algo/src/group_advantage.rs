//! Critic-free advantages from groups of responses to the same prompt (DESIGN.md §7, "Group
//! estimators"): GRPO, Dr. GRPO, RLOO and REINFORCE++-baseline, on the dense RTO token reward.
//!
//! Layout: rows [g·K, (g+1)·K) of every input are the K responses to prompt g (B = G·K rows).
//! Response i of group g has H_i real tokens; its token reward (DESIGN.md §4) splits into a dense
//! part and the last-token (outcome) part:
//!   r_{i,t} = d_{i,t} + [t = H_i]·o_i,   o_i = β3·clamp(r_RM(x, y_i))   (the sentence reward),
//! so d = dpo_reward + kl_penalty (in `ppo` mode, the KL penalty alone).
//!
//! Following PRIME (Cui et al. 2025, "Process Reinforcement through Implicit Rewards": the implicit
//! process reward and the outcome reward each get their own leave-one-out baseline, then returns
//! are summed to go), both parts are compared with the same part of the other responses:
//!   m_i     = (1/H_i)·Σ_t d_{i,t}                        mean dense reward per token of response i
//!   b^d_i   = baseline of m over the group,   b^o_i = baseline of o over the group
//!   N_{i,t} = Σ_{s=t..H_i} γ^{s−t}·(d_{i,s} − b^d_i) + γ^{H_i−t}·(o_i − b^o_i)
//! The dense baseline is per token (a response is compared with the others' mean per-token
//! reward, so a long response is not favoured for holding more of them). Baselines:
//!   mean           b_i = (1/K)·Σ_j x_j                   (GRPO, Dr. GRPO, REINFORCE++-baseline)
//!   leave-one-out  b_i = (1/(K−1))·Σ_{j≠i} x_j            (RLOO)
//! With γ = 1 and equal lengths, N_{i,1} = R_i − baseline(R) for the sequence return
//! R_i = Σ_t r_{i,t}: each estimator's published sequence-level form at the first token, and
//! with only an outcome reward (d = 0) every token of a response carries exactly that value.
//! (verl's `recipe/prime` applies the scalar leave-one-out formula to each token, which moves
//! token t by (m_i − d_{i,t})/(K−1) against the form above; the two agree on N_{i,1} when γ = 1.)
//!
//! Padding columns give exactly 0. Inputs are detached: advantages are targets, not graph nodes.

use crate::advantage::{discounted_returns, whiten};
use crate::check;
use crate::masked::{last_token_mask, mask_like, masked_mean_per_row, zero_padding};
use anyhow::{ensure, Result};
use tch::Tensor;

/// ε added to GRPO's group scale (verl's value), so a group with nothing to compare gives 0.
pub const GRPO_EPS: f64 = 1e-6;

/// The per-prompt baseline of a group estimator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBaseline {
    /// The group mean, the response itself included.
    Mean,
    /// The mean of the K − 1 other responses (Kool et al. 2019; Ahmadian et al. 2024): it does
    /// not depend on the response's own actions, so the policy gradient stays unbiased.
    LeaveOneOut,
}

/// The group estimators. Every one needs K ≥ 2 responses per prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupEstimator {
    /// GRPO (Shao et al. 2024, DeepSeekMath §4.1.2): mean baseline, divided by the group's
    /// scale: A_{i,t} = N_{i,t} / (σ_g + ε), see [`group_scale`].
    Grpo,
    /// Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-Like Training" §3.2): GRPO without the
    /// division by σ_g, which weights prompts by how little their responses differ:
    /// A_{i,t} = N_{i,t} with the mean baseline.
    DrGrpo,
    /// RLOO (Ahmadian et al. 2024, "Back to Basics" §3.3): A_{i,t} = N_{i,t} with the
    /// leave-one-out baseline; for K = 2 each response is compared with the other one.
    Rloo,
    /// REINFORCE++-baseline (Hu 2025, REINFORCE++; OpenRLHF's `reinforce_baseline`): the group
    /// mean subtracted, then whitened over the whole rollout like REINFORCE++:
    /// A = (N − mean(N)) / std(N), mean and population std over every real token of the batch.
    ReinforcePlusPlusBaseline,
}

impl GroupEstimator {
    pub fn baseline(self) -> GroupBaseline {
        match self {
            Self::Rloo => GroupBaseline::LeaveOneOut,
            Self::Grpo | Self::DrGrpo | Self::ReinforcePlusPlusBaseline => GroupBaseline::Mean,
        }
    }

    /// Advantages [B, R] of the responses: `rewards` [B, R] the total token rewards r_{i,t},
    /// `outcome` [B] the sentence rewards o_i (already in `rewards` on the last token), `mask`
    /// [B, R], groups of `group_size` consecutive rows.
    pub fn advantages(
        self,
        rewards: &Tensor,
        outcome: &Tensor,
        mask: &Tensor,
        group_size: usize,
        gamma: f64,
    ) -> Result<Tensor> {
        let centered = centered_returns(rewards, outcome, mask, group_size, self.baseline(), gamma)?;
        Ok(match self {
            Self::Grpo => {
                let scale = group_scale(&centered, mask, group_size)?;
                zero_padding(&(&centered / (scale.unsqueeze(1) + GRPO_EPS)), &mask_like(mask, rewards))
            }
            Self::DrGrpo | Self::Rloo => centered,
            Self::ReinforcePlusPlusBaseline => whiten(&centered, mask, true),
        })
    }
}

/// `x` [B] as [G, K]: rows of the same group side by side.
fn grouped(x: &Tensor, group_size: usize) -> Result<Tensor> {
    ensure!(group_size >= 2, "a group baseline needs at least 2 responses per prompt, got {group_size}");
    let rows = x.size()[0];
    let k = group_size as i64;
    ensure!(rows % k == 0, "{rows} responses do not split into groups of {group_size}");
    Ok(x.view([rows / k, k]))
}

/// The baseline b_i [B] of each row's value `x_i` [B] within its group (see the module docs).
pub fn group_baseline(x: &Tensor, group_size: usize, baseline: GroupBaseline) -> Result<Tensor> {
    let g = grouped(x, group_size)?;
    let k = group_size as f64;
    let sum = g.sum_dim_intlist([1].as_slice(), true, g.kind());
    let b = match baseline {
        GroupBaseline::Mean => (sum / k).expand_as(&g),
        GroupBaseline::LeaveOneOut => (sum - &g) / (k - 1.0),
    };
    Ok(b.reshape([-1]))
}

/// N_{i,t} [B, R] of the module docs: returns-to-go of the token rewards with the dense part and
/// the outcome each shifted by its group baseline.
pub fn centered_returns(
    rewards: &Tensor,
    outcome: &Tensor,
    mask: &Tensor,
    group_size: usize,
    baseline: GroupBaseline,
    gamma: f64,
) -> Result<Tensor> {
    let shape = check::per_token("rewards", rewards)?;
    check::same_shape("mask", mask, &shape)?;
    check::same_shape("outcome", outcome, &shape[..1])?;
    let m = mask_like(mask, rewards);
    let last = last_token_mask(&m);
    let outcome = outcome.detach().to_kind(rewards.kind());
    let dense = zero_padding(&(zero_padding(&rewards.detach(), &m) - &last * outcome.unsqueeze(1)), &m);
    let dense_baseline = group_baseline(&masked_mean_per_row(&dense, &m), group_size, baseline)?;
    let outcome_baseline = group_baseline(&outcome, group_size, baseline)?;
    let shifted = (dense - dense_baseline.unsqueeze(1)) * &m + last * (outcome - outcome_baseline).unsqueeze(1);
    discounted_returns(&shifted, &m, gamma)
}

/// GRPO's σ_g per row [B]: σ_g² = (1/(K−1))·Σ_{i∈g} (1/H_i)·Σ_t N_{i,t}², the unbiased group
/// variance of the centered returns-to-go with each response weighted once (its tokens
/// averaged, as the per-sequence loss weighs them). With an outcome reward only and γ = 1,
/// N_{i,t} = o_i − mean(o), so σ_g is exactly the std of the group's rewards that GRPO divides
/// by. One scale for the dense and the outcome part keeps their ratio (β1 : β3) as set, and
/// since σ_g is taken over the N it divides, |A| ≤ √(H_i·(K−1)): a group whose responses all
/// earned the same (N = 0) gets 0, never 0/0, and a near-zero σ_g cannot inflate a dense term.
pub fn group_scale(centered: &Tensor, mask: &Tensor, group_size: usize) -> Result<Tensor> {
    let per_response = masked_mean_per_row(&centered.square(), &mask_like(mask, centered));
    let g = grouped(&per_response, group_size)?;
    let var = g.sum_dim_intlist([1].as_slice(), true, g.kind()) / (group_size as f64 - 1.0);
    Ok(var.sqrt().expand_as(&g).reshape([-1]))
}
