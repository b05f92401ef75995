//! [`ProcessGroup`]: the rendezvous and the collectives on tch tensors.

use crate::env::{Launch, Launcher};
use crate::ffi;
use crate::store::Store;
use anyhow::{bail, Context, Result};
use std::ffi::CString;
use std::fmt;
use std::ptr::{self, NonNull};
use std::time::Duration;
use tch::{Device, Tensor};

/// How a collective combines the ranks' values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    /// The sum divided by the world size, in the tensor's dtype (c10d's AVG).
    Avg,
    Max,
}

impl ReduceOp {
    /// The codes csrc/shim.cpp's `reduce_op` reads.
    fn code(self) -> i32 {
        match self {
            ReduceOp::Sum => 0,
            ReduceOp::Avg => 1,
            ReduceOp::Max => 2,
        }
    }
}

impl fmt::Display for ReduceOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Avg => "avg",
            ReduceOp::Max => "max",
        })
    }
}

/// The processes of one launch and the collectives between them. Built by
/// [`ProcessGroup::from_env`]; with no launch variables set it is a single process (world size 1)
/// that never touches c10d, so every collective leaves the tensor's bytes exactly as they were.
///
/// Every rank must call the same collectives in the same order with tensors of the same shape
/// and dtype; each call waits for completion. `Send` but not `Sync`: one thread issues the calls.
pub struct ProcessGroup {
    rank: usize,
    world_size: usize,
    local_rank: usize,
    device: Device,
    timeout: Duration,
    /// `None` for the single process.
    joined: Option<Joined>,
}

/// The C++ side: the c10d backend and the store it rendezvoused through (rank 0's TCPStore
/// server must stay up while the others connect).
struct Joined {
    group: NonNull<ffi::RtoGroup>,
    _store: Store,
}

// SAFETY: the c10d objects are not tied to the thread that made them; ProcessGroup is not Sync,
// so calls never overlap.
unsafe impl Send for Joined {}

impl Drop for Joined {
    fn drop(&mut self) {
        // SAFETY: from the shim's constructor, freed once, before the store (a field, dropped
        // after this).
        unsafe { ffi::rto_dist_group_free(self.group.as_ptr()) }
    }
}

impl ProcessGroup {
    /// Joins the launch described by torchrun's (or Slurm's) environment, see
    /// [`Launch::from_vars`]; with none of it set, the single-process group. `device` is where
    /// this rank's tensors live: CPU uses Gloo, CUDA uses NCCL (feature `nccl`). `timeout` bounds
    /// the rendezvous and every collective: a rank that died or hangs makes the others fail
    /// within it instead of waiting forever.
    pub fn from_env(device: Device, timeout: Duration) -> Result<ProcessGroup> {
        let launch = Launch::from_env().context("reading the launch environment (torchrun or Slurm)")?;
        match launch {
            None => Ok(ProcessGroup::single(device)),
            Some(launch) => ProcessGroup::join(&launch, device, timeout),
        }
    }

    /// World size 1 without c10d: collectives are no-ops (reduce-scatter and all-gather copy
    /// their input, which is what one rank's c10d would compute).
    pub fn single(device: Device) -> ProcessGroup {
        ProcessGroup { rank: 0, world_size: 1, local_rank: 0, device, timeout: Duration::ZERO, joined: None }
    }

