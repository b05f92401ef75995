//! Gradient checkpointing per decoder layer: a training forward keeps only each layer's input,
//! and the backward recomputes one layer at a time to get its gradients.
//!
//! tch has neither `torch.utils.checkpoint` nor custom autograd functions, so the backward
//! is done in two steps. The forward runs the layers without a graph, records each layer's
//! input (the checkpoint) on the model's [`Tape`], and hands the head a *leaf*: the last
//! layer's output, detached, requiring grad. `loss.backward()` then stops at that leaf,
//! leaving dL/d(leaf) in its `grad`, and [`Tape::replay`] walks the layers from last to first:
//! recompute the layer with a graph from its detached input, back-propagate the upstream
//! gradient with `(out · upstream).sum().backward()` (whose d/d(out) is exactly `upstream`,
//! so the weights' gradients accumulate as in one graph), and take the input's gradient as the
//! next upstream; the embedding last. A tied embedding gets the LM head's share from
//! `loss.backward()` and the input's share from the replay, accumulated in one `grad`.
//!
//! The contract: every backward of a loss that used a checkpointed model's training forwards
//! goes through `CausalLm::backward`, which runs both steps. It replays every recorded forward
//! whose leaf received a gradient (a loss may use several: chosen and rejected, micro batches)
//! and drops the others, so a forward whose output never reached a loss holds its checkpoints
//! only until the model's next backward. A bare `loss.backward()` is caught at the model's
//! next training forward (a recorded output holding a gradient), with a panic that says so.

use crate::llama::{DecoderLayer, EmbeddingForward};
use std::cell::RefCell;
use tch::{Kind, Tensor};

/// What the replay of one training forward needs.
#[derive(Debug)]
struct Recorded {
    input_ids: Tensor,
    /// The input of layer i, [B, T, H], without a graph.
    layer_inputs: Vec<Tensor>,
    rope: (Tensor, Tensor),
    bias: Tensor,
    /// The last layer's output: the leaf the head's graph starts from.
    output: Tensor,
}

/// The training forwards of one model waiting for their backward.
#[derive(Debug, Default)]
pub(crate) struct Tape {
    recorded: RefCell<Vec<Recorded>>,
}

impl Tape {
    pub(crate) fn len(&self) -> usize {
        self.recorded.borrow().len()
    }

    /// Runs `layers` on the embedded tokens `embedded` without a graph, keeps each layer's
    /// input, and returns the last output as a leaf that requires grad.
    pub(crate) fn record(
        &self,
        layers: &[DecoderLayer],
        input_ids: &Tensor,
        embedded: &Tensor,
        rope: (Tensor, Tensor),
        bias: &Tensor,
    ) -> Tensor {
        self.check_no_bare_backward();
        let mut layer_inputs = Vec::with_capacity(layers.len());
        let output = tch::no_grad(|| {
            let mut xs = embedded.shallow_clone();
            for layer in layers {
                let next = layer.forward(&xs, &rope, bias, None);
                layer_inputs.push(xs);
                xs = next;
            }
            xs
        });
        let output = output.set_requires_grad(true);
        self.recorded.borrow_mut().push(Recorded {
            input_ids: input_ids.shallow_clone(),
            layer_inputs,
            rope,
            bias: bias.shallow_clone(),
            output: output.shallow_clone(),
        });
        output
    }

    /// A recorded output holding a gradient means a backward ran that did not replay the tape
    /// (every replay empties it): the layers' weights silently got no gradient from it.
    fn check_no_bare_backward(&self) {
        assert!(
            self.recorded.borrow().iter().all(|r| !r.output.grad().defined()),
            "a backward reached a gradient-checkpointed forward outside CausalLm::backward, so the decoder layers got no gradient: call model.backward(&loss) instead of loss.backward()"
        );
    }

    /// Back-propagates the gradient on each recorded output through the recomputed layers and
    /// into the embedding, then empties the tape.
    pub(crate) fn replay(&self, layers: &[DecoderLayer], embedding: &Tensor) {
        let recorded = std::mem::take(&mut *self.recorded.borrow_mut());
        tch::with_grad(|| {
            for forward in recorded {
                replay_one(forward, layers, embedding);
            }
        });
    }
}

fn replay_one(forward: Recorded, layers: &[DecoderLayer], embedding: &Tensor) {
    let Recorded { input_ids, layer_inputs, rope, bias, output } = forward;
    let mut upstream = output.grad();
    if !upstream.defined() {
        // This forward's output took no part in the loss.
        return;
    }
    drop(output);
    for (layer, input) in layers.iter().zip(layer_inputs).rev() {
        let input = input.detach().set_requires_grad(true);
        let out = layer.forward(&input, &rope, &bias, None);
        propagate(&out, &upstream);
        upstream = input.grad();
    }
    // A frozen embedding (LoRA trains only adapters) has nothing to receive.
    if embedding.requires_grad() {
        propagate(&embedding.embedding_forward(&input_ids), &upstream);
    }
}

/// Accumulates into the leaves under `out` the gradients of a loss whose gradient with respect
/// to `out` is `upstream`.
fn propagate(out: &Tensor, upstream: &Tensor) {
    (out * upstream).sum(Kind::Float).backward();
}
