//! AdamW with state we can save: bitwise kill-and-resume needs the moment estimates on disk,
//! and tch's optimizer wrapper keeps them inside libtorch out of reach.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{nn::VarStore, Kind, Tensor};

#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
pub struct AdamWSettings {
    #[arg(long, default_value_t = 0.9)]
    pub adam_beta1: f64,
    /// 0.95 as in the paper's OpenRLHF settings.
    #[arg(long, default_value_t = 0.95)]
    pub adam_beta2: f64,
    #[arg(long, default_value_t = 1e-8)]
    pub adam_eps: f64,
    /// Decoupled weight decay (AdamW), applied to weight matrices and embeddings but not to
    /// biases or norm weights, as HF Trainer and OpenRLHF do.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Global gradient L2 norm limit.
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
}

impl AdamWSettings {
    /// Adam's bias corrections (1 - β1^t, 1 - β2^t) at step `steps` (1-based).
    pub fn corrections(&self, steps: i64) -> (f64, f64) {
        (1.0 - self.adam_beta1.powi(steps as i32), 1.0 - self.adam_beta2.powi(steps as i32))
    }

    pub fn validate(&self) -> Result<()> {
        for (name, v) in [("adam_beta1", self.adam_beta1), ("adam_beta2", self.adam_beta2)] {
            if !(0.0..1.0).contains(&v) {
                bail!("{name} must be in [0, 1), got {v}");
            }
        }
        if self.weight_decay < 0.0 || self.adam_eps <= 0.0 || self.max_grad_norm <= 0.0 {
            bail!("weight_decay must be >= 0, adam_eps and max_grad_norm > 0");
        }
        Ok(())
    }
}

/// The trainable variables of `vs` in name order: the order every optimizer (and ZeRO-1's
/// flattened parameter vector) uses, stable across runs and ranks.
pub fn trainable(vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut params: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    params
}

/// The factor that clips gradients of global norm `norm` to `max_grad_norm`; a non-finite norm
/// is an error (the caller then leaves the weights as they are).
pub fn clip_factor(norm: f64, settings: &AdamWSettings) -> Result<Option<f64>> {
    let clip = rto_algo::clip_coefficient(norm, settings.max_grad_norm)?;
    if !norm.is_finite() {
        bail!("gradient norm is {norm}: the loss produced non-finite gradients");
    }
    Ok(clip)
}

/// `grad` in fp32, times the clip factor when there is one.
pub fn clipped(grad: &Tensor, clip: Option<f64>) -> Tensor {
    let grad = grad.to_kind(Kind::Float);
    match clip {
        Some(coef) => grad * coef,
        None => grad,
    }
}

/// One AdamW update of one fp32 tensor (or a slice of one: ZeRO-1 updates its shard's
/// segments of each parameter), shared by [`AdamW`] and `dist::zero`, so both do the same
/// operations in the same order.
pub struct Step<'a> {
    pub settings: &'a AdamWSettings,
    pub lr: f64,
    pub correction1: f64,
    pub correction2: f64,
    /// Whether weight decay applies (see [`decays`]).
    pub decay: bool,
}

impl Step<'_> {
    /// Updates `target` (an fp32 master or parameter) and the moments `m`, `v` in place from
    /// the fp32, already clipped `grad`. Call inside `no_grad`.
    pub fn apply(&self, target: &Tensor, m: &mut Tensor, v: &mut Tensor, grad: &Tensor) {
        let (s, lr) = (self.settings, self.lr);
        let mut target = target.shallow_clone();
        if s.weight_decay > 0.0 && self.decay {
            let _ = target.g_mul_scalar_(1.0 - lr * s.weight_decay);
        }
        let _ = m.g_mul_scalar_(s.adam_beta1);
        let _ = m.g_add_(&(grad * (1.0 - s.adam_beta1)));
        let _ = v.g_mul_scalar_(s.adam_beta2);
        let _ = v.g_add_(&(grad.square() * (1.0 - s.adam_beta2)));
        // The same operations in the same order as (m/c1) / (sqrt(v/c2) + eps) · lr, but
        // in place on two buffers: for a 136M-parameter embedding each temporary is
        // 0.5 GB, and the out-of-place form held five at once.
        let mut denom = &*v / self.correction2;
        let _ = denom.sqrt_();
        let _ = denom.g_add_scalar_(s.adam_eps);
        let mut update = &*m / self.correction1;
        let _ = update.g_div_(&denom);
        drop(denom);
        let _ = update.g_mul_scalar_(lr);
        let _ = target.g_sub_(&update);
    }
}

/// Whether weight decay applies to the variable `name`: not to biases and norm weights. HF
/// Trainer exempts "bias" and LayerNorm weights, OpenRLHF `bias` and `*norm.weight`; our norm
/// variables are `input_layernorm`, `post_attention_layernorm` and `model.norm`.
pub fn decays(name: &str) -> bool {
    !(name.ends_with("bias") || name.ends_with("norm.weight"))
}

