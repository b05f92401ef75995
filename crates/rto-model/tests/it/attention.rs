//! The two attention kernels agree: the grouped products (`rto_model::attention`) against
//! libtorch's fused scaled_dot_product_attention with GQA, outputs and gradients, under a
//! causal mask with left padding (what `attention_bias` makes).

use rto_model::attention::{attend, grouped_product_attention};
use rto_model::llama::attention_bias;
use tch::{Device, Kind, Tensor};

/// q [2, 4, 6, 8], k and v [2, 2, 6, 8] (two query heads per key/value head), the second row
/// left-padded by two tokens; leaves of `kind` that require grad. The values are a fixed
/// pseudo-random formula, not libtorch's global generator (which other test threads draw from).
fn inputs(kind: Kind) -> (Tensor, Tensor, Tensor, Tensor) {
    let leaf = |heads: i64| {
        let n = 2 * heads * 6 * 8;
        let x = Tensor::arange(n, (Kind::Float, Device::Cpu)) * (1.0 + heads as f64 * 0.37);
        ((x.sin() * 43758.5453).frac() * 4.0 - 2.0).view([2, heads, 6, 8]).to_kind(kind).set_requires_grad(true)
    };
    let padding = Tensor::from_slice(&[1i64, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1]).view([2, 6]);
    (leaf(4), leaf(2), leaf(2), attention_bias(&padding, 6, 0, kind))
}

fn fused(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor) -> Tensor {
    Tensor::scaled_dot_product_attention(q, k, v, Some(mask), 0.0, false, None, true)
}

/// The largest max|a − b| / max|b| over the output and the three input gradients of `loss = Σ out·w`,
/// where w is 0 on the padded queries: their outputs are never read, and the kernels differ
/// there (a fully blocked row is a uniform average in one, nothing in the other).
fn largest_gap(kind: Kind, a: fn(&Tensor, &Tensor, &Tensor, &Tensor) -> Tensor) -> f64 {
    let real = Tensor::from_slice(&[1f32, 1., 1., 1., 1., 1., 0., 0., 1., 1., 1., 1.]).view([2, 1, 6, 1]);
    let run = |f: &dyn Fn(&Tensor, &Tensor, &Tensor, &Tensor) -> Tensor| {
        let (q, k, v, mask) = inputs(kind);
        let out = f(&q, &k, &v, &mask);
        let ramp = Tensor::linspace(-1.0, 1.0, out.numel() as i64, (Kind::Float, Device::Cpu));
        let weights = ramp.view(out.size().as_slice()) * &real;
        (out.to_kind(Kind::Float) * weights).sum(Kind::Float).backward();
        [out.to_kind(Kind::Float) * &real, q.grad(), k.grad(), v.grad()].map(|t| t.to_kind(Kind::Float))
    };
    let (ours, reference) = (run(&a), run(&fused));
    let relative = |x: &Tensor, y: &Tensor| (x - y).abs().max().double_value(&[]) / y.abs().max().double_value(&[]);
    ours.iter().zip(&reference).map(|(x, y)| relative(x, y)).fold(0.0, f64::max)
}

#[test]
fn the_grouped_products_equal_the_fused_kernel_in_fp32() {
    let gap = largest_gap(Kind::Float, grouped_product_attention);
    assert!(gap < 1e-5, "largest gap {gap}");
}

#[test]
fn the_grouped_products_equal_the_fused_kernel_in_bf16_within_its_rounding() {
    let gap = largest_gap(Kind::BFloat16, grouped_product_attention);
    assert!(gap < 3e-2, "largest gap {gap}");
}

#[test]
fn attend_gives_the_fused_result_whichever_kernel_it_picks() {
    for kind in [Kind::Float, Kind::BFloat16] {
        let gap = largest_gap(kind, attend);
        let bound = if kind == Kind::Float { 1e-5 } else { 3e-2 };
        assert!(gap < bound, "{kind:?}: largest gap {gap}");
    }
}

#[test]
fn a_wrong_head_grouping_is_not_silently_averaged() {
    // The test can fail: key heads in the other order give a different attention.
    let (q, k, v, mask) = inputs(Kind::Float);
    let swapped = |t: &Tensor| Tensor::cat(&[t.narrow(1, 1, 1), t.narrow(1, 0, 1)], 1);
    let gap = (grouped_product_attention(&q, &swapped(&k), &swapped(&v), &mask) - fused(&q, &k, &v, &mask))
        .abs()
        .max()
        .double_value(&[]);
    assert!(gap > 1e-2, "swapping key/value heads changed nothing ({gap})");
}
