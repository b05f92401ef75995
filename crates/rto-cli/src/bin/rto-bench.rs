//! Times our side of each `make bench` pair and prints one JSON object per measurement.

use anyhow::Result;
use clap::{Parser, Subcommand};
use rto_cli::bench::{generation, DpoStepBench};
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
    },
    /// A DPO-shaped training step.
    DpoStep {
        #[arg(long, default_value_t = 16)]
        pairs: usize,
        #[arg(long, default_value_t = 128)]
        seq_len: usize,
    },
}

fn main() -> Result<()> {
    let args = Args::parse();
    let device = rto_model::parse_device(&args.device)?;
    match args.what {
        What::Generate { batch, prompt_len, new_tokens } => {
            generation(2, prompt_len, 4, device)?; // warm-up: thread pools, allocator
            for _ in 0..args.reps {
                let tps = generation(batch, prompt_len, new_tokens, device)?;
                println!("{}", serde_json::json!({"bench": "generate", "impl": "rto", "tokens_per_s": tps}));
            }
        }
        What::DpoStep { pairs, seq_len } => {
            let mut bench = DpoStepBench::new(pairs, seq_len, device)?;
            bench.step();
            for _ in 0..args.reps {
                let start = Instant::now();
                let loss = bench.step();
                let tps = bench.tokens_per_step() as f64 / start.elapsed().as_secs_f64();
                println!("{}", serde_json::json!({"bench": "dpo_step", "impl": "rto", "tokens_per_s": tps, "loss": loss}));
            }
        }
    }
    Ok(())
}
