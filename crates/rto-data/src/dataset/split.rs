//! Seeded train/eval splits that give the same result on every platform and Rust version
//! (the shuffle is `rto_rng`'s SplitMix64, not `std`'s hashing or `rand`'s version-dependent
//! algorithms).

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use rto_rng::{seed_for, Stream};
pub use rto_rng::{shuffle, SplitMix64};

/// How much of a dataset to hold out for evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalSize {
    /// A fraction in [0, 1), rounded to whole rows (at least one row when > 0).
    Fraction(f64),
    /// An exact number of rows.
    Count(usize),
}

/// Shuffles `records` with the [`Stream::Split`] seed of a stage's `seed` and returns `(train, eval)`: eval is the first rows of the
/// shuffled order, train the rest (in shuffled order). Errors if eval would leave no train
/// rows or the size is invalid.
pub fn split<T>(mut records: Vec<T>, eval: EvalSize, seed: u64) -> Result<(Vec<T>, Vec<T>)> {
    let n = records.len();
    let k = match eval {
        EvalSize::Fraction(f) => {
            if !(0.0..1.0).contains(&f) {
                bail!("eval fraction {f} must be in [0, 1)");
            }
            let k = (f * n as f64).round() as usize;
            if f > 0.0 {
                k.max(1)
            } else {
                0
            }
        }
        EvalSize::Count(k) => k,
    };
    if k >= n && n > 0 || (k > 0 && n == 0) {
        bail!("an eval set of {k} rows leaves no training rows out of {n}");
    }
    shuffle(&mut records, seed_for(seed, Stream::Split, 0));
    let train = records.split_off(k);
    Ok((train, records))
}
