//! Packed forwards: the layout by hand, and log-probs, entropies, values, sequence scores and
//! gradients equal to the padded forward's within 1e-5 (fp32), for an untied GQA Llama and a
//! tied Qwen2 with q/k/v biases.

use crate::common::{batch, llama_gqa, model, qwen2_tied, tokens};
use rto_model::packing::{packed_response_logprobs, packed_response_values, packed_sequence_scores, PackedBatch};
use rto_model::{response_logprobs, response_values, sequence_scores, Head, ModelConfig, SequenceBatch};
use tch::{Device, Kind, Tensor};

/// Prompts 1, 1, 4, 1 and responses 1, 2, 4, 1 tokens: sequences of 2, 3, 8 and 2 in a padded
/// batch of width 4 + 4.
fn uneven_batch() -> SequenceBatch {
    batch(&[1, 1, 4, 1], &[1, 2, 4, 1], 7)
}

#[test]
fn sequences_go_first_fit_longest_first_with_positions_restarting() {
    let prompts = tokens(&[1, 1, 4, 1], 7);
    let responses = tokens(&[1, 2, 4, 1], 8);
    let padded = SequenceBatch::new(&prompts, &responses, 0, Device::Cpu).unwrap();
    let packed = PackedBatch::new(&padded, 0).unwrap();
    // Longest first: sequence 2 (8 tokens) fills row 0; 1 (3), then 0 (2), then 3 (2) share row 1.
    assert_eq!(packed.rows(), 2);
    let seq = |i: usize| [prompts[i].clone(), responses[i].clone()].concat();
    let row1: Vec<i64> = [seq(1), seq(0), seq(3), vec![0]].concat();
    let ids: Vec<i64> = Vec::try_from(packed.input_ids.view([-1])).unwrap();
    assert_eq!(&ids[..8], seq(2).as_slice());
    assert_eq!(&ids[8..], row1.as_slice());
    let positions: Vec<i64> = Vec::try_from(packed.positions.view([-1])).unwrap();
    assert_eq!(positions, [0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 0, 1, 0, 1, 0]);
    // 4 rows × 8 slots padded, 2 × 8 packed, 15 real tokens; the head: 4 × 4 vs 8 responses.
    assert_eq!(packed.token_slots(), (32, 16, 15));
    assert_eq!(packed.head_positions(), (16, 8));
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// Asserts |packed − padded| ≤ 1e-5 · max(1, scale of padded).
fn assert_close(what: &str, packed: &Tensor, padded: &Tensor) {
    assert_eq!(packed.size(), padded.size(), "{what}: shapes");
    let scale = padded.abs().max().double_value(&[]).max(1.0);
    let diff = max_diff(packed, padded);
    assert!(diff <= 1e-5 * scale, "{what}: packed differs from padded by {diff:e} (scale {scale:.2})");
}

fn assert_lm_outputs_match(config: ModelConfig, label: &str) {
    let lm = model(config, Head::LanguageModel, 3);
    let padded = uneven_batch();
    let packed = PackedBatch::new(&padded, 0).unwrap();
    let (a, b) = tch::no_grad(|| (packed_response_logprobs(&lm, &packed, true), response_logprobs(&lm, &padded, true)));
    assert_close(&format!("{label} logprobs"), &a.logprobs, &b.logprobs);
    assert_close(&format!("{label} entropy"), a.entropy.as_ref().unwrap(), b.entropy.as_ref().unwrap());
    // The case can fail: the sequences' log-probs are far from zero and from each other.
    assert!(b.logprobs.abs().max().double_value(&[]) > 0.5, "{label}: log-probs too small to test anything");
}

#[test]
fn packed_logprobs_and_entropies_equal_the_padded_forward() {
    assert_lm_outputs_match(llama_gqa(), "llama");
    assert_lm_outputs_match(qwen2_tied(), "qwen2 tied");
}

#[test]
fn packed_values_and_sequence_scores_equal_the_padded_forward() {
    for (config, label) in [(llama_gqa(), "llama"), (qwen2_tied(), "qwen2 tied")] {
        let critic = model(config, Head::Score, 4);
        tch::no_grad(|| {
            let score = critic.vs.variables()["score.weight"].shallow_clone();
            score.shallow_clone().copy_(&(Tensor::ones_like(&score) * 0.3));
        });
        let padded = uneven_batch();
        let packed = PackedBatch::new(&padded, 0).unwrap();
        tch::no_grad(|| {
            assert_close(
                &format!("{label} values"),
                &packed_response_values(&critic, &packed),
                &response_values(&critic, &padded),
            );
            let (a, b) = (packed_sequence_scores(&critic, &packed), sequence_scores(&critic, &padded));
            assert_close(&format!("{label} scores"), &a, &b);
            assert!(max_diff(&b.get(0), &b.get(1)) > 1e-3, "{label}: scores alike, the test sees nothing");
        });
    }
}

/// The gradient of every variable for a loss on log-probs, packed vs padded.
#[test]
fn packed_gradients_equal_the_padded_backward() {
    let lm = model(llama_gqa(), Head::LanguageModel, 5);
    let padded = uneven_batch();
    let packed = PackedBatch::new(&padded, 0).unwrap();
    let gradients = |loss: Tensor| {
        for (_, mut t) in lm.vs.variables() {
            t.zero_grad();
        }
        lm.backward(&loss);
        let mut grads: Vec<(String, Tensor)> = lm.vs.variables().into_iter().collect();
        grads.sort_by(|a, b| a.0.cmp(&b.0));
        grads
            .into_iter()
            .map(|(name, t)| {
                let grad = t.grad();
                assert!(grad.defined(), "{name}: no gradient");
                (name, grad.copy())
            })
            .collect::<Vec<_>>()
    };
    let weights = Tensor::from_slice(&[1.0f32, -0.5, 2.0, 0.25]).view([4, 1]);
    let loss = |logprobs: Tensor| (logprobs * &weights).sum(Kind::Float);
    let ours = gradients(loss(packed_response_logprobs(&lm, &packed, false).logprobs));
    let plain = gradients(loss(response_logprobs(&lm, &padded, false).logprobs));
    for ((name, a), (_, b)) in ours.iter().zip(&plain) {
        let scale = b.abs().max().double_value(&[]);
        assert!(scale > 0.0, "{name}: zero gradient in the padded backward");
        let diff = max_diff(a, b) / scale;
        assert!(diff <= 1e-5, "{name}: packed gradient differs by {diff:e} (relative)");
    }
}

/// One sequence packs into one row, its padded row without the left padding's shift: the
/// same ids when the prompt is the longest (no padding at all).
#[test]
fn packing_a_single_sequence_is_its_padded_row() {
    let lm = model(llama_gqa(), Head::LanguageModel, 6);
    let padded = batch(&[3], &[4], 9);
    let packed = PackedBatch::new(&padded, 0).unwrap();
    assert_eq!(packed.rows(), 1);
    let ids: Vec<i64> = Vec::try_from(packed.input_ids.view([-1])).unwrap();
    let expected: Vec<i64> = Vec::try_from(padded.input_ids.view([-1])).unwrap();
    assert_eq!(ids, expected);
    tch::no_grad(|| {
        let (a, b) = (packed_response_logprobs(&lm, &packed, false), response_logprobs(&lm, &padded, false));
        assert_close("single", &a.logprobs, &b.logprobs);
    });
}
