//! Gradients summed over ranks, as PyTorch's DDP does: flattened into fp32 buckets of about
//! [`BUCKET_BYTES`] (one all-reduce per bucket instead of one per tensor), summed, and split
//! back into one gradient per parameter. Each rank's loss is already scaled by its micro
//! batches' share of the global batch, so the sum is the global batch's gradient; every rank
//! then steps AdamW on the same numbers and the models stay equal.

use anyhow::{Context, Result};
use rto_dist::{ProcessGroup, ReduceOp};
use tch::{Kind, Tensor};

/// DDP's default bucket size.
pub const BUCKET_BYTES: i64 = 25 << 20;

/// The sum over ranks of each parameter's gradient, in fp32, in the order of `params`. A
/// gradient undefined on every rank (a parameter no loss reached) stays undefined, so AdamW
/// skips it as in a single process; one defined on some ranks only (a rank without micro
/// batches this step) counts as zeros on the others.
pub fn all_reduce(group: &ProcessGroup, params: &[Tensor]) -> Result<Vec<Tensor>> {
    let grads: Vec<Tensor> = params.iter().map(Tensor::grad).collect();
    let device = group.device();
    let defined = defined_anywhere(group, &grads)?;
    let mut reduced: Vec<Tensor> = params.iter().map(|_| Tensor::new()).collect();
    let flat = |i: usize| -> Tensor {
        if grads[i].defined() {
            grads[i].to_kind(Kind::Float).reshape([-1])
        } else {
            Tensor::zeros([params[i].numel() as i64], (Kind::Float, device))
        }
    };
    let present: Vec<usize> = (0..params.len()).filter(|&i| defined[i]).collect();
    for bucket in buckets(&present, |i| params[i].numel() as i64 * 4) {
        let parts: Vec<Tensor> = bucket.iter().map(|&i| flat(i)).collect();
        let mut joined = Tensor::cat(&parts, 0);
        group
            .all_reduce(&mut joined, ReduceOp::Sum)
            .with_context(|| format!("summing a bucket of {} gradients over ranks", bucket.len()))?;
        let mut offset = 0;
        for &i in bucket {
            let n = params[i].numel() as i64;
            reduced[i] = joined.narrow(0, offset, n).view(params[i].size().as_slice());
            offset += n;
        }
    }
    Ok(reduced)
}

/// Whether each of `grads` is defined on at least one rank (the ranks agree on the answer).
pub fn defined_anywhere(group: &ProcessGroup, grads: &[Tensor]) -> Result<Vec<bool>> {
    let defined: Vec<f32> = grads.iter().map(|g| f32::from(u8::from(g.defined()))).collect();
    let mut defined = Tensor::from_slice(&defined).to_device(group.device());
    group.all_reduce(&mut defined, ReduceOp::Max).context("agreeing which gradients exist")?;
    Ok(Vec::<f32>::try_from(defined.to_device(tch::Device::Cpu))?.into_iter().map(|d| d > 0.0).collect())
}

/// `items` in consecutive groups of at most [`BUCKET_BYTES`] (a bigger item alone in its group).
fn buckets(items: &[usize], bytes: impl Fn(usize) -> i64) -> Vec<&[usize]> {
    let (mut out, mut start, mut size) = (Vec::new(), 0, 0);
    for (k, &i) in items.iter().enumerate() {
        if size > 0 && size + bytes(i) > BUCKET_BYTES {
            out.push(&items[start..k]);
            (start, size) = (k, 0);
        }
        size += bytes(i);
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}
