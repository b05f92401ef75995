//! Gradient checkpointing: the gradients of every variable equal those of the plain backward
//! (fp32, within 1e-6 relative per tensor) on losses that use several forwards, for LM and
//! score heads, untied and tied embeddings; no_grad and frozen forwards are untouched.

use crate::common::{batch, llama_gqa, model, qwen2_tied};
use rto_model::{response_logprobs, response_values, sequence_scores, CausalLm, Head, SequenceBatch};
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

/// A DPO-shaped loss over two separate forwards (chosen, then rejected).
fn preference_loss(model: &CausalLm) -> Tensor {
    let chosen = batch(&[4, 2, 5], &[3, 6, 1], 10);
    let rejected = batch(&[3, 5, 2], &[5, 2, 4], 20);
    let sum = |b: &SequenceBatch| {
        response_logprobs(model, b, false).logprobs.sum_dim_intlist([1].as_slice(), false, Kind::Float)
    };
    let margin = sum(&chosen) - sum(&rejected);
    -(margin * 0.1).log_sigmoid().mean(Kind::Float)
}

/// A reward-model loss (Bradley–Terry on sequence scores) plus a critic's value regression,
/// three forwards through the score head.
fn score_loss(model: &CausalLm) -> Tensor {
    let chosen = sequence_scores(model, &batch(&[4, 2], &[3, 5], 30));
    let rejected = sequence_scores(model, &batch(&[2, 4], &[4, 1], 40));
    let values_batch = batch(&[3, 5, 1], &[4, 2, 6], 50);
    let values = response_values(model, &values_batch);
    let value_loss = ((values - 0.5).square() * &values_batch.response_mask).mean(Kind::Float);
    -(chosen - rejected).log_sigmoid().mean(Kind::Float) + value_loss
}

fn zero_grads(model: &CausalLm) {
    for (_, mut t) in model.vs.variables() {
        t.zero_grad();
    }
}

/// The gradient of every variable after `model.backward(loss(model))`, from zero.
fn gradients(model: &CausalLm, loss: &dyn Fn(&CausalLm) -> Tensor) -> BTreeMap<String, Tensor> {
    zero_grads(model);
    model.backward(&loss(model));
    model.vs.variables().into_iter().map(|(name, t)| (name, t.grad().copy())).collect()
}

/// max |a − b| / max |b| per variable; panics if a gradient is missing or zero (a test of
/// nothing) in the plain backward.
fn relative_differences(ours: &BTreeMap<String, Tensor>, plain: &BTreeMap<String, Tensor>) -> BTreeMap<String, f64> {
    plain
        .iter()
        .map(|(name, expected)| {
            let got = &ours[name];
            assert!(got.defined() && expected.defined(), "{name}: no gradient");
            let scale = expected.abs().max().double_value(&[]);
            assert!(scale > 0.0, "{name}: zero gradient in the plain backward");
            (name.clone(), (got - expected).abs().max().double_value(&[]) / scale)
        })
        .collect()
}

/// Gradients with checkpointing against the plain backward of the same model and loss, and
/// the tape: one entry per forward before the backward, none after.
fn assert_same_gradients(label: &str, model: &mut CausalLm, loss: &dyn Fn(&CausalLm) -> Tensor, forwards: usize) {
    let plain = gradients(model, loss);
    model.set_gradient_checkpointing(true);
    let counted = |m: &CausalLm| {
        let value = loss(m);
        assert_eq!(m.decoder.pending_checkpoints(), forwards, "{label}: one tape entry per training forward");
        value
    };
    let checkpointed = gradients(model, &counted);
    assert_eq!(model.decoder.pending_checkpoints(), 0, "{label}: the backward empties the tape");
    model.set_gradient_checkpointing(false);
    let differences = relative_differences(&checkpointed, &plain);
    let (worst, value) = differences.iter().max_by(|a, b| a.1.total_cmp(b.1)).unwrap();
    eprintln!("{label}: {} tensors, largest relative difference {value:.2e} ({worst})", differences.len());
    for (name, difference) in &differences {
        assert!(*difference <= 1e-6, "{label}: {name}: relative difference {difference:.2e}");
    }
}