/// AdamW over a model's trainable variables. A variable held in a lower precision than fp32
/// (`--bf16`) gets an fp32 master copy: the update is computed and applied to the master in
/// fp32 and the variable receives the master rounded to its dtype, so small updates are not
/// lost to bf16 rounding (the DeepSpeed/OpenRLHF bf16 recipe). Masters are saved with the
/// moments, so a resumed run continues from the same fp32 values.
pub struct AdamW {
    settings: AdamWSettings,
    params: Vec<(String, Tensor)>,
    /// fp32 master of each parameter held in another dtype; `None` for fp32 parameters.
    masters: Vec<Option<Tensor>>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    steps: i64,
}

impl AdamW {
    /// Optimizes every trainable variable of `vs`, in name order (stable across runs).
    pub fn new(vs: &VarStore, settings: AdamWSettings) -> Result<Self> {
        settings.validate()?;
        let params = trainable(vs);
        let zeros = |t: &Tensor| Tensor::zeros_like(t).to_kind(Kind::Float);
        let exp_avg = params.iter().map(|(_, t)| zeros(t)).collect();
        let exp_avg_sq = params.iter().map(|(_, t)| zeros(t)).collect();
        let masters =
            params.iter().map(|(_, t)| (t.kind() != Kind::Float).then(|| t.detach().to_kind(Kind::Float))).collect();
        Ok(Self { settings, params, masters, exp_avg, exp_avg_sq, steps: 0 })
    }

    /// Whether the parameters are held in a lower precision with fp32 masters.
    pub fn has_masters(&self) -> bool {
        self.masters.iter().any(Option::is_some)
    }

    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            p.zero_grad();
        }
    }

    /// Clips the gradients to `max_grad_norm`, then takes one step at `lr`. Returns the norm
    /// before clipping. A non-finite norm is an error and leaves the weights untouched.
    pub fn clip_and_step(&mut self, lr: f64) -> Result<f64> {
        let grads: Vec<Tensor> = self.params.iter().map(|(_, p)| p.grad()).collect();
        self.clip_and_step_with(lr, &grads)
    }

    /// The optimized parameters, in the optimizer's (name) order.
    pub fn params(&self) -> Vec<Tensor> {
        self.params.iter().map(|(_, p)| p.shallow_clone()).collect()
    }

    /// [`Self::clip_and_step`] on `grads` (one per parameter of [`Self::params`], undefined
    /// where there is none) instead of the parameters' own: the data-parallel trainer passes
    /// the gradients summed over ranks.
    pub fn clip_and_step_with(&mut self, lr: f64, grads: &[Tensor]) -> Result<f64> {
        if grads.len() != self.params.len() {
            bail!("{} gradients for {} parameters", grads.len(), self.params.len());
        }
        let defined: Vec<Tensor> = grads.iter().filter(|g| g.defined()).map(Tensor::shallow_clone).collect();
        let norm = rto_algo::global_norm(&defined);
        let clip = clip_factor(norm, &self.settings)?;
        self.steps += 1;
        let s = &self.settings;
        let (correction1, correction2) = s.corrections(self.steps);
        tch::no_grad(|| {
            for (i, (name, param)) in self.params.iter().enumerate() {
                if !grads[i].defined() {
                    continue;
                }
                // Upcast (bf16 gradients) and clip one tensor at a time: fp32 math without an
                // fp32 copy of every gradient at once.
                let grad = clipped(&grads[i], clip);
                // The fp32 tensor the update applies to: the master, or the parameter itself.
                let target = self.masters[i].as_ref().unwrap_or(param);
                let step = Step { settings: s, lr, correction1, correction2, decay: decays(name) };
                step.apply(target, &mut self.exp_avg[i], &mut self.exp_avg_sq[i], &grad);
                if let Some(master) = &self.masters[i] {
                    param.shallow_clone().copy_(master);
                }
            }
        });
        Ok(norm)
    }

    pub fn steps(&self) -> i64 {
        self.steps
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let mut named: Vec<(String, Tensor)> = Vec::new();
        for (i, (name, _)) in self.params.iter().enumerate() {
            named.push((format!("exp_avg.{name}"), self.exp_avg[i].shallow_clone()));
            named.push((format!("exp_avg_sq.{name}"), self.exp_avg_sq[i].shallow_clone()));
            if let Some(master) = &self.masters[i] {
                named.push((format!("master.{name}"), master.shallow_clone()));
            }
        }
        named.push(("steps".into(), Tensor::from_slice(&[self.steps])));
        Tensor::write_safetensors(&named, path).with_context(|| format!("writing {}", path.display()))
    }

    pub fn load(&mut self, path: &Path) -> Result<()> {
        let stored: BTreeMap<String, Tensor> = Tensor::read_safetensors(path)
            .with_context(|| format!("reading optimizer state {}", path.display()))?
            .into_iter()
            .collect();
        let get = |key: &str| stored.get(key).with_context(|| format!("{}: missing `{key}`", path.display()));
        for (i, (name, param)) in self.params.iter().enumerate() {
            tch::no_grad(|| -> Result<()> {
                self.exp_avg[i].copy_(get(&format!("exp_avg.{name}"))?);
                self.exp_avg_sq[i].copy_(get(&format!("exp_avg_sq.{name}"))?);
                if let Some(master) = &mut self.masters[i] {
                    master.copy_(get(&format!("master.{name}"))?);
                    param.shallow_clone().copy_(master);
                }
                Ok(())
            })?;
        }
        self.steps = get("steps")?.int64_value(&[0]);
        Ok(())
    }
}
