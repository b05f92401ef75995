//! The settings of the RTO token reward (DESIGN.md §4), flattened into both token-reward-annotate
//! and ppo-train: one set of flag names, so a table annotated with some settings is trained on
//! by writing the same flags.
//!
//! Names: β2 is `--kl-coef` (TRL's `kl_coef`; OpenRLHF's `--init_kl_coef` is an alias). The
//! other coefficients have no TRL/OpenRLHF counterpart and keep the paper's symbols or say what
//! they bound: `--beta1` (β1), `--dpo-clip` (c; "dpo" so it is not read as PPO's `--eps-clip`),
//! `--beta3` (β3) and `--rm-clamp` (the symmetric bound OpenRLHF writes as
//! `--reward_clip_range -x x`). annotate's former `--clip` and `--beta2` stay accepted there
//! (see `annotate::command`). The serde names are the field names, which are the flag names:
//! YAML keys, manifests and stage keys say what the flags say.

use anyhow::{Context, Result};
use rto_algo::{RewardMode, RewardWeights};
use serde::{Deserialize, Serialize};

// No doc comment on the struct: clap would take it as the `about` of every command that
// flattens it (the bug that gave token-reward-annotate the column names' text as its --help).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct RewardConfig {
    /// Reward composition: rto | ppo (β1 = 0: the sentence-level baseline) | dpo-only (β3 = 0)
    /// | ddpo | rs-ppo.
    #[arg(long, default_value = "rto")]
    pub mode: RewardMode,
    /// β1: scale of the DPO log-ratio β1·(logp_dpo − logp_ref) of each token.
    #[arg(long, default_value_t = 0.05)]
    pub beta1: f64,
    /// c: each token's DPO reward is clipped to [−c, c] ("inf" turns clipping off).
    #[arg(long, default_value_t = 0.05)]
    #[serde(alias = "clip")]
    pub dpo_clip: f64,
    /// β2: KL-penalty coefficient, −β2·(logp_policy − logp_ref) per token (annotate: only with
    /// --policy; ppo-train: the initial value when --kl-target is given).
    #[arg(long, default_value_t = 0.01, alias = "init-kl-coef")]
    #[serde(alias = "beta2")]
    pub kl_coef: f64,
    /// β3: weight of the reward model's sentence reward on each response's last token.
    #[arg(long, default_value_t = 1.0)]
    pub beta3: f64,
    /// The reward-model score is clamped to [−x, x] before β3 ("inf": no clamp).
    #[arg(long, default_value_t = 10.0)]
    pub rm_clamp: f64,
}

impl Default for RewardConfig {
    fn default() -> Self {
        let w = RewardWeights::default();
        Self {
            mode: RewardMode::default(),
            beta1: w.beta1,
            dpo_clip: w.clip,
            kl_coef: w.beta2,
            beta3: w.beta3,
            rm_clamp: w.rm_clamp,
        }
    }
}

impl RewardConfig {
    /// The configured weights, β2 = `--kl-coef` (ppo-train's KL controller replaces β2 as it
    /// adapts; see `ppo::RewardSettings::weights`).
    pub fn weights(&self) -> RewardWeights {
        RewardWeights {
            beta1: self.beta1,
            clip: self.dpo_clip,
            beta2: self.kl_coef,
            beta3: self.beta3,
            rm_clamp: self.rm_clamp,
        }
    }

    /// The checks of `RewardMode::check_weights`, with the flags named (its messages use the
    /// formula's names: clip = --dpo-clip, beta2 = --kl-coef).
    pub fn validate(&self) -> Result<()> {
        self.mode.check_weights(&self.weights()).with_context(|| {
            format!(
                "reward settings --mode {} --beta1 {} --dpo-clip {} --kl-coef {} --beta3 {} --rm-clamp {}",
                self.mode, self.beta1, self.dpo_clip, self.kl_coef, self.beta3, self.rm_clamp
            )
        })
    }
}
