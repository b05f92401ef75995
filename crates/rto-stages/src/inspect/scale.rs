//! What colours a token, and how strongly: the per-token values a view can colour by
//! ([`ValueColumn`]) and the symmetric scale each is shown on ([`Scale`]).
//!
//! The scale rule (one for the terminal and the page, fit over every token of the table, not
//! per sample, so one colour means one value everywhere):
//! - `dpo_reward` runs on ±c, the clip of the table's `rto.clip` metadata: full colour means
//!   "clipped". Without a finite clip (or without metadata) it falls back to the next rule;
//! - every other column runs on ±P98, the 98th percentile of |value| over the tokens that have
//!   one (nearest rank: the ⌈0.98·n⌉-th smallest), so a few outliers saturate instead of
//!   bleaching every other token. Where that percentile is 0 (a column that is 0 on at least
//!   98% of its tokens) the scale is max |value|, and 0 (all white) when every value is 0.
//!
//! The sentence reward (β3 · the reward model's score, on the last token only) would set the
//! scale of `reward` on its own, two orders above the dense per-token terms. So `reward` is
//! coloured without it (reward − sentence_reward) and each sample shows its sentence reward
//! as a badge, on its own scale fit by the percentile rule over the samples.

use rto_data::token_table::{SampleRecord, TokenRecord};
use std::collections::BTreeMap;

/// The percentile of |value| that sets a scale (see the module docs).
pub const PERCENTILE: f64 = 0.98;

/// Per-token values a view can colour by (`show --color-by NAME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum ValueColumn {
    /// reward − sentence_reward (each sample's sentence reward is shown as a badge)
    #[value(name = "reward")]
    Reward,
    /// clip(β1·(logp_dpo − logp_ref), ±c)
    #[value(name = "dpo_reward", alias = "dpo-reward")]
    DpoReward,
    /// −β2·(logp_policy − logp_ref)
    #[value(name = "kl_penalty", alias = "kl-penalty")]
    KlPenalty,
    /// logp_policy − logp_ref
    #[value(name = "policy_log_ratio", alias = "logp_policy-logp_ref")]
    PolicyLogRatio,
    /// the gold judge's credit of the token's word (annotate --judge toy)
    #[value(name = "gold_credit")]
    GoldCredit,
    /// the advantage the PPO update pushed the token by (ppo-train rollout tables)
    #[value(name = "advantage")]
    Advantage,
}

impl ValueColumn {
    pub const ALL: [ValueColumn; 6] = [
        ValueColumn::Reward,
        ValueColumn::DpoReward,
        ValueColumn::KlPenalty,
        ValueColumn::PolicyLogRatio,
        ValueColumn::GoldCredit,
        ValueColumn::Advantage,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ValueColumn::Reward => "reward",
            ValueColumn::DpoReward => "dpo_reward",
            ValueColumn::KlPenalty => "kl_penalty",
            ValueColumn::PolicyLogRatio => "policy_log_ratio",
            ValueColumn::GoldCredit => "gold_credit",
            ValueColumn::Advantage => "advantage",
        }
    }

    /// What the colour stands for, for a legend.
    pub fn label(self) -> &'static str {
        match self {
            ValueColumn::Reward => "reward without the last-token sentence reward (its badge)",
            ValueColumn::DpoReward => "dpo_reward = clip(β1·(logp_dpo − logp_ref), ±c)",
            ValueColumn::KlPenalty => "kl_penalty = −β2·(logp_policy − logp_ref)",
            ValueColumn::PolicyLogRatio => "logp_policy − logp_ref",
            ValueColumn::GoldCredit => "gold_credit: the gold judge's credit of the token's word",
            ValueColumn::Advantage => "advantage: what the PPO update pushed the token by",
        }
    }

    /// How a table gets this column, for the error of a `--color-by` it lacks.
    fn source_hint(self) -> &'static str {
        match self {
            ValueColumn::Reward => "every table has it",
            ValueColumn::DpoReward => {
                "annotate with --dpo, or a ppo-train rollout under a mode that reads the DPO model"
            }
            ValueColumn::KlPenalty | ValueColumn::PolicyLogRatio => {
                "annotate with --policy, or a ppo-train rollout table"
            }
            ValueColumn::GoldCredit => "annotate with --judge toy",
            ValueColumn::Advantage => "a ppo-train rollout table (rollouts/iter-N)",
        }
    }

    /// The value a token is coloured by; `None` where the table holds none.
    pub fn of(self, token: &TokenRecord) -> Option<f32> {
        match self {
            ValueColumn::Reward => Some(token.reward - token.sentence_reward.unwrap_or(0.0)),
            ValueColumn::DpoReward => token.dpo_reward,
            ValueColumn::KlPenalty => token.kl_penalty,
            ValueColumn::PolicyLogRatio => Some(token.logp_policy? - token.logp_ref?),
            ValueColumn::GoldCredit => token.gold_credit,
            ValueColumn::Advantage => token.advantage,
        }
    }
}

