//! Masked reductions over per-token tensors [B, R] and a response mask [B, R] (1.0 real token,
//! 0.0 padding). Padding is replaced by 0 *before* reducing (not multiplied), so a NaN or ±inf
//! that a model wrote into a padded column can never leak into a loss or a statistic.

use tch::{Kind, Tensor};

/// The mask as a tensor of `x`'s float kind (masks may arrive as bool, int or float).
pub(crate) fn mask_like(mask: &Tensor, x: &Tensor) -> Tensor {
    mask.to_kind(x.kind())
}

/// `x` with every padded entry set to exactly +0.0.
pub fn zero_padding(x: &Tensor, mask: &Tensor) -> Tensor {
    x.masked_fill(&mask.eq(0.0), 0.0)
}

/// Σ x over unmasked entries (a scalar tensor).
pub fn masked_sum(x: &Tensor, mask: &Tensor) -> Tensor {
    let m = mask_like(mask, x);
    (zero_padding(x, &m) * &m).sum(x.kind())
}

/// Mean of `x` over all unmasked entries of the whole tensor (a scalar tensor; 0 when the
/// mask is empty).
pub fn masked_mean(x: &Tensor, mask: &Tensor) -> Tensor {
    let m = mask_like(mask, x);
    masked_sum(x, &m) / m.sum(x.kind()).clamp_min(f32::EPSILON as f64)
}

/// Mean of each row of `x` [B, R] over its unmasked entries: `[B]` (0 for an empty row).
pub fn masked_mean_per_row(x: &Tensor, mask: &Tensor) -> Tensor {
    let m = mask_like(mask, x);
    let sums = (zero_padding(x, &m) * &m).sum_dim_intlist([1].as_slice(), false, x.kind());
    sums / m.sum_dim_intlist([1].as_slice(), false, x.kind()).clamp_min(f32::EPSILON as f64)
}

/// Population variance (divide by N, not N − 1) of `x` over all unmasked entries. N rather
/// than N − 1 so that whitened entries have variance exactly 1 over the buffer, as OpenRLHF's
/// advantage normalisation (the paper's code) computes it.
pub fn masked_var(x: &Tensor, mask: &Tensor) -> Tensor {
    let m = mask_like(mask, x);
    let mean = masked_mean(x, &m);
    masked_mean(&(x - mean).square(), &m)
}

/// The mean over the rows that hold at least one unmasked entry of a per-row quantity `[B]`:
/// the "then over the batch" half of a per-sequence-then-batch average (DESIGN.md §4, PPO).
pub(crate) fn mean_over_nonempty_rows(per_row: &Tensor, mask: &Tensor) -> Tensor {
    let m = mask_like(mask, per_row);
    let rows = m.sum_dim_intlist([1].as_slice(), false, per_row.kind()).gt(0.0).to_kind(per_row.kind());
    (per_row * &rows).sum(per_row.kind()) / rows.sum(per_row.kind()).clamp_min(1.0)
}

/// [B, R] with 1.0 at each row's last unmasked column and 0.0 elsewhere (all zero for an empty
/// row). Found as the position of the largest (column + 1)·mask, so it does not rely on the
/// response being a contiguous prefix, only on "last" meaning "rightmost real token".
pub fn last_token_mask(mask: &Tensor) -> Tensor {
    let m = mask.to_kind(Kind::Float);
    let width = m.size()[1];
    let columns = Tensor::arange(width, (Kind::Float, m.device())) + 1.0;
    let last = (&m * columns).argmax(1, true);
    let one_hot = m.zeros_like().scatter_value(1, &last, 1.0);
    (one_hot * m.gt(0.0).to_kind(Kind::Float)).to_kind(mask_kind(mask))
}

/// A float kind for results derived from `mask`.
fn mask_kind(mask: &Tensor) -> Kind {
    match mask.kind() {
        k @ (Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16) => k,
        _ => Kind::Float,
    }
}