#[test]
fn checkpointed_gradients_equal_the_plain_backward_for_two_forward_preference_losses() {
    let mut llama = model(llama_gqa(), Head::LanguageModel, 1);
    assert_same_gradients("llama gqa, untied", &mut llama, &preference_loss, 2);
    let mut qwen = model(qwen2_tied(), Head::LanguageModel, 2);
    assert!(qwen.vs.variables().keys().all(|name| name != "lm_head.weight"), "the qwen2 model is tied");
    assert_same_gradients("qwen2, tied embeddings", &mut qwen, &preference_loss, 2);
}

#[test]
fn checkpointed_gradients_equal_the_plain_backward_for_the_score_head() {
    let mut llama = model(llama_gqa(), Head::Score, 3);
    assert_same_gradients("llama gqa, score head", &mut llama, &score_loss, 3);
    let mut qwen = model(qwen2_tied(), Head::Score, 4);
    assert_same_gradients("qwen2, score head", &mut qwen, &score_loss, 3);
}

#[test]
fn a_training_forward_left_out_of_the_loss_is_dropped_at_the_next_backward() {
    let mut model = model(llama_gqa(), Head::LanguageModel, 5);
    let plain = gradients(&model, &preference_loss);
    model.set_gradient_checkpointing(true);
    let with_unused = |m: &CausalLm| {
        let unused = response_logprobs(m, &batch(&[2, 3], &[4, 4], 60), false);
        assert_eq!(m.decoder.pending_checkpoints(), 1);
        drop(unused);
        preference_loss(m)
    };
    let checkpointed = gradients(&model, &with_unused);
    assert_eq!(model.decoder.pending_checkpoints(), 0, "the unused forward's checkpoints are gone");
    for (name, difference) in relative_differences(&checkpointed, &plain) {
        assert!(difference <= 1e-6, "{name}: relative difference {difference:.2e}");
    }
}

#[test]
fn no_grad_and_frozen_forwards_take_the_plain_path_bitwise() {
    let mut model = model(qwen2_tied(), Head::LanguageModel, 6);
    let b = batch(&[4, 2, 5], &[3, 6, 1], 70);
    let logits = |m: &CausalLm| m.forward_logits(&b.input_ids, &b.attention_mask);
    let plain = tch::no_grad(|| logits(&model));
    model.set_gradient_checkpointing(true);
    let checkpointed = tch::no_grad(|| logits(&model));
    assert_eq!(model.decoder.pending_checkpoints(), 0, "a no_grad forward records nothing");
    assert!(checkpointed.equal(&plain), "no_grad logits changed with checkpointing on");

    model.vs.freeze();
    let frozen = logits(&model);
    assert_eq!(model.decoder.pending_checkpoints(), 0, "a frozen model's forward records nothing");
    assert!(!frozen.requires_grad() && frozen.equal(&plain), "frozen logits changed with checkpointing on");
}

#[test]
fn training_forward_outputs_match_the_plain_forward() {
    let mut model = model(llama_gqa(), Head::LanguageModel, 7);
    let b = batch(&[4, 2, 5], &[3, 6, 1], 80);
    let plain = model.forward_logits(&b.input_ids, &b.attention_mask);
    model.set_gradient_checkpointing(true);
    let checkpointed = model.forward_logits(&b.input_ids, &b.attention_mask);
    assert!(checkpointed.requires_grad(), "the checkpointed forward still feeds a graph");
    let scale = plain.abs().max().double_value(&[]);
    let difference = (&checkpointed - &plain).abs().max().double_value(&[]) / scale;
    assert!(difference <= 1e-6, "training-forward logits differ by {difference:.2e} relative");
}

#[test]
#[should_panic(expected = "call model.backward(&loss) instead of loss.backward()")]
fn a_bare_backward_on_a_checkpointed_model_is_caught_at_the_next_training_forward() {
    let mut model = model(llama_gqa(), Head::LanguageModel, 8);
    model.set_gradient_checkpointing(true);
    preference_loss(&model).backward();
    let _ = preference_loss(&model);
}
