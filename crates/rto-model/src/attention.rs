//! The attention product of a decoder layer, and which kernel computes it.
//!
//! Two kernels give the same result within rounding: libtorch's fused
//! `scaled_dot_product_attention` (flash attention on CPU, never materializing the [T, S]
//! scores), and [`grouped_product_attention`], two batched matmuls around an fp32 softmax over
//! the query heads grouped by their shared key/value head. [`attend`] picks the faster one:
//! the products where the fused CPU kernel's blocking is wasted, the fused kernel otherwise.
//!
//! Measured on this project's 2-core AVX-512 CPU (torch 2.11, 2 threads, [B, H, T, D] in
//! bf16): at 112 keys the fused backward is 1.6–2.2× slower than the products for head dims
//! 32–128 (its 512-key blocks are mostly empty), and even the no-grad forward is 1.5× slower
//! (2.79 vs 1.88 ms at [32, 4, 112, 32]); at 256 keys the fused kernel is 3× faster in the
//! forward and as fast in forward + backward, by 512 faster in both. In fp32 the fused kernel
//! is as fast or faster at every length, and a single query (a decode step) is 2× faster as
//! products in either precision. The products hold the [T, S] scores (fp32) for the backward,
//! so they are used only where S is short and the memory they take is small.

use tch::{Device, Kind, Tensor};

/// Keys up to which a reduced-precision CPU forward uses the products (see the module doc:
/// the crossover lies between 112 and 256).
const PRODUCTS_MAX_KEYS: i64 = 128;

/// softmax(q·kᵀ/√d + mask)·v for q [B, heads, T, D], k and v [B, kv_heads, S, D] (heads a
/// multiple of kv_heads) and the additive `mask` [B, 1, T, S]; returns [B, heads, T, D].
pub fn attend(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor) -> Tensor {
    let (queries, keys) = (q.size()[2], k.size()[2]);
    let grouped = q.size()[1] != k.size()[1];
    if queries == 1 || products_are_faster(q, keys) {
        return grouped_product_attention(q, k, v, mask);
    }
    Tensor::scaled_dot_product_attention(q, k, v, Some(mask), 0.0, false, None, grouped)
}

/// Whether the fused kernel is the slow one here: a CPU forward in bf16 or fp16 over at most
/// [`PRODUCTS_MAX_KEYS`] keys.
fn products_are_faster(q: &Tensor, keys: i64) -> bool {
    q.device() == Device::Cpu && q.kind() != Kind::Float && keys <= PRODUCTS_MAX_KEYS
}

/// The attention as two batched products over the query heads grouped by their key/value
/// head (query head h reads key/value head h / (heads / kv_heads), as repeat-interleaving
/// the keys would): no repeated keys and values. The softmax runs in fp32.
pub fn grouped_product_attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor) -> Tensor {
    let (batch, heads, queries, head_dim) = q.size4().expect("queries are [B, heads, T, D]");
    let (kv_heads, keys) = (k.size()[1], k.size()[2]);
    let group = heads / kv_heads;
    let q = q.reshape([batch, kv_heads, group * queries, head_dim]);
    let scores = q.matmul(&k.transpose(2, 3)).view([batch, kv_heads, group, queries, keys])
        * (head_dim as f64).powf(-0.5)
        + mask.reshape([batch, 1, 1, queries, keys]);
    let probs = scores.softmax(-1, Kind::Float).to_kind(q.kind());
    probs.view([batch, kv_heads, group * queries, keys]).matmul(v).view([batch, heads, queries, head_dim])
}
