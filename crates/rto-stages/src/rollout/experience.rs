//! One iteration's rollout buffer and its advantages (DESIGN.md §4 "PPO", §7 "Group
//! estimators"; the formulas are rto-algo's, this file only gathers the tensors).

use super::{host_rows, pad_rows, EncodedPrompt, Sample};
use crate::trainer::Metrics;
use anyhow::{ensure, Result};
use rto_algo::{
    centered_returns, discounted_returns, explained_variance, gae, masked_mean, reinforce_plus_plus_returns, whiten,
    GroupEstimator,
};
use tch::{Device, Tensor};

/// One iteration's rollout buffer.
#[derive(Debug, Default)]
pub struct Experience {
    pub prompts: Vec<EncodedPrompt>,
    /// In rollout order: the `samples_per_prompt` responses to prompt p are consecutive.
    pub samples: Vec<Sample>,
    pub samples_per_prompt: usize,
}

/// How advantages are estimated.
#[derive(Debug, Clone, Copy)]
pub enum AdvantageEstimator {
    /// GAE over the critic's values, advantages whitened over the buffer.
    Gae { gamma: f64, lambda: f64 },
    /// REINFORCE++ (critic-free): whitened discounted returns-to-go.
    ReinforcePlusPlus { gamma: f64 },
    /// A group estimator over the responses to each prompt (critic-free).
    Group { estimator: GroupEstimator, gamma: f64 },
}

impl Experience {
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    fn width(&self) -> i64 {
        self.samples.iter().map(|s| s.response.len()).max().unwrap_or(1) as i64
    }

    fn lengths(&self) -> Vec<i64> {
        self.samples.iter().map(|s| s.response.len() as i64).collect()
    }

    /// A per-token field of every sample as one padded [N, R] tensor.
    pub fn padded(&self, field: fn(&Sample) -> &[f32], device: Device) -> Tensor {
        pad_rows(self.samples.iter().map(field), self.width(), device)
    }

    /// The response mask [N, R] of the whole buffer.
    pub fn mask(&self, device: Device) -> Tensor {
        let ones: Vec<Vec<f32>> = self.samples.iter().map(|s| vec![1.0; s.response.len()]).collect();
        pad_rows(ones.iter().map(Vec::as_slice), self.width(), device)
    }

    /// Fills every sample's advantages and returns; gives the buffer-level metrics (token
    /// means): `returns` (the discounted returns-to-go, GAE: the critic's targets),
    /// `advantages` (before whitening or GRPO's scaling), and `values` and
    /// `explained_variance` with a critic, `group_return_std` and `flat_groups` with groups.
    pub fn compute_advantages(&mut self, estimator: AdvantageEstimator, device: Device) -> Result<Metrics> {
        let mask = self.mask(device);
        let rewards = self.padded(|s| &s.rewards, device);
        let mean = |t: &Tensor| masked_mean(t, &mask).double_value(&[]);
        let mut metrics = Metrics::new();
        let (advantages, returns) = match estimator {
            AdvantageEstimator::Gae { gamma, lambda } => {
                let values = self.padded(|s| &s.values, device);
                let (advantages, returns) = gae(&rewards, &values, &mask, gamma, lambda)?;
                metrics.insert("values".into(), mean(&values));
                metrics.insert("advantages".into(), mean(&advantages));
                metrics.insert("explained_variance".into(), explained_variance(&values, &returns, &mask));
                (whiten(&advantages, &mask, true), returns)
            }
            AdvantageEstimator::ReinforcePlusPlus { gamma } => {
                let returns = discounted_returns(&rewards, &mask, gamma)?;
                metrics.insert("advantages".into(), mean(&returns));
                (reinforce_plus_plus_returns(&rewards, &mask, gamma)?, returns)
            }
            AdvantageEstimator::Group { estimator, gamma } => {
                let k = self.group_size()?;
                let outcome = Tensor::from_slice(&self.samples.iter().map(|s| s.outcome).collect::<Vec<f32>>());
                let outcome = outcome.to_device(device);
                let centered = centered_returns(&rewards, &outcome, &mask, k, estimator.baseline(), gamma)?;
                metrics.insert("advantages".into(), mean(&centered));
                metrics.extend(self.group_metrics());
                let advantages = estimator.advantages(&rewards, &outcome, &mask, k, gamma)?;
                (advantages, discounted_returns(&rewards, &mask, gamma)?)
            }
        };
        metrics.insert("returns".into(), mean(&returns));
        let lengths = self.lengths();
        let advantages = host_rows(&advantages, &lengths)?;
        let returns = host_rows(&returns, &lengths)?;
        for (sample, (a, r)) in self.samples.iter_mut().zip(advantages.into_iter().zip(returns)) {
            sample.advantages = a;
            sample.returns = r;
        }
        Ok(metrics)
    }

    /// K, after checking that the samples are in groups of K consecutive responses to one
    /// prompt (the layout the group estimators read).
    fn group_size(&self) -> Result<usize> {
        let k = self.samples_per_prompt;
        let misplaced = self.samples.iter().enumerate().find(|(i, s)| s.prompt != i / k.max(1));
        ensure!(
            k >= 2 && misplaced.is_none(),
            "the rollout is not in groups of {k} responses per prompt (sample {:?}); a group estimator needs --n-samples-per-prompt ≥ 2",
            misplaced.map(|(i, _)| i)
        );
        Ok(k)
    }

    /// `group_return_std`: the mean over groups of the (unbiased) std of the responses'
    /// returns Σ_t r_t; `flat_groups`: the fraction of groups whose returns are all equal, which
    /// carry no outcome comparison (DAPO's dynamic sampling filters such groups out).
    fn group_metrics(&self) -> Metrics {
        let k = self.samples_per_prompt;
        let returns: Vec<f64> = self.samples.iter().map(|s| s.rewards.iter().map(|&r| r as f64).sum()).collect();
        let (mut std_sum, mut flat, mut groups) = (0.0, 0.0, 0.0);
        for group in returns.chunks(k) {
            let mean = group.iter().sum::<f64>() / k as f64;
            std_sum += (group.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (k as f64 - 1.0)).sqrt();
            flat += f64::from(u8::from(group.iter().all(|&r| r == group[0])));
            groups += 1.0;
        }
        let n = f64::max(groups, 1.0);
        Metrics::from([("group_return_std".into(), std_sum / n), ("flat_groups".into(), flat / n)])
    }
}
