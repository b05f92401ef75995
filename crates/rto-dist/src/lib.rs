//! The process group of a multi-process run, on PyTorch's c10d (Gloo on CPU; NCCL on CUDA with
//! the `nccl` feature), driven through a small C++ shim (csrc/shim.cpp) compiled against the
//! venv's torch headers.
//!
//! [`ProcessGroup::from_env`] reads torchrun's environment (Slurm's as a fallback, see
//! [`Launch::from_vars`]). Without any of it the process is alone: world size 1, rank 0, no
//! c10d at all, and every collective leaves its tensor's bytes as they were, so single-process
//! runs behave exactly as before this crate existed. Errors from C++ come back as `anyhow`
//! errors that say which collective, on which rank, with which tensor, and what to check.

mod env;
mod ffi;
mod group;
mod host;
mod store;

pub use env::{Launch, Launcher};
pub use group::{ProcessGroup, ReduceOp};
pub use store::StoreServer;
