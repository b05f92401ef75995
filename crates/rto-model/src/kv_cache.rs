//! Key/value cache for incremental decoding.
//!
//! Buffers are allocated once at full length and filled in place: growing them with `cat` at
//! every step would copy the whole cache per token.
//!
//! A decode step normally attends over the keys cached so far, so every step has a new shape.
//! With [`KvCache::with_fixed_decode_width`] a single-token step attends over the whole buffer
//! instead (the caller's bias blocks the positions not written yet), so every step of a
//! generation has one shape: oneDNN, which serves reduced-precision CPU matmuls, compiles a
//! kernel per new shape (see `sampling::fixed_decode_width`), and a captured CUDA graph needs
//! fixed shapes too.
//!
//! A CUDA graph also fixes where a step writes: the replay writes where the captured step
//! wrote. With [`KvCache::with_write_slot`] single-token appends write at the position a
//! device tensor holds ([`KvCache::sync_write_slot`] sets it before each step) instead of at an
//! offset baked into a view (see `decode_graph`).

use tch::Tensor;

#[derive(Debug)]
pub struct KvCache {
    keys: Vec<Tensor>,
    values: Vec<Tensor>,
    len: usize,
    capacity: usize,
    /// Single-token appends return the whole buffer rather than the filled part.
    fixed_decode_width: bool,
    /// [1] i64 on the cache's device: where single-token appends write, when set.
    write_slot: Option<Tensor>,
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
        Self { keys: alloc(), values: alloc(), len: 0, capacity, fixed_decode_width: false, write_slot: None }
    }

    /// Makes single-token appends write at the position held by a device tensor (see the
    /// module doc), for steps whose kernels are replayed from a CUDA graph. Implies the fixed
    /// decode width: a replayed step cannot change shape either.
    pub fn with_write_slot(mut self) -> Self {
        let device = self.keys.first().map_or(tch::Device::Cpu, Tensor::device);
        self.write_slot = Some(Tensor::zeros([1], (tch::Kind::Int64, device)));
        self.fixed_decode_width = true;
        self
    }

    /// Points the write slot at the next free position (a device-side fill, queued like any
    /// op): called before every single-token step of a cache made [`Self::with_write_slot`].
    pub fn sync_write_slot(&mut self) {
        if let Some(slot) = &mut self.write_slot {
            let _ = slot.fill_(self.len as i64);
        }
    }

    /// Sets the count of cached tokens: a captured step advanced it without writing anything.
    pub(crate) fn set_len(&mut self, len: usize) {
        assert!(len <= self.capacity, "KV cache length {len} > capacity {}", self.capacity);
        self.len = len;
    }

    /// Makes every single-token step attend over all `capacity` positions (see the module doc);
    /// the attention bias of such a step must then cover all of them and block the unwritten.
    pub fn with_fixed_decode_width(mut self, on: bool) -> Self {
        self.fixed_decode_width = on;
        self
    }

    /// How many key positions a forward of `new` tokens appended now attends over.
    fn visible_after(&self, new: usize) -> usize {
        if self.fixed_decode_width && new == 1 {
            self.capacity
        } else {
            self.len + new
        }
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
    /// the positions to attend over ([`Self::visible_after`]): everything cached so far, new
    /// entries included, or the whole buffer for a fixed-width decode step.
    pub(crate) fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> (Tensor, Tensor) {
        let new = k.size()[2];
        let end = self.len as i64 + new;
        assert!(end as usize <= self.capacity, "KV cache overflow: {end} > {}", self.capacity);
        match (&self.write_slot, new) {
            (Some(slot), 1) => {
                let _ = self.keys[layer].index_copy_(2, slot, k);
                let _ = self.values[layer].index_copy_(2, slot, v);
            }
            _ => {
                self.keys[layer].narrow(2, self.len as i64, new).copy_(k);
                self.values[layer].narrow(2, self.len as i64, new).copy_(v);
            }
        }
        let visible = self.visible_after(new as usize) as i64;
        (self.keys[layer].narrow(2, 0, visible), self.values[layer].narrow(2, 0, visible))
    }

    /// Called once per forward, after every layer appended.
    pub(crate) fn advance(&mut self, new: i64) {
        self.len += new as usize;
    }
}
