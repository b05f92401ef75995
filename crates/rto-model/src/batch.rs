//! Prompt/response batches and the per-token quantities every stage reads from them.
//!
//! One layout everywhere: each row is `[left-padded prompt | right-padded response]`, prompt
//! width P and response width R shared by the batch. Response tokens then sit in columns
//! P..P+R of every row, and the logits predicting them in columns P-1..P+R-1, so stages can run
//! the LM head (the costly full-vocabulary part) on the response columns only.

use crate::model::CausalLm;
use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

#[derive(Debug)]
pub struct SequenceBatch {
    /// [B, P+R] token ids; padding holds `pad_id`.
    pub input_ids: Tensor,
    /// [B, P+R] 1 for real tokens, 0 for padding.
    pub attention_mask: Tensor,
    /// [B, R] 1.0 on response tokens, 0.0 on padding.
    pub response_mask: Tensor,
    pub prompt_width: i64,
    pub response_width: i64,
    pub response_lengths: Vec<i64>,
}

impl SequenceBatch {
    /// Packs token lists into the shared layout. Every response must hold at least one token.
    pub fn new(prompts: &[Vec<i64>], responses: &[Vec<i64>], pad_id: i64, device: Device) -> Result<Self> {
        if prompts.len() != responses.len() || prompts.is_empty() {
            bail!(
                "batch needs as many responses as prompts, and at least one ({} vs {})",
                prompts.len(),
                responses.len()
            );
        }
        if let Some(i) = prompts.iter().position(Vec::is_empty) {
            bail!("batch row {i}: empty prompt");
        }
        if let Some(i) = responses.iter().position(Vec::is_empty) {
            bail!("batch row {i}: empty response");
        }
        let p = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let r = responses.iter().map(Vec::len).max().unwrap_or(0);
        let width = p + r;
        let mut ids = Vec::with_capacity(prompts.len() * width);
        let mut mask = Vec::with_capacity(prompts.len() * width);
        let mut response_mask = Vec::with_capacity(prompts.len() * r);
        for (prompt, response) in prompts.iter().zip(responses) {
            let left = p - prompt.len();
            let right = r - response.len();
            ids.extend(std::iter::repeat_n(pad_id, left));
            ids.extend(prompt.iter().chain(response));
            ids.extend(std::iter::repeat_n(pad_id, right));
            mask.extend(std::iter::repeat_n(0i64, left));
            mask.extend(std::iter::repeat_n(1i64, prompt.len() + response.len()));
            mask.extend(std::iter::repeat_n(0i64, right));
            response_mask.extend(std::iter::repeat_n(1f32, response.len()));
            response_mask.extend(std::iter::repeat_n(0f32, right));
        }
        let b = prompts.len() as i64;
        Ok(Self {
            input_ids: Tensor::from_slice(&ids).view([b, width as i64]).to_device(device),
            attention_mask: Tensor::from_slice(&mask).view([b, width as i64]).to_device(device),
            response_mask: Tensor::from_slice(&response_mask).view([b, r as i64]).to_device(device),
            prompt_width: p as i64,
            response_width: r as i64,
            response_lengths: responses.iter().map(|r| r.len() as i64).collect(),
        })
    }

    pub fn len(&self) -> usize {
        self.response_lengths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.response_lengths.is_empty()
    }

    /// [B, R] response token ids (padding included).
    pub fn response_ids(&self) -> Tensor {
        self.input_ids.narrow(1, self.prompt_width, self.response_width)
    }

    /// Column of each row's last real token (the response's last, e.g. EOS).
    pub fn last_token_index(&self) -> Tensor {
        let idx: Vec<i64> = self.response_lengths.iter().map(|l| self.prompt_width + l - 1).collect();
        Tensor::from_slice(&idx).to_device(self.input_ids.device())
    }

    /// Hidden states [B, R, H] at the positions that predict each response token.
    pub fn response_hidden(&self, model: &CausalLm) -> Tensor {
        let hidden = model.hidden_states(&self.input_ids, &self.attention_mask);
        hidden.narrow(1, self.prompt_width - 1, self.response_width)
    }
}

/// Per-token outputs of a policy-style model on a batch's responses.
#[derive(Debug)]
pub struct TokenOutputs {
    /// [B, R] log π(y_h | x, y_<h), zero on padding.
    pub logprobs: Tensor,
    /// [B, R] entropy of the full next-token distribution, when asked for.
    pub entropy: Option<Tensor>,
}

/// log-probabilities (and optionally entropies) of the response tokens under `model`.
///
/// logp = logit[y] − logsumexp(logits): the gather-then-subtract form avoids materialising a
/// second [B, R, V] tensor for the full log-softmax.
pub fn response_logprobs(model: &CausalLm, batch: &SequenceBatch, with_entropy: bool) -> TokenOutputs {
    let hidden = batch.response_hidden(model);
    let logits = model.logits(&hidden).to_kind(Kind::Float);
    token_logprobs(&logits, &batch.response_ids(), &batch.response_mask, with_entropy)
}

/// The shared math of [`response_logprobs`], on logits [B, R, V] and targets [B, R].
pub fn token_logprobs(logits: &Tensor, targets: &Tensor, mask: &Tensor, with_entropy: bool) -> TokenOutputs {
    let lse = logits.logsumexp([-1], false);
    let picked = logits.gather(-1, &targets.unsqueeze(-1), false).squeeze_dim(-1);
    let logprobs = (picked - &lse) * mask;
    let entropy = with_entropy.then(|| {
        let probs = logits.softmax(-1, Kind::Float);
        let expected_logit = (&probs * logits).sum_dim_intlist([-1].as_slice(), false, Kind::Float);
        (lse - expected_logit) * mask
    });
    TokenOutputs { logprobs, entropy }
}

/// The score head read at each row's last real token: the sequence reward [B].
pub fn sequence_scores(model: &CausalLm, batch: &SequenceBatch) -> Tensor {
    let hidden = model.hidden_states(&batch.input_ids, &batch.attention_mask);
    let index = batch.last_token_index().view([-1, 1, 1]).expand([-1, 1, hidden.size()[2]], false);
    let last = hidden.gather(1, &index, false).squeeze_dim(1);
    model.score(&last).to_kind(Kind::Float)
}

/// The score head at the positions that precede each response token: values V(s_h) [B, R].
pub fn response_values(model: &CausalLm, batch: &SequenceBatch) -> Tensor {
    model.score(&batch.response_hidden(model)).to_kind(Kind::Float) * &batch.response_mask
}
