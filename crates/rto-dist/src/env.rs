//! Where this process sits in a launch, read from torchrun's environment or, without torchrun,
//! from Slurm's. No variable set means a single process (`Launch::from_env` returns `None`).

use anyhow::{bail, Context, Result};
use std::fmt;
use std::str::FromStr;

/// Who set the variables: it decides the hints in error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// torchrun (or anything setting RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT, as tests do).
    Torchrun,
    /// `srun` without torchrun: SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID, MASTER_ADDR/PORT by hand.
    Slurm,
}

/// One process's place in a multi-process launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub rank: usize,
    pub world_size: usize,
    /// The rank among this node's processes (with NCCL, the CUDA device index by convention).
    pub local_rank: usize,
    /// Processes on this node: torchrun's LOCAL_WORLD_SIZE (WORLD_SIZE when unset); `None`
    /// under Slurm, whose per-node task counts need not be uniform.
    pub local_world_size: Option<usize>,
    pub master_addr: String,
    pub master_port: u16,
    /// TORCHELASTIC_USE_AGENT_STORE=True: torchrun's agent already hosts the TCPStore at
    /// MASTER_ADDR:MASTER_PORT, so every rank (rank 0 too) connects as a client.
    pub agent_store: bool,
    /// TORCHELASTIC_RESTART_COUNT: which attempt this is; keys of earlier attempts stay apart.
    pub restart_count: u64,
    pub launcher: Launcher,
}

impl fmt::Display for Launcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Launcher::Torchrun => "torchrun",
            Launcher::Slurm => "Slurm",
        })
    }
}

impl Launch {
    /// Reads the process environment; see [`Launch::from_vars`].
    pub fn from_env() -> Result<Option<Launch>> {
        Launch::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads a launch from `var` (an environment lookup): torchrun's RANK and WORLD_SIZE first,
    /// else Slurm's SLURM_PROCID; `None` when neither is there (a single process). Every bad or
    /// missing value is an error naming the variable and the fix.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Launch>> {
        if var("RANK").is_some() || var("WORLD_SIZE").is_some() {
            return torchrun(&var).map(Some);
        }
        if var("SLURM_PROCID").is_some() {
            return slurm(&var).map(Some);
        }
        Ok(None)
    }
}

fn torchrun(var: &impl Fn(&str) -> Option<String>) -> Result<Launch> {
    let rank: usize = required(var, "RANK", "RANK and WORLD_SIZE go together (torchrun sets both)")?;
    let world_size = world_size(var, "WORLD_SIZE")?;
    check_below(rank, "RANK", world_size, "WORLD_SIZE")?;
    let local_world_size = optional(var, "LOCAL_WORLD_SIZE")?.unwrap_or(world_size);
    if local_world_size == 0 {
        bail!("LOCAL_WORLD_SIZE=0: it counts this node's processes, at least 1 (torchrun sets it)");
    }
    // A hand launch on one node may leave LOCAL_RANK out: there it equals RANK.
    let local_rank = optional(var, "LOCAL_RANK")?.unwrap_or(rank);
    check_below(local_rank, "LOCAL_RANK", local_world_size, "LOCAL_WORLD_SIZE")?;
    let hint = "torchrun sets it; when launching by hand, set it to rank 0's host and a free port";
    Ok(Launch {
        rank,
        world_size,
        local_rank,
        local_world_size: Some(local_world_size),
        master_addr: master_addr(var, hint)?,
        master_port: master_port(var, hint)?,
        agent_store: agent_store(var)?,
        restart_count: optional(var, "TORCHELASTIC_RESTART_COUNT")?.unwrap_or(0),
        launcher: Launcher::Torchrun,
    })
}

fn slurm(var: &impl Fn(&str) -> Option<String>) -> Result<Launch> {
    let rank: usize = required(var, "SLURM_PROCID", "srun sets it")?;
    let world_size = world_size(var, "SLURM_NTASKS")?;
    check_below(rank, "SLURM_PROCID", world_size, "SLURM_NTASKS")?;
    let local_rank = required(var, "SLURM_LOCALID", "srun sets it with SLURM_PROCID")?;
    let hint = "without torchrun, Slurm runs need it in the job script: \
                `export MASTER_ADDR=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)` \
                and `export MASTER_PORT=29500` (any free port), or launch with torchrun";
    Ok(Launch {
        rank,
        world_size,
        local_rank,
        local_world_size: None,
        master_addr: master_addr(var, hint)?,
        master_port: master_port(var, hint)?,
        agent_store: false,
        restart_count: 0,
        launcher: Launcher::Slurm,
    })
}

fn world_size(var: &impl Fn(&str) -> Option<String>, name: &str) -> Result<usize> {
    let size: usize = required(var, name, "RANK and WORLD_SIZE go together (torchrun sets both)")?;
    if size == 0 {
        bail!("{name}=0: the number of processes is at least 1");
    }
    Ok(size)
}

fn check_below(value: usize, name: &str, bound: usize, bound_name: &str) -> Result<()> {
    if value >= bound {
        bail!(
            "{name}={value} is not below {bound_name}={bound}: ranks run from 0 to {bound_name}-1; \
             set the two consistently (torchrun and srun do)"
        );
    }
    Ok(())
}

fn master_addr(var: &impl Fn(&str) -> Option<String>, hint: &str) -> Result<String> {
    match var("MASTER_ADDR") {
        Some(addr) if !addr.is_empty() => Ok(addr),
        _ => {
            bail!("MASTER_ADDR is not set (rank 0's host name or address, where the rendezvous store listens): {hint}")
        }
    }
}

fn master_port(var: &impl Fn(&str) -> Option<String>, hint: &str) -> Result<u16> {
    let port: u16 = required(var, "MASTER_PORT", hint)?;
    if port == 0 {
        bail!("MASTER_PORT=0: the rendezvous store needs a fixed port every rank knows: {hint}");
    }
    Ok(port)
}

/// Torch compares the value with Python's `str(True)`; anything but True/False is a typo here.
fn agent_store(var: &impl Fn(&str) -> Option<String>) -> Result<bool> {
    match var("TORCHELASTIC_USE_AGENT_STORE").as_deref() {
        None | Some("False") => Ok(false),
        Some("True") => Ok(true),
        Some(other) => bail!(
            "TORCHELASTIC_USE_AGENT_STORE={other:?}: torchrun sets True (its agent hosts the store) or False; \
             unset it for a hand launch"
        ),
    }
}

fn required<T: FromStr>(var: &impl Fn(&str) -> Option<String>, name: &str, hint: &str) -> Result<T> {
    optional(var, name)?.with_context(|| format!("{name} is not set: {hint}"))
}

fn optional<T: FromStr>(var: &impl Fn(&str) -> Option<String>, name: &str) -> Result<Option<T>> {
    let Some(text) = var(name) else { return Ok(None) };
    match text.trim().parse() {
        Ok(value) => Ok(Some(value)),
        Err(_) => bail!("{name}={text:?} is not a non-negative whole number in range: fix or unset {name}"),
    }
}
