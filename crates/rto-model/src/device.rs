//! `--device cpu|cuda|cuda:N`, checked against what libtorch actually sees.

use anyhow::{bail, Context, Result};
use tch::Device;

/// `cuda` is this process's GPU: `cuda:LOCAL_RANK` in a torchrun launch (`SLURM_LOCALID` under
/// srun), one GPU per local rank as NCCL expects, so one `--device cuda` serves every rank (and
/// every rank has the same key); `cuda:0` in a single process. `cuda:N` is taken as given.
pub fn parse_device(spec: &str) -> Result<Device> {
    let device = match spec.trim() {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(local_rank()?),
        other => match other.strip_prefix("cuda:") {
            Some(index) => Device::Cuda(
                index.parse().with_context(|| format!("--device {spec:?}: expected cuda:N with N a number"))?,
            ),
            None => bail!("--device {spec:?}: expected cpu, cuda or cuda:N"),
        },
    };
    if let Device::Cuda(index) = device {
        // Before libtorch is first asked about CUDA: it keeps the answer (see cuda_library).
        crate::cuda_library::load_libtorch_cuda().with_context(|| format!("--device {spec}"))?;
        let count = tch::Cuda::device_count();
        if spec.trim() == "cuda" && index > 0 && index as i64 >= count {
            bail!("--device cuda: this is local rank {index} and libtorch sees {count} CUDA device(s): launch at most one rank per GPU (torchrun --nproc-per-node {count})");
        }
        if index as i64 >= count {
            bail!("--device {spec}: libtorch sees {count} CUDA device(s); is this a GPU machine with the CUDA torch libraries?");
        }
    }
    Ok(device)
}

/// This process's rank on its node (LOCAL_RANK, else SLURM_LOCALID; 0 without a launch).
fn local_rank() -> Result<usize> {
    for name in ["LOCAL_RANK", "SLURM_LOCALID"] {
        if let Ok(text) = std::env::var(name) {
            return text.trim().parse().with_context(|| format!("{name}={text:?} is not a rank (a number >= 0)"));
        }
    }
    Ok(0)
}

/// Float kind from a `--dtype` flag.
pub fn parse_kind(spec: &str) -> Result<tch::Kind> {
    Ok(match spec {
        "f32" | "float32" => tch::Kind::Float,
        "bf16" | "bfloat16" => tch::Kind::BFloat16,
        "f16" | "float16" => tch::Kind::Half,
        other => bail!("--dtype {other:?}: expected f32, bf16 or f16"),
    })
}
