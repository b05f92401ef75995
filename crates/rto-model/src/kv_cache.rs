//! Key/value cache for incremental decoding.
//!
//! Buffers are allocated once at full length and filled in place: growing them with `cat` at
//! every step would copy the whole cache per token.

use tch::Tensor;

#[derive(Debug)]
pub struct KvCache {
    keys: Vec<Tensor>,
    values: Vec<Tensor>,
    len: usize,
    capacity: usize,
}

impl KvCache {
    /// An empty cache for `layers` layers of [batch, kv_heads, capacity, head_dim].
    pub fn new(
        layers: usize,
        batch: i64,
        kv_heads: i64,
        capacity: usize,
        head_dim: i64,
        options: (tch::Kind, tch::Device),
    ) -> Self {
        let shape = [batch, kv_heads, capacity as i64, head_dim];
        let alloc = || (0..layers).map(|_| Tensor::zeros(shape, options)).collect::<Vec<_>>();
        Self { keys: alloc(), values: alloc(), len: 0, capacity }
    }

    /// Tokens already cached (the same for every layer).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Writes this step's keys/values for `layer` after the cached ones and returns views over
    /// everything cached so far, new entries included.
    pub(crate) fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> (Tensor, Tensor) {
        let new = k.size()[2];
        let end = self.len as i64 + new;
        assert!(end as usize <= self.capacity, "KV cache overflow: {end} > {}", self.capacity);
        self.keys[layer].narrow(2, self.len as i64, new).copy_(k);
        self.values[layer].narrow(2, self.len as i64, new).copy_(v);
        (self.keys[layer].narrow(2, 0, end), self.values[layer].narrow(2, 0, end))
    }

    /// Called once per forward, after every layer appended.
    pub(crate) fn advance(&mut self, new: i64) {
        self.len += new as usize;
    }
}
