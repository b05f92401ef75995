//! Preference pairs labelled like UltraFeedback's judged pairs, and win rates.
//!
//! Two SFT samples for a prompt are scored by the gold judge, and which one is "chosen" is a
//! seeded Bradley–Terry draw: P(a ≻ b) = σ((g_a − g_b) / τ). The temperature τ (default 1.0
//! score point) makes labels noisy the way human or GPT-4 judgements are: a 1-point gap is
//! labelled correctly 73% of the time, a 3-point gap 95%, equal scores are a coin flip.
//! Demonstration scores spread over ~±8 points, so most pairs are informative but a share
//! of labels are "wrong", which is what makes reward modelling and DPO non-trivial.

use crate::generator::write_atomic;
use crate::judge::gold_score;
use anyhow::{bail, Context, Result};
use rto_data::dataset::SplitMix64;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Default Bradley–Terry temperature, in gold-score points.
pub const BT_TEMPERATURE: f64 = 1.0;

/// A labelled pair. Serialized field names and order are the plain-string columns that
/// `rto_data::dataset::read_preference_pairs` reads with its default column names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabeledPair {
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
    pub score_chosen: f64,
    pub score_rejected: f64,
}

/// σ((g_a − g_b) / τ): the probability that a judge prefers `a`.
pub fn preference_probability(g_a: f64, g_b: f64, tau: f64) -> f64 {
    1.0 / (1.0 + (-(g_a - g_b) / tau).exp())
}

/// Labels one pair with one uniform draw from `rng` (so a seeded rng gives the same labels
/// for the same pairs in the same order).
pub fn label_pair(prompt: &str, a: &str, b: &str, tau: f64, rng: &mut SplitMix64) -> LabeledPair {
    let (g_a, g_b) = (gold_score(prompt, a), gold_score(prompt, b));
    let a_wins = rng.next_f64() < preference_probability(g_a, g_b, tau);
    let ((chosen, g_c), (rejected, g_r)) = if a_wins { ((a, g_a), (b, g_b)) } else { ((b, g_b), (a, g_a)) };
    LabeledPair {
        prompt: prompt.to_string(),
        chosen: chosen.to_string(),
        rejected: rejected.to_string(),
        score_chosen: g_c,
        score_rejected: g_r,
    }
}

/// What `label_samples` did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LabelStats {
    pub samples: usize,
    pub prompts: usize,
    pub pairs: usize,
    /// Pairs of identical responses: they carry no preference, so they are not written.
    pub skipped_identical: usize,
    /// Responses left without a partner (odd count for a prompt).
    pub unpaired: usize,
    /// Pairs whose label agrees with the higher gold score (ties count half).
    pub agree_with_gold: f64,
}

/// Pairs up sampled responses per prompt and labels each pair. Samples are grouped by prompt
/// text in order of first appearance; within a prompt, responses 0–1, 2–3, ... form pairs.
pub fn label_samples(samples: &[(String, String)], tau: f64, seed: u64) -> (Vec<LabeledPair>, LabelStats) {
    // (prompt, its responses) in order of first appearance.
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (p, r) in samples {
        let i = *index.entry(p.as_str()).or_insert_with(|| {
            groups.push((p.as_str(), Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push(r.as_str());
    }
    let mut rng = SplitMix64::for_stream(seed, rto_rng::Stream::Labels, 0);
    let mut stats = LabelStats { samples: samples.len(), prompts: groups.len(), ..LabelStats::default() };
    let mut pairs = Vec::new();
    for (prompt, responses) in &groups {
        stats.unpaired += responses.len() % 2;
        for two in responses.chunks_exact(2) {
            if two[0] == two[1] {
                stats.skipped_identical += 1;
                continue;
            }
            let pair = label_pair(prompt, two[0], two[1], tau, &mut rng);
            stats.agree_with_gold += match pair.score_chosen.partial_cmp(&pair.score_rejected) {
                Some(std::cmp::Ordering::Greater) => 1.0,
                Some(std::cmp::Ordering::Equal) => 0.5,
                _ => 0.0,
            };
            pairs.push(pair);
        }
    }
    stats.pairs = pairs.len();
    if stats.pairs > 0 {
        stats.agree_with_gold /= stats.pairs as f64;
    }
    (pairs, stats)
}

/// Writes pairs as JSON lines (columns prompt, chosen, rejected, score_chosen,
/// score_rejected), atomically.
pub fn write_pairs_jsonl(path: &Path, pairs: &[LabeledPair]) -> Result<()> {
    let mut text = String::new();
    for p in pairs {
        text.push_str(&serde_json::to_string(p).context("serializing a preference pair")?);
        text.push('\n');
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name =
        path.file_name().and_then(|n| n.to_str()).with_context(|| format!("{}: not a file name", path.display()))?;
    write_atomic(dir, name, text.as_bytes())
}

/// Win rate of `a` over `b` on paired scores (same prompts, same order): the share of
/// prompts where a scores higher, ties counting half, as AlpacaEval counts them.
pub fn win_rate(scores_a: &[f64], scores_b: &[f64]) -> Result<f64> {
    if scores_a.len() != scores_b.len() {
        bail!("win rate needs paired scores: {} vs {}", scores_a.len(), scores_b.len());
    }
    if scores_a.is_empty() {
        bail!("win rate of zero prompts is undefined");
    }
    let mut wins = 0.0;
    for (i, (a, b)) in scores_a.iter().zip(scores_b).enumerate() {
        wins += match a.partial_cmp(b) {
            Some(std::cmp::Ordering::Greater) => 1.0,
            Some(std::cmp::Ordering::Equal) => 0.5,
            Some(std::cmp::Ordering::Less) => 0.0,
            None => bail!("score {i} is NaN ({a} vs {b})"),
        };
    }
    Ok(wins / scores_a.len() as f64)
}