/// How a scale was fit, for the legend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScaleRule {
    /// The clip c of the table's metadata.
    Clip,
    /// The 98th percentile of |value| over this many values.
    Percentile(usize),
    /// max |value| over this many values (their percentile was 0).
    Max(usize),
}

/// A symmetric colour scale: full colour at ±`value`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    pub value: f32,
    pub rule: ScaleRule,
}

impl Scale {
    /// The rule in words, for a legend.
    pub fn describe(&self) -> String {
        match self.rule {
            ScaleRule::Clip => format!("±c = ±{}, the clip in the table's rto.clip", self.value),
            ScaleRule::Percentile(n) => format!("±{:.4}, the 98th percentile of |value| over {n} values", self.value),
            ScaleRule::Max(n) => format!("±{:.4}, the largest |value| of {n} (their 98th percentile is 0)", self.value),
        }
    }
}

/// The nearest-rank `p`-quantile of |values| (the ⌈p·n⌉-th smallest); 0 for no values.
pub fn percentile_abs(values: &[f32], p: f64) -> f32 {
    let mut abs: Vec<f32> = values.iter().map(|v| v.abs()).collect();
    if abs.is_empty() {
        return 0.0;
    }
    abs.sort_by(f32::total_cmp);
    // The tolerance keeps p·n = 98 (for n = 100) from becoming 99 through rounding.
    let rank = (p * abs.len() as f64 - 1e-9).ceil() as usize;
    abs[rank.clamp(1, abs.len()) - 1]
}

/// The scale of `values` by the rule of the module docs; `clip` is the table's c, used when
/// finite and positive.
pub fn fit(values: &[f32], clip: Option<f64>) -> Scale {
    if let Some(c) = clip.filter(|c| c.is_finite() && *c > 0.0) {
        return Scale { value: c as f32, rule: ScaleRule::Clip };
    }
    let n = values.len();
    match percentile_abs(values, PERCENTILE) {
        p if p > 0.0 => Scale { value: p, rule: ScaleRule::Percentile(n) },
        _ => Scale { value: percentile_abs(values, 1.0), rule: ScaleRule::Max(n) },
    }
}

/// Every value of a table a scale is fit to, gathered sample by sample.
#[derive(Default)]
pub struct ScaleInputs {
    columns: BTreeMap<ValueColumn, Vec<f32>>,
    sentence: Vec<f32>,
}

impl ScaleInputs {
    pub fn add(&mut self, sample: &SampleRecord, tokens: &[TokenRecord]) {
        for column in ValueColumn::ALL {
            let values = tokens.iter().filter_map(|t| column.of(t));
            let mut values = values.peekable();
            if values.peek().is_some() {
                self.columns.entry(column).or_default().extend(values);
            }
        }
        self.sentence.extend(sample.sentence_reward);
    }

    /// The scales; `clip` is the table's c (the `dpo_reward` scale).
    pub fn finish(self, clip: Option<f64>) -> Scales {
        let columns = self
            .columns
            .into_iter()
            .map(|(column, values)| {
                let clip = if column == ValueColumn::DpoReward { clip } else { None };
                (column, fit(&values, clip))
            })
            .collect();
        let sentence = (!self.sentence.is_empty()).then(|| fit(&self.sentence, None));
        Scales { columns, sentence }
    }
}

/// The scale of every column the table has values of, and of the sentence-reward badge.
#[derive(Debug, Clone, PartialEq)]
pub struct Scales {
    pub columns: BTreeMap<ValueColumn, Scale>,
    pub sentence: Option<Scale>,
}

impl Scales {
    /// The columns a view can colour by, in [`ValueColumn::ALL`] order.
    pub fn available(&self) -> Vec<ValueColumn> {
        self.columns.keys().copied().collect()
    }

    /// The column to colour by: the one asked for, which the table must have, or by default
    /// `dpo_reward` when the table has it and `reward` otherwise.
    pub fn resolve(&self, asked: Option<ValueColumn>, table: &str) -> anyhow::Result<ValueColumn> {
        let default = if self.columns.contains_key(&ValueColumn::DpoReward) {
            ValueColumn::DpoReward
        } else {
            ValueColumn::Reward
        };
        let column = asked.unwrap_or(default);
        if !self.columns.contains_key(&column) {
            let names: Vec<&str> = self.available().into_iter().map(ValueColumn::name).collect();
            anyhow::bail!(
                "--color-by {}: {table} has no {} values (to get them: {}); it can be coloured by: {}",
                column.name(),
                column.name(),
                column.source_hint(),
                names.join(", ")
            );
        }
        Ok(column)
    }

    pub fn of(&self, column: ValueColumn) -> f32 {
        self.columns.get(&column).map_or(0.0, |s| s.value)
    }
}
