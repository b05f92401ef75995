//! Argument checks shared by the modules: settings get `anyhow` errors that name the field,
//! tensors get shape errors that name the argument (instead of a libtorch broadcast panic).

use anyhow::{bail, ensure, Result};
use tch::Tensor;

/// `value` is finite and > 0.
pub(crate) fn positive(field: &str, value: f64) -> Result<()> {
    ensure!(value.is_finite() && value > 0.0, "{field} must be a finite number > 0, got {value}");
    Ok(())
}

/// `value` is finite and ≥ 0.
pub(crate) fn non_negative(field: &str, value: f64) -> Result<()> {
    ensure!(value.is_finite() && value >= 0.0, "{field} must be a finite number ≥ 0, got {value}");
    Ok(())
}

/// `value` lies in [0, 1].
pub(crate) fn unit_interval(field: &str, value: f64) -> Result<()> {
    ensure!((0.0..=1.0).contains(&value), "{field} must lie in [0, 1], got {value}");
    Ok(())
}

/// `value` is > 0; +∞ is allowed and means "no limit".
pub(crate) fn positive_or_inf(field: &str, value: f64) -> Result<()> {
    ensure!(!value.is_nan() && value > 0.0, "{field} must be > 0 (or +inf for no limit), got {value}");
    Ok(())
}

/// `tensor` is 2-D, [B, R].
pub(crate) fn per_token(name: &str, tensor: &Tensor) -> Result<Vec<i64>> {
    let size = tensor.size();
    if size.len() != 2 {
        bail!("{name} must be a per-token tensor [B, R], got shape {size:?}");
    }
    Ok(size)
}

/// `tensor` has exactly the shape `expected`.
pub(crate) fn same_shape(name: &str, tensor: &Tensor, expected: &[i64]) -> Result<()> {
    let size = tensor.size();
    ensure!(size == expected, "{name} has shape {size:?}, expected {expected:?}");
    Ok(())
}
