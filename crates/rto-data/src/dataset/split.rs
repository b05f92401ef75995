//! Seeded shuffling and train/eval splits that give the same result on every platform and
//! Rust version: a hand-written SplitMix64 generator, not `std`'s hashing or `rand`'s
//! version-dependent algorithms.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and fully specified, so a seed means the
/// same sequence everywhere.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` without modulo bias (rejection sampling). `n` must be > 0.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "SplitMix64::below(0)");
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Fisher–Yates shuffle driven by `SplitMix64::new(seed)`.
pub fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut rng = SplitMix64::new(seed);
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

/// How much of a dataset to hold out for evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalSize {
    /// A fraction in [0, 1), rounded to whole rows (at least one row when > 0).
    Fraction(f64),
    /// An exact number of rows.
    Count(usize),
}

/// Shuffles `records` with `seed` and returns `(train, eval)`: eval is the first rows of the
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
    shuffle(&mut records, seed);
    let train = records.split_off(k);
    Ok((train, records))
}
