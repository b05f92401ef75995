//! The decode step of a generation call: run as it comes, or from buffers that outlive it, which
//! is what a CUDA graph needs, and then replayed from one ([`rto_cuda::CudaGraph`]).
//!
//! A replay launches the kernels the capture recorded, on the addresses it recorded. So the
//! step reads its inputs (token ids, rotary positions, attention bias) from buffers made once
//! per generation call and refilled before each step, writes the KV cache at the position a
//! device tensor holds ([`KvCache::with_write_slot`]), attends over the whole cache (one shape
//! for every step), and leaves its logits in the graph's own output tensor. The sampling of the
//! next token stays outside the graph: it reads host-drawn uniforms and the stop checks read
//! the tokens on the host.
//!
//! On a CPU, or on CUDA without `--cuda-graph`, a [`DecodeMode::Buffered`] step runs eagerly
//! through the same buffers; tests compare it with the plain fixed-width step, bit for bit.

use crate::kv_cache::KvCache;
use crate::model::CausalLm;
use anyhow::{bail, Context, Result};
use rto_cuda::CudaGraph;
use tch::{Device, Tensor};

/// How a generation call runs its decode steps (every mode samples the same tokens; see
/// `sampling::generate_with_decode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeMode {
    /// Each step attends over the cache filled so far: its shapes grow by one per step.
    Growing,
    /// Each step attends over the whole cache (the unwritten part blocked): one shape.
    Fixed,
    /// Fixed, with the step's inputs and cache writes in buffers that outlive it; captured
    /// into a CUDA graph after the first step when `capture` is set (CUDA only), eager else.
    Buffered { capture: bool },
}

/// Whether `--cuda-graph` can work on `device` in this build: checked when a stage reads its
/// flags, before any model loads.
pub fn check_cuda_graph(device: Device) -> Result<()> {
    if !device.is_cuda() {
        let this = if device == Device::Cpu { "cpu".to_string() } else { format!("{device:?}") };
        bail!("--cuda-graph needs a CUDA device (--device cuda), and this run's device is {this}: leave it off here");
    }
    rto_cuda::ensure_available()
}

/// The decode step of one generation call (see the module doc).
pub(crate) struct DecodeStep {
    buffers: Option<StepBuffers>,
}

struct StepBuffers {
    ids: Tensor,
    positions: Tensor,
    bias: Tensor,
    capture: bool,
    /// The graph and its logits output, once captured.
    graph: Option<(CudaGraph, Tensor)>,
}

impl DecodeStep {
    /// A step for `mode`; a buffered one holds token ids and `positions` shaped like
    /// `positions` [B, 1] (i64) and a `bias` like `bias` [B, 1, 1, S].
    pub(crate) fn new(mode: DecodeMode, positions: &Tensor, bias: &Tensor) -> Self {
        let buffers = match mode {
            DecodeMode::Buffered { capture } => Some(StepBuffers {
                ids: positions.zeros_like(),
                positions: positions.zeros_like(),
                bias: bias.zeros_like(),
                capture,
                graph: None,
            }),
            DecodeMode::Growing | DecodeMode::Fixed => None,
        };
        Self { buffers }
    }

    /// Logits [B, V] of the next token after `ids` [B, 1] at `positions` [B, 1], the KV cache
    /// advanced by one. A replayed step's logits are the graph's output tensor, overwritten by
    /// the next step: read them before calling again.
    pub(crate) fn run(
        &mut self,
        model: &CausalLm,
        cache: &mut KvCache,
        ids: &Tensor,
        positions: &Tensor,
        bias: &Tensor,
    ) -> Result<Tensor> {
        let Some(buffers) = &mut self.buffers else {
            return Ok(forward(model, cache, ids, positions, bias));
        };
        buffers.ids.copy_(ids);
        buffers.positions.copy_(positions);
        buffers.bias.copy_(bias);
        cache.sync_write_slot();
        if let Some((graph, logits)) = &buffers.graph {
            graph.replay()?;
            cache.advance(1);
            return Ok(logits.shallow_clone());
        }
        let StepBuffers { ids, positions, bias, .. } = &*buffers;
        if !buffers.capture {
            return Ok(forward(model, cache, ids, positions, bias));
        }
        let device = match model.device() {
            Device::Cuda(index) => index,
            other => bail!("a CUDA graph needs a CUDA model, not one on {other:?}"),
        };
        let mut graph = CudaGraph::new(device)?;
        let len = cache.len();
        // The first run executes this step; the second is only recorded, so the cache it
        // "advanced" is set back.
        let (logits, captured) = graph
            .capture(|| forward(model, cache, ids, positions, bias))
            .context("capturing the decode step (see rto_cuda for what a captured step may do)")?;
        cache.set_len(len + 1);
        buffers.graph = Some((graph, captured));
        Ok(logits)
    }
}

/// One decode forward: the last hidden state through the LM head.
fn forward(model: &CausalLm, cache: &mut KvCache, ids: &Tensor, positions: &Tensor, bias: &Tensor) -> Tensor {
    let hidden = model.decoder.forward_with_bias(ids, bias, positions, Some(cache));
    model.logits(&hidden.squeeze_dim(1))
}
