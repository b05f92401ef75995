//! Padding-free forwards: the sequences of a [`SequenceBatch`] laid back to back in rows, with
//! attention confined to each sequence and rotary positions restarting at each (OpenRLHF's
//! `packing_samples`), and the LM head, score head and log-softmax run on real tokens only.
//!
//! Rows keep the padded batch's width C (its P + R), so attention costs no more per row than
//! the padded forward's while the batch needs fewer rows: sequences go into rows first-fit in
//! decreasing length. A padded batch of B rows costs B·C token slots; packed, N·C with N ≤ B,
//! and the vocabulary-wide head sees Σ r_i response tokens instead of B·R.
//!
//! Every output comes back in the padded layout ([B, R], zeros on padding), so a caller swaps
//! [`response_logprobs`](crate::response_logprobs) for [`packed_response_logprobs`] and reads the
//! same tensors; they agree within float rounding (the GEMMs see other shapes).

use crate::batch::{token_logprobs, SequenceBatch, TokenOutputs};
use crate::llama::blocked_bias;
use crate::model::CausalLm;
use anyhow::{ensure, Result};
use tch::{Device, Kind, Tensor};

/// A batch's sequences packed into rows, and the index maps back to the padded layout.
#[derive(Debug)]
pub struct PackedBatch {
    /// [N, C] token ids, `pad_id` after the last sequence of a row.
    pub input_ids: Tensor,
    /// [N, C] rotary positions: 0, 1, ... within each sequence.
    pub positions: Tensor,
    /// [N, C] 1 + the batch row of the sequence a slot holds, 0 for padding.
    segments: Tensor,
    /// [T] flat index into [N·C] of the hidden state that predicts each real response token,
    /// in (batch row, response position) order.
    predicting: Tensor,
    /// [T] flat index into [B·R] of each real response token.
    response_slots: Tensor,
    /// [T] the response tokens themselves.
    targets: Tensor,
    /// [B] flat index into [N·C] of each sequence's last token.
    last: Tensor,
    rows: i64,
    width: i64,
    batch_rows: i64,
    response_width: i64,
    real_tokens: i64,
    response_tokens: i64,
}

/// Where one sequence went: its row, its first column, and its prompt and response lengths.
#[derive(Debug, Clone, Copy)]
struct Placement {
    row: usize,
    offset: usize,
    prompt: usize,
    response: usize,
}

impl PackedBatch {
    /// Packs `batch` (read back to the host once: B·(P+R) ids) into rows of its own width.
    pub fn new(batch: &SequenceBatch, pad_id: i64) -> Result<Self> {
        let (b, width) = (batch.len(), (batch.prompt_width + batch.response_width) as usize);
        ensure!(b > 0, "packing an empty batch");
        let ids: Vec<i64> = Vec::try_from(batch.input_ids.to_device(Device::Cpu).view([-1]))?;
        let mask: Vec<i64> = Vec::try_from(batch.attention_mask.to_device(Device::Cpu).view([-1]))?;
        let p = batch.prompt_width as usize;
        // Each row's real tokens: the left-padded prompt's tail, then the response.
        let sequences: Vec<(usize, Vec<i64>)> = (0..b)
            .map(|i| {
                let row = &ids[i * width..(i + 1) * width];
                let row_mask = &mask[i * width..(i + 1) * width];
                let prompt = row_mask[..p].iter().filter(|&&m| m != 0).count();
                let tokens = row.iter().zip(row_mask).filter(|(_, &m)| m != 0).map(|(&t, _)| t).collect();
                (prompt, tokens)
            })
            .collect();
        let placements = first_fit_decreasing(&sequences, &batch.response_lengths, width);
        Self::lay_out(&sequences, &placements, batch, pad_id)
    }