    /// Rendezvous: rank 0 hosts the TCPStore at MASTER_ADDR:MASTER_PORT unless torchrun's agent
    /// does (`agent_store`), then the backend connects every pair of ranks. The keys live under a
    /// prefix holding the restart count, so a restarted attempt never reads an earlier one's.
    pub fn join(launch: &Launch, device: Device, timeout: Duration) -> Result<ProcessGroup> {
        let (backend, cuda_index) = backend_for(device, launch.world_size)?;
        let endpoint = format!("MASTER_ADDR:MASTER_PORT={}:{}", launch.master_addr, launch.master_port);
        let place = format!("rank {} of {} ({})", launch.rank, launch.world_size, launch.launcher);
        let hint = rendezvous_hint(launch, timeout);
        // The server waits for every rank's client; with the agent's store, rank 0 is a client too.
        let is_server = !launch.agent_store && launch.rank == 0;
        let store = Store::open(&launch.master_addr, launch.master_port, launch.world_size, is_server, true, timeout)
            .with_context(|| format!("{place}: rendezvous store at {endpoint}{hint}"))?;
        let prefix = CString::new(format!("rto_dist/attempt_{}", launch.restart_count)).expect("no NUL in a prefix");
        let mut group = ptr::null_mut();
        // SAFETY: `store` is live; `group` receives an owned pointer on success.
        ffi::check(unsafe {
            ffi::rto_dist_group_new(
                store.as_ptr(),
                prefix.as_ptr(),
                ffi::to_i32(launch.rank),
                ffi::to_i32(launch.world_size),
                backend,
                cuda_index,
                ffi::millis(timeout),
                &mut group,
            )
        })
        .with_context(|| format!("{place}: connecting to the other ranks via {endpoint}{hint}"))?;
        let group = NonNull::new(group).expect("the shim sets the group on success");
        Ok(ProcessGroup {
            rank: launch.rank,
            world_size: launch.world_size,
            local_rank: launch.local_rank,
            device,
            timeout,
            joined: Some(Joined { group, _store: store }),
        })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world_size(&self) -> usize {
        self.world_size
    }

    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// Rank 0: the process that writes shared outputs and logs.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// Whether c10d is in use (false for the single process of [`ProcessGroup::single`]).
    pub fn is_distributed(&self) -> bool {
        self.joined.is_some()
    }

    /// Replaces `tensor` on every rank by the reduction of all ranks' tensors.
    pub fn all_reduce(&self, tensor: &mut Tensor, op: ReduceOp) -> Result<()> {
        self.check_tensor(tensor, "all_reduce", "tensor")?;
        let Some(group) = self.group() else { return Ok(()) };
        // SAFETY: the tensor outlives the call, which waits for completion.
        let result = unsafe { ffi::rto_dist_all_reduce(group, ffi::tensor_mut(tensor), op.code()) };
        self.collective(result, || format!("all_reduce ({op}) of {}", describe(tensor)))
    }

    /// Copies rank `root`'s `tensor` into every rank's `tensor` (same shape and dtype).
    pub fn broadcast(&self, tensor: &mut Tensor, root: usize) -> Result<()> {
        self.check_tensor(tensor, "broadcast", "tensor")?;
        self.check_root(root, "broadcast")?;
        let Some(group) = self.group() else { return Ok(()) };
        // SAFETY: as in all_reduce.
        let result = unsafe { ffi::rto_dist_broadcast(group, ffi::tensor_mut(tensor), ffi::to_i32(root)) };
        self.collective(result, || format!("broadcast from rank {root} of {}", describe(tensor)))
    }

    /// `input` holds world_size equal slices along dim 0 (`[world × n, ...]`); rank r's `output`
    /// (`[n, ...]`) receives the reduction of every rank's slice r.
    pub fn reduce_scatter(&self, output: &mut Tensor, input: &Tensor, op: ReduceOp) -> Result<()> {
        self.check_tensor(output, "reduce_scatter", "output")?;
        self.check_tensor(input, "reduce_scatter", "input")?;
        self.check_world_shape(output, input, "reduce_scatter")?;
        let Some(group) = self.group() else {
            output.copy_(input);
            return Ok(());
        };
        // SAFETY: as in all_reduce; the shim only reads `input`.
        let result =
            unsafe { ffi::rto_dist_reduce_scatter(group, ffi::tensor_mut(output), ffi::tensor_ref(input), op.code()) };
        self.collective(result, || {
            format!("reduce_scatter ({op}) of input {} into {}", describe(input), describe(output))
        })
    }

    /// Every rank's `output` (`[world × n, ...]`) receives all ranks' `input`s (`[n, ...]`),
    /// rank r's at slice r.
    pub fn all_gather(&self, output: &mut Tensor, input: &Tensor) -> Result<()> {
        self.check_tensor(output, "all_gather", "output")?;
        self.check_tensor(input, "all_gather", "input")?;
        self.check_world_shape(input, output, "all_gather")?;
        let Some(group) = self.group() else {
            output.copy_(input);
            return Ok(());
        };
        // SAFETY: as in reduce_scatter.
        let result = unsafe { ffi::rto_dist_all_gather(group, ffi::tensor_mut(output), ffi::tensor_ref(input)) };
        self.collective(result, || format!("all_gather of input {} into {}", describe(input), describe(output)))
    }

    /// Returns once every rank has reached it.
    pub fn barrier(&self) -> Result<()> {
        let Some(group) = self.group() else { return Ok(()) };
        // SAFETY: the group is live.
        let result = unsafe { ffi::rto_dist_barrier(group) };
        self.collective(result, || "barrier".to_string())
    }

    fn group(&self) -> Option<*mut ffi::RtoGroup> {
        self.joined.as_ref().map(|j| j.group.as_ptr())
    }

    /// A failed collective's error, with where and the likely cause.
    fn collective(&self, result: *mut std::ffi::c_char, what: impl FnOnce() -> String) -> Result<()> {
        ffi::check(result).with_context(|| {
            format!(
                "{} failed on rank {} of {}: a peer is gone (its process exited or crashed) or did not reach \
                 this collective within the {:?} timeout; the first error in the other ranks' logs is the cause",
                what(),
                self.rank,
                self.world_size,
                self.timeout
            )
        })
    }

    fn check_tensor(&self, tensor: &Tensor, op: &str, name: &str) -> Result<()> {
        if tensor.device() != self.device {
            bail!(
                "{op}: {name} {} is not on the group's device {:?}: move it there first",
                describe(tensor),
                self.device
            );
        }
        if !tensor.is_contiguous() {
            bail!("{op}: {name} {} is not contiguous: pass `.contiguous()` (c10d reads raw memory)", describe(tensor));
        }
        Ok(())
    }

    fn check_root(&self, root: usize, op: &str) -> Result<()> {
        if root >= self.world_size {
            bail!("{op}: root rank {root} is not below the world size {}", self.world_size);
        }
        Ok(())
    }

    /// `big` must be `small` with dim 0 multiplied by the world size, in the same dtype.
    fn check_world_shape(&self, small: &Tensor, big: &Tensor, op: &str) -> Result<()> {
        let mut expected = small.size();
        if let Some(first) = expected.first_mut() {
            *first *= self.world_size as i64;
        }
        if expected.is_empty() || big.size() != expected || big.kind() != small.kind() {
            bail!(
                "{op}: {} and {} do not fit: the bigger one must be [world_size × n, ...] = {expected:?} of the \
                 smaller one's dtype (world size {})",
                describe(small),
                describe(big),
                self.world_size
            );
        }
        Ok(())
    }
}

/// Backend code for the shim (0 Gloo, 1 NCCL) and the CUDA index NCCL barriers use.
fn backend_for(device: Device, world_size: usize) -> Result<(i32, i32)> {
    match device {
        Device::Cpu => Ok((0, -1)),
        Device::Cuda(index) if cfg!(feature = "nccl") => Ok((1, ffi::to_i32(index))),
        Device::Cuda(_) => bail!(
            "a CUDA device in a process group of {world_size} needs NCCL, and this binary was built without it: \
             rebuild with `--features rto-dist/nccl` (CUDA headers, see crates/rto-dist/build.rs), or use \
             --device cpu (Gloo)"
        ),
        other => bail!("device {other:?} has no c10d backend here: use cpu (Gloo) or cuda (NCCL)"),
    }
}

/// What to check when the rendezvous fails.
fn rendezvous_hint(launch: &Launch, timeout: Duration) -> String {
    let role = if launch.agent_store {
        "torchrun's agent hosts the store (TORCHELASTIC_USE_AGENT_STORE=True)".to_string()
    } else if launch.rank == 0 {
        "this rank hosts the store: is the port free, and did every rank start".to_string()
    } else {
        "rank 0 hosts the store: did it start, with the same MASTER_ADDR/MASTER_PORT".to_string()
    };
    let slurm = match launch.launcher {
        Launcher::Slurm => "; under Slurm, run one task per rank with srun",
        Launcher::Torchrun => "",
    };
    format!(" ({role}, within the {timeout:?} timeout?{slurm})")
}

fn describe(tensor: &Tensor) -> String {
    format!("{:?} {:?} tensor on {:?}", tensor.size(), tensor.kind(), tensor.device())
}
