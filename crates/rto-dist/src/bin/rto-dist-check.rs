//! Checks a launch before a training run: joins the process group from the environment
//! (torchrun or Slurm), all-reduces each rank's `rank + 1`, passes a barrier, and prints what
//! every rank saw. `torchrun --nproc-per-node 2 --no-python rto-dist-check [--device cuda]`.

use anyhow::{ensure, Result};
use clap::{Parser, ValueEnum};
use rto_dist::{Launch, ProcessGroup, ReduceOp};
use std::time::Duration;
use tch::{Device, Kind, Tensor};

#[derive(Parser)]
#[command(about = "Join the process group from torchrun's (or Slurm's) environment and run one all-reduce")]
struct Args {
    /// cpu: Gloo; cuda: NCCL on the GPU numbered LOCAL_RANK (needs the `nccl` build).
    #[arg(long, value_enum, default_value = "cpu")]
    device: Backend,
    /// Seconds the rendezvous and each collective may take before failing.
    #[arg(long, default_value_t = 60)]
    timeout_s: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    Cpu,
    Cuda,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let launch = Launch::from_env()?;
    let device = match args.device {
        Backend::Cpu => Device::Cpu,
        Backend::Cuda => Device::Cuda(launch.as_ref().map_or(0, |l| l.local_rank)),
    };
    let group = ProcessGroup::from_env(device, Duration::from_secs(args.timeout_s))?;
    let (rank, world) = (group.rank(), group.world_size());
    let mut value = Tensor::from_slice(&[rank as f64 + 1.0]).to_kind(Kind::Double).to_device(device);
    group.all_reduce(&mut value, ReduceOp::Sum)?;
    let sum = value.double_value(&[0]);
    let expected = (world * (world + 1) / 2) as f64;
    ensure!(sum == expected, "rank {rank}: the all-reduce gave {sum}, expected {expected}");
    group.barrier()?;
    let store = match &launch {
        Some(launch) if launch.agent_store => "torchrun's agent",
        Some(_) => "rank 0",
        None => "nobody (single process)",
    };
    println!(
        "rank {rank} of {world} (local rank {}, store hosted by {store}): all_reduce sum {sum} ok",
        group.local_rank()
    );
    Ok(())
}