    fn lay_out(
        sequences: &[(usize, Vec<i64>)],
        placements: &[Placement],
        batch: &SequenceBatch,
        pad_id: i64,
    ) -> Result<Self> {
        let width = (batch.prompt_width + batch.response_width) as usize;
        let rows = placements.iter().map(|p| p.row + 1).max().unwrap_or(0);
        let r = batch.response_width as usize;
        let (mut ids, mut positions, mut segments) =
            (vec![pad_id; rows * width], vec![0i64; rows * width], vec![0i64; rows * width]);
        let (mut predicting, mut response_slots, mut targets, mut last) = (vec![], vec![], vec![], vec![]);
        for (i, (place, (_, tokens))) in placements.iter().zip(sequences).enumerate() {
            let start = place.row * width + place.offset;
            for (k, &token) in tokens.iter().enumerate() {
                ids[start + k] = token;
                positions[start + k] = k as i64;
                segments[start + k] = i as i64 + 1;
            }
            for h in 0..place.response {
                let slot = start + place.prompt + h;
                predicting.push(slot as i64 - 1);
                targets.push(ids[slot]);
                response_slots.push((i * r + h) as i64);
            }
            last.push((start + tokens.len() - 1) as i64);
        }
        let device = batch.input_ids.device();
        let grid = |v: &[i64]| Tensor::from_slice(v).view([rows as i64, width as i64]).to_device(device);
        let flat = |v: &[i64]| Tensor::from_slice(v).to_device(device);
        Ok(Self {
            input_ids: grid(&ids),
            positions: grid(&positions),
            segments: grid(&segments),
            predicting: flat(&predicting),
            response_slots: flat(&response_slots),
            targets: flat(&targets),
            last: flat(&last),
            rows: rows as i64,
            width: width as i64,
            batch_rows: batch.len() as i64,
            response_width: batch.response_width,
            real_tokens: sequences.iter().map(|(_, t)| t.len() as i64).sum(),
            response_tokens: predicting.len() as i64,
        })
    }

    /// Rows after packing (N ≤ B).
    pub fn rows(&self) -> i64 {
        self.rows
    }

    /// Token slots of the padded batch, of the packed one, and real tokens.
    pub fn token_slots(&self) -> (i64, i64, i64) {
        (self.batch_rows * self.width, self.rows * self.width, self.real_tokens)
    }

    /// Response positions the head runs on: padded B·R, packed Σ r_i.
    pub fn head_positions(&self) -> (i64, i64) {
        (self.batch_rows * self.response_width, self.response_tokens)
    }

    /// Additive attention bias [N, 1, C, C]: a query sees the keys of its own sequence up to
    /// itself, nothing else (padding sees nothing; its outputs are never read).
    fn bias(&self, kind: Kind) -> Tensor {
        let (n, c) = (self.rows, self.width);
        let same = self.segments.view([n, 1, c, 1]).eq_tensor(&self.segments.view([n, 1, 1, c]));
        let real = self.segments.ne(0).view([n, 1, 1, c]);
        let device = self.segments.device();
        let keys = Tensor::arange(c, (Kind::Int64, device)).view([1, -1]);
        let queries = Tensor::arange(c, (Kind::Int64, device)).view([-1, 1]);
        let causal = keys.le_tensor(&queries).view([1, 1, c, c]);
        blocked_bias(&same.logical_and(&real).logical_and(&causal).logical_not(), kind)
    }

    /// Final hidden states, flattened: [N·C, H].
    fn hidden(&self, model: &CausalLm) -> Tensor {
        let bias = self.bias(model.decoder.embedding().kind());
        let hidden = model.decoder.forward_with_bias(&self.input_ids, &bias, &self.positions, None);
        hidden.view([self.rows * self.width, -1])
    }

    /// Values [T] at the real response tokens, back into the padded [B, R] layout (zeros elsewhere).
    fn to_padded(&self, values: &Tensor) -> Tensor {
        let zeros = Tensor::zeros([self.batch_rows * self.response_width], (values.kind(), values.device()));
        zeros.index_put(&[Some(&self.response_slots)], values, false).view([self.batch_rows, self.response_width])
    }
}

