//! `--device cpu|cuda|cuda:N`, checked against what libtorch actually sees.

use anyhow::{bail, Context, Result};
use tch::Device;

pub fn parse_device(spec: &str) -> Result<Device> {
    let device = match spec.trim() {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        other => match other.strip_prefix("cuda:") {
            Some(index) => Device::Cuda(
                index.parse().with_context(|| format!("--device {spec:?}: expected cuda:N with N a number"))?,
            ),
            None => bail!("--device {spec:?}: expected cpu, cuda or cuda:N"),
        },
    };
    if let Device::Cuda(index) = device {
        let count = tch::Cuda::device_count();
        if index as i64 >= count {
            bail!("--device {spec}: libtorch sees {count} CUDA device(s); is this a GPU machine with the CUDA torch libraries?");
        }
    }
    Ok(device)
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
