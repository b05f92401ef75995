//! What dpo-train and rm-train share: reading and encoding preference pairs, packing a set of
//! pairs into one batch of 2B rows (the B chosen rows, then the B rejected rows, so one forward
//! serves both sides and `halves` splits the result), and evaluation over a split in chunks.

use crate::encode::{check_batch_width, EncodedPair, Encoder, LengthLimits};
use crate::trainer::Metrics;
use anyhow::{bail, Result};
use rto_data::dataset::{read_preference_pairs, ColumnNames, DatasetStats};
use rto_dist::ProcessGroup;
use rto_model::{response_logprobs, CausalLm, SequenceBatch, TextTokenizer};
use serde_json::Value;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Every usable pair of `path`, with skip counts. Fails (naming the file) when none is left.
pub fn read_pairs(
    path: &Path,
    columns: &ColumnNames,
    limits: &LengthLimits,
    tokenizer: &TextTokenizer,
    model: &CausalLm,
    model_dir: &Path,
) -> Result<(Vec<EncodedPair>, DatasetStats)> {
    let pairs = read_preference_pairs(path, columns)?;
    let encoder = Encoder::new(tokenizer, limits.clone())?;
    let (encoded, stats) = encoder.pairs(&pairs, &path.display().to_string())?;
    let widest = |f: fn(&EncodedPair) -> usize| encoded.iter().map(f).max().unwrap_or(0);
    let widest_response = widest(|p| p.chosen.len().max(p.rejected.len()));
    check_batch_width(widest(|p| p.prompt.len()), widest_response, model.config.max_position_embeddings, model_dir)?;
    Ok((encoded, stats))
}

/// One batch of 2B rows: row i is pair i's chosen response, row B+i its rejected response.
pub fn pair_batch(pairs: &[&EncodedPair], pad_id: i64, device: Device) -> Result<SequenceBatch> {
    let prompts: Vec<Vec<i64>> = pairs.iter().chain(pairs).map(|p| p.prompt.clone()).collect();
    let responses: Vec<Vec<i64>> =
        pairs.iter().map(|p| p.chosen.clone()).chain(pairs.iter().map(|p| p.rejected.clone())).collect();
    SequenceBatch::new(&prompts, &responses, pad_id, device)
}

/// Summed response log-probs per row [2B] (the Σ lp of DESIGN.md §4), with the graph.
pub fn summed_logprobs(model: &CausalLm, batch: &SequenceBatch) -> Tensor {
    response_logprobs(model, batch, false).logprobs.sum_dim_intlist([1].as_slice(), false, Kind::Float)
}

/// (chosen, rejected) halves of a per-row tensor [2B] built by [`pair_batch`].
pub fn halves(rows: &Tensor) -> (Tensor, Tensor) {
    let b = rows.size()[0] / 2;
    (rows.narrow(0, 0, b), rows.narrow(0, b, b))
}

/// Response lengths (chosen, rejected) of `pairs` as f32 tensors [B] on `device`.
pub fn response_lengths(pairs: &[&EncodedPair], device: Device) -> (Tensor, Tensor) {
    let lengths = |f: fn(&EncodedPair) -> usize| {
        let v: Vec<f32> = pairs.iter().map(|p| f(p) as f32).collect();
        Tensor::from_slice(&v).to_device(device)
    };
    (lengths(|p| p.chosen.len()), lengths(|p| p.rejected.len()))
}

/// Real (non-padding) tokens a forward over `batch` processes, for tokens/s.
pub fn batch_tokens(batch: &SequenceBatch) -> f64 {
    batch.attention_mask.sum(Kind::Int64).int64_value(&[]) as f64
}

/// Means of a scalar tensor [B] as f64.
pub fn mean(t: &Tensor) -> f64 {
    t.mean(Kind::Double).double_value(&[])
}

/// Runs `f` (no gradients) over `items` in chunks of `chunk` and averages its metrics weighted
/// by chunk size, so the result is the mean over the whole split. Empty split → no metrics.
/// Each rank of `group` takes its `dist::share` of the chunks; the weighted sums are summed
/// over ranks, so every rank gets the mean over the whole split.
pub fn evaluate_in_chunks<T>(
    group: &ProcessGroup,
    items: &[T],
    chunk: usize,
    mut f: impl FnMut(&[T]) -> Result<Metrics>,
) -> Result<Metrics> {
    let chunks: Vec<&[T]> = items.chunks(chunk.max(1)).collect();
    let mut total = Metrics::new();
    for part in &chunks[crate::dist::my_share(group, chunks.len())] {
        let metrics = tch::no_grad(|| f(part))?;
        for (key, value) in metrics {
            *total.entry(key).or_default() += value * part.len() as f64;
        }
    }
    let mut total = crate::dist::reduce_metrics(group, total)?;
    for value in total.values_mut() {
        *value /= items.len() as f64;
    }
    Ok(total)
}

/// One training micro batch of a pair task (dpo, rm): `forward` on the `items` of `train`, its
/// loss scaled by the micro batch's share of the batch, then the backward of `model`, the
/// trained model. Returns its metrics.
pub fn train_micro_batch<T>(
    model: &CausalLm,
    train: &[T],
    items: &[usize],
    scale: f64,
    forward: impl Fn(&[&T]) -> Result<(Tensor, Metrics)>,
) -> Result<Metrics> {
    let picked: Vec<&T> = items.iter().map(|&i| &train[i]).collect();
    let (loss, metrics) = forward(&picked)?;
    model.backward(&(loss * scale));
    Ok(metrics)
}

/// Held-out metrics of a pair task in chunks of `chunk`; the `tokens` count is a training-only figure.
pub fn evaluate_pairs<T>(
    group: &ProcessGroup,
    eval: &[T],
    chunk: usize,
    forward: impl Fn(&[&T]) -> Result<(Tensor, Metrics)>,
) -> Result<Metrics> {
    let mut metrics = evaluate_in_chunks(group, eval, chunk, |part| {
        let refs: Vec<&T> = part.iter().collect();
        Ok(forward(&refs)?.1)
    })?;
    metrics.remove("tokens");
    Ok(metrics)
}

/// Metrics from any serializable struct of numbers (e.g. `PreferenceMetrics`, whose serde
/// names are TRL's).
pub fn metrics_of(value: &impl serde::Serialize) -> Result<Metrics> {
    let Value::Object(map) = serde_json::to_value(value)? else { bail!("metrics must serialize to an object") };
    Ok(map.into_iter().filter_map(|(k, v)| v.as_f64().map(|v| (k, v))).collect())
}