/// Rows of `width` slots, each sequence into the first row with room, longest first (ties by
/// batch order, so the layout is a function of the lengths alone).
fn first_fit_decreasing(sequences: &[(usize, Vec<i64>)], responses: &[i64], width: usize) -> Vec<Placement> {
    let mut order: Vec<usize> = (0..sequences.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(sequences[i].1.len()), i));
    let mut used: Vec<usize> = Vec::new();
    let mut placements = vec![Placement { row: 0, offset: 0, prompt: 0, response: 0 }; sequences.len()];
    for i in order {
        let len = sequences[i].1.len();
        let row = used.iter().position(|&u| u + len <= width).unwrap_or_else(|| {
            used.push(0);
            used.len() - 1
        });
        placements[i] = Placement { row, offset: used[row], prompt: sequences[i].0, response: responses[i] as usize };
        used[row] += len;
    }
    placements
}

/// [`crate::response_logprobs`] through the packed forward: log-probs (and entropies) [B, R].
pub fn packed_response_logprobs(model: &CausalLm, packed: &PackedBatch, with_entropy: bool) -> TokenOutputs {
    let hidden = packed.hidden(model).index_select(0, &packed.predicting);
    let logits = model.logits(&hidden).to_kind(Kind::Float).unsqueeze(0);
    let ones = Tensor::ones([1, packed.response_tokens], (Kind::Float, logits.device()));
    let out = token_logprobs(&logits, &packed.targets.unsqueeze(0), &ones, with_entropy);
    TokenOutputs {
        logprobs: packed.to_padded(&out.logprobs.squeeze_dim(0)),
        entropy: out.entropy.map(|e| packed.to_padded(&e.squeeze_dim(0))),
    }
}

/// [`crate::response_values`] through the packed forward: V(s_h) [B, R].
pub fn packed_response_values(model: &CausalLm, packed: &PackedBatch) -> Tensor {
    let hidden = packed.hidden(model).index_select(0, &packed.predicting);
    packed.to_padded(&model.score(&hidden).to_kind(Kind::Float))
}

/// [`crate::sequence_scores`] through the packed forward: the score at each last token [B].
pub fn packed_sequence_scores(model: &CausalLm, packed: &PackedBatch) -> Tensor {
    let hidden = packed.hidden(model).index_select(0, &packed.last);
    model.score(&hidden).to_kind(Kind::Float)
}

/// A batch ready for forwards: the padded layout, and the packed one when packing is on. The
/// outputs are the padded layout's either way, so callers do not care which forward ran.
pub struct ForwardBatch<'a> {
    pub batch: &'a SequenceBatch,
    packed: Option<PackedBatch>,
}

impl<'a> ForwardBatch<'a> {
    /// `batch` packed (`--packing-samples`) or as it is.
    pub fn new(batch: &'a SequenceBatch, packing: bool, pad_id: i64) -> Result<Self> {
        let packed = packing.then(|| PackedBatch::new(batch, pad_id)).transpose()?;
        Ok(Self { batch, packed })
    }

    /// Token slots the forward costs, those the padded layout costs, and the real tokens:
    /// (slots, padded slots, real).
    pub fn token_slots(&self) -> (i64, i64, i64) {
        let real = self.batch.attention_mask.sum(Kind::Int64).int64_value(&[]);
        let padded = self.batch.len() as i64 * (self.batch.prompt_width + self.batch.response_width);
        let slots = self.packed.as_ref().map_or(padded, |p| p.token_slots().1);
        (slots, padded, real)
    }

    pub fn logprobs(&self, model: &CausalLm, with_entropy: bool) -> TokenOutputs {
        match &self.packed {
            Some(p) => packed_response_logprobs(model, p, with_entropy),
            None => crate::batch::response_logprobs(model, self.batch, with_entropy),
        }
    }

    pub fn values(&self, model: &CausalLm) -> Tensor {
        match &self.packed {
            Some(p) => packed_response_values(model, p),
            None => crate::batch::response_values(model, self.batch),
        }
    }

    pub fn sequence_scores(&self, model: &CausalLm) -> Tensor {
        match &self.packed {
            Some(p) => packed_sequence_scores(model, p),
            None => crate::batch::sequence_scores(model, self.batch),
        }
    }
}

impl<'a> From<&'a SequenceBatch> for ForwardBatch<'a> {
    fn from(batch: &'a SequenceBatch) -> Self {
        Self { batch, packed: None }
    }
}
