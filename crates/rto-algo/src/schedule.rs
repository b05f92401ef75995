//! Optimiser helpers for the training stages (DESIGN.md §4, "PPO": cosine schedule with 3 %
//! warmup and a floor of 0.1·lr; grad-norm clip 1.0).

use crate::check;
use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Linear warmup from 0 to `peak_lr`, then a half cosine down to `min_lr_ratio·peak_lr`, as
/// transformers' `cosine_with_min_lr` which OpenRLHF (the paper's code) uses, with
/// warmup_steps = ceil(total_steps·warmup_ratio). `step` counts optimiser steps from 0 (the
/// first step runs at lr 0 when there is warmup, as in transformers). Past `total_steps` the
/// rate stays at the floor (transformers would start a new cosine cycle).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CosineSchedule {
    pub total_steps: u64,
    pub warmup_ratio: f64,
    pub peak_lr: f64,
    pub min_lr_ratio: f64,
}

impl CosineSchedule {
    pub fn validate(&self) -> Result<()> {
        ensure!(self.total_steps >= 1, "total_steps must be ≥ 1, got {}", self.total_steps);
        check::unit_interval("warmup_ratio", self.warmup_ratio)?;
        check::positive("peak_lr", self.peak_lr)?;
        check::unit_interval("min_lr_ratio", self.min_lr_ratio)
    }

    pub fn warmup_steps(&self) -> u64 {
        (self.total_steps as f64 * self.warmup_ratio).ceil() as u64
    }

    /// The learning rate for optimiser step `step`.
    pub fn lr_at(&self, step: u64) -> f64 {
        let warmup = self.warmup_steps();
        if step < warmup {
            return self.peak_lr * step as f64 / warmup.max(1) as f64;
        }
        let decay_steps = self.total_steps.saturating_sub(warmup).max(1) as f64;
        let progress = ((step - warmup) as f64 / decay_steps).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.peak_lr * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine)
    }
}

/// One-shot form of [`CosineSchedule::lr_at`], validating the settings.
pub fn cosine_with_warmup(
    step: u64,
    total_steps: u64,
    warmup_ratio: f64,
    peak_lr: f64,
    min_lr_ratio: f64,
) -> Result<f64> {
    let schedule = CosineSchedule { total_steps, warmup_ratio, peak_lr, min_lr_ratio };
    schedule.validate()?;
    Ok(schedule.lr_at(step))
}

/// Clips gradients by their global L2 norm, in place, as `torch.nn.utils.clip_grad_norm_`:
/// total = sqrt(Σ_v ‖∇v‖²) over every variable that has a gradient; if total > max_norm every
/// gradient is scaled by max_norm/(total + 1e-6). Returns the norm *before* clipping (what to
/// log). A non-finite norm leaves the gradients untouched and is returned for the caller to
/// treat as a failed step.
pub fn clip_grad_norm(vars: &[Tensor], max_norm: f64) -> Result<f64> {
    let mut grads: Vec<Tensor> = vars.iter().map(Tensor::grad).filter(Tensor::defined).collect();
    let total = global_norm(&grads);
    if let Some(coef) = clip_coefficient(total, max_norm)? {
        tch::no_grad(|| {
            for g in grads.iter_mut() {
                let _ = g.g_mul_scalar_(coef);
            }
        });
    }
    Ok(total)
}

/// sqrt(Σ ‖t‖²) over `tensors`, accumulated in f64 one tensor at a time (whatever their dtype).
pub fn global_norm(tensors: &[Tensor]) -> f64 {
    tensors.iter().map(|g| g.to_kind(Kind::Double).square().sum(Kind::Double).double_value(&[])).sum::<f64>().sqrt()
}

/// The factor [`clip_grad_norm`] scales gradients of global norm `total` by: max_norm/(total +
/// 1e-6) when that is below 1 and `total` is finite; `None` when no clipping applies.
pub fn clip_coefficient(total: f64, max_norm: f64) -> Result<Option<f64>> {
    check::positive("max_norm", max_norm)?;
    let coef = max_norm / (total + 1e-6);
    Ok((total.is_finite() && coef < 1.0).then_some(coef))
}
