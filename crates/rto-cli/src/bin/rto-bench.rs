//! Times our side of each `make bench` pair and prints one JSON object per measurement.

use anyhow::Result;
use clap::{Parser, Subcommand};
use rto_cli::bench::{
    bench_config, device_logprob_difference, generation, graph_replay_difference, large_config, DpoStepBench,
};
use std::time::Instant;

#[derive(Parser)]
#[command(about = "Benchmarks for make bench (driven by bench/bench_model.py)")]
struct Args {
    #[command(subcommand)]
    what: What,
    #[arg(long, default_value = "cpu", global = true)]
    device: String,
    #[arg(long, default_value_t = 3, global = true)]
    reps: usize,
    /// `bench` (the workspace issue's config) or `large` (~0.5B, for GPUs).
    #[arg(long, default_value = "bench", global = true)]
    size: String,
    /// f32, bf16 or f16 (generation only; training benches run f32).
    #[arg(long, default_value = "f32", global = true)]
    dtype: String,
}

#[derive(Subcommand)]
enum What {
    /// Sampling throughput with the KV cache.
    Generate {
        #[arg(long, default_value_t = 32)]
        batch: usize,
        #[arg(long, default_value_t = 32)]
        prompt_len: usize,
        #[arg(long, default_value_t = 64)]
        new_tokens: usize,
        /// Replay the decode steps from a CUDA graph (a build with `make build-cuda`).
        #[arg(long)]
        cuda_graph: bool,
    },
    /// Max |CPU − device| response log-prob on a checkpoint folder.
    Parity {
        #[arg(long)]
        model: std::path::PathBuf,
    },
    /// Decode steps replayed from a CUDA graph vs the same steps run eagerly (a random model of
    /// --size in --dtype; a build with `make build-cuda`).
    GraphParity,
    /// A DPO-shaped training step.
    DpoStep {
        #[arg(long, default_value_t = 16)]
        pairs: usize,
        #[arg(long, default_value_t = 128)]
        seq_len: usize,
    },
}

fn main() {
    rto_cli::main_with(run)
}

fn run() -> Result<()> {
    let args = Args::parse();
    let device = rto_model::parse_device(&args.device)?;
    let kind = rto_model::parse_kind(&args.dtype)?;
    let config = match args.size.as_str() {
        "bench" => bench_config(),
        "large" => large_config(),
        other => anyhow::bail!("--size {other:?}: expected bench or large"),
    };
    match args.what {
        What::Generate { batch, prompt_len, new_tokens, cuda_graph } => {
            let how = (kind, cuda_graph);
            generation(config.clone(), 2, prompt_len, 4, device, how)?; // warm-up: thread pools, allocator
            for _ in 0..args.reps {
                let tps = generation(config.clone(), batch, prompt_len, new_tokens, device, how)?;
                println!(
                    "{}",
                    serde_json::json!({"bench": "generate", "impl": "rto", "tokens_per_s": tps, "device": args.device, "size": args.size, "dtype": args.dtype, "cuda_graph": cuda_graph})
                );
            }
        }
        What::Parity { model } => {
            let diff = device_logprob_difference(&model, device)?;
            println!("{}", serde_json::json!({"bench": "parity", "max_abs_logprob_diff": diff, "device": args.device}));
        }
        What::GraphParity => {
            let (same_tokens, diff) = graph_replay_difference(config, device, kind)?;
            println!(
                "{}",
                serde_json::json!({"bench": "graph_parity", "same_tokens": same_tokens, "max_abs_logprob_diff": diff, "device": args.device, "size": args.size, "dtype": args.dtype})
            );
        }
        What::DpoStep { pairs, seq_len } => {
            let mut bench = DpoStepBench::new(config, pairs, seq_len, device)?;
            bench.step(); // two warm-up steps: the allocator and thread pools settle
            bench.step();
            for _ in 0..args.reps {
                let start = Instant::now();
                let loss = bench.step();
                let tps = bench.tokens_per_step() as f64 / start.elapsed().as_secs_f64();
                println!(
                    "{}",
                    serde_json::json!({"bench": "dpo_step", "impl": "rto", "tokens_per_s": tps, "loss": loss, "device": args.device, "size": args.size})
                );
            }
        }
    }
    Ok(())
}
