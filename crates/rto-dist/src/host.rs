//! Host-value conveniences over the tensor collectives: metrics (f64s) and small messages
//! (bytes) that rank 0 decides for everyone. They stage through a tensor on the group's device
//! (NCCL only moves device memory).

use crate::group::{ProcessGroup, ReduceOp};
use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

impl ProcessGroup {
    /// The element-wise reduction of every rank's `values` (same length on every rank).
    pub fn all_reduce_f64s(&self, values: &[f64], op: ReduceOp) -> Result<Vec<f64>> {
        if !self.is_distributed() {
            return Ok(values.to_vec());
        }
        let mut tensor = Tensor::from_slice(values).to_device(self.device());
        self.all_reduce(&mut tensor, op).with_context(|| format!("all_reduce_f64s of {} values", values.len()))?;
        Vec::<f64>::try_from(tensor.to_device(Device::Cpu)).context("reading the reduced f64s back")
    }

    /// Rank `root`'s `bytes` on every rank (what other ranks pass is ignored): the length goes
    /// first, then the bytes, as a uint8 tensor.
    pub fn broadcast_bytes(&self, bytes: Vec<u8>, root: usize) -> Result<Vec<u8>> {
        if !self.is_distributed() {
            return Ok(bytes);
        }
        let len = if self.rank() == root { bytes.len() as i64 } else { 0 };
        let mut len_tensor = Tensor::from_slice(&[len]).to_device(self.device());
        self.broadcast(&mut len_tensor, root).context("broadcast_bytes: the length")?;
        let len = len_tensor.int64_value(&[0]);
        let Ok(len_usize) = usize::try_from(len) else { bail!("broadcast_bytes: rank {root} sent length {len}") };
        let mut data = if self.rank() == root {
            Tensor::from_slice(&bytes).to_device(self.device())
        } else {
            Tensor::zeros([len], (Kind::Uint8, self.device()))
        };
        if len_usize > 0 {
            self.broadcast(&mut data, root).with_context(|| format!("broadcast_bytes: {len} bytes"))?;
        }
        Vec::<u8>::try_from(data.to_device(Device::Cpu)).context("reading the broadcast bytes back")
    }

    /// Every rank's `bytes`, in rank order, on every rank (lengths may differ): the lengths are
    /// all-gathered first, then the bytes padded to the longest. For results a stage shards over
    /// ranks and rank 0 writes in the original order.
    pub fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        if !self.is_distributed() {
            return Ok(vec![bytes.to_vec()]);
        }
        let world = self.world_size() as i64;
        let mine = Tensor::from_slice(&[bytes.len() as i64]).to_device(self.device());
        let mut lengths = Tensor::zeros([world], (Kind::Int64, self.device()));
        self.all_gather(&mut lengths, &mine).context("all_gather_bytes: the lengths")?;
        let lengths = Vec::<i64>::try_from(lengths.to_device(Device::Cpu)).context("reading the gathered lengths")?;
        let longest = lengths.iter().copied().max().unwrap_or(0).max(1);
        let mut padded = bytes.to_vec();
        padded.resize(longest as usize, 0);
        let input = Tensor::from_slice(&padded).to_device(self.device());
        let mut output = Tensor::zeros([world * longest], (Kind::Uint8, self.device()));
        self.all_gather(&mut output, &input).with_context(|| format!("all_gather_bytes: {longest} bytes per rank"))?;
        let all = Vec::<u8>::try_from(output.to_device(Device::Cpu)).context("reading the gathered bytes back")?;
        Ok(lengths
            .iter()
            .enumerate()
            .map(|(rank, &len)| {
                let start = rank * longest as usize;
                all[start..start + len as usize].to_vec()
            })
            .collect())
    }
}
