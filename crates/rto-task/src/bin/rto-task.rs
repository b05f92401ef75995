//! `rto-task`: build the synthetic task data, judge responses, label preference pairs.
//!
//!   rto-task generate --seed 20261126 --out data/toy
//!   rto-task judge --data samples.jsonl [--baseline sft_samples.jsonl]
//!   rto-task score --prompt "write 16 words about the ocean" --response "the calm whale ..."
//!   rto-task label --samples two_per_prompt.jsonl --out pairs.jsonl --seed 1
//!   rto-task credit --data samples.parquet > credit.jsonl

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use rto_data::dataset::{read_responses, ColumnNames};
use rto_task::{
    generate_dataset_with, gold_score, label_samples, score_breakdown, win_rate, write_pairs_jsonl, ScoreStats, Sizes,
    BT_TEMPERATURE, DEFAULT_SEED,
};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(name = "rto-task", about = "Synthetic instruction task with a gold judge")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write tokenizer, SFT demonstrations, RL and eval prompts and a manifest to a folder.
    Generate {
        #[arg(long, default_value_t = DEFAULT_SEED)]
        seed: u64,
        #[arg(long, default_value = "data/toy")]
        out: PathBuf,
        #[arg(long, default_value_t = Sizes::default().sft)]
        sft: usize,
        #[arg(long, default_value_t = Sizes::default().rl_prompts)]
        rl_prompts: usize,
        #[arg(long, default_value_t = Sizes::default().eval_prompts)]
        eval_prompts: usize,
    },
    /// Mean gold score of a (prompt, response) file (JSONL or Parquet); with --baseline, also
    /// the win rate against another file with the same prompts in the same order.
    Judge {
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        baseline: Option<PathBuf>,
        #[command(flatten)]
        columns: ColumnNames,
    },
    /// Print the gold-score breakdown of one response, word by word.
    Score {
        #[arg(long)]
        prompt: String,
        #[arg(long)]
        response: String,
    },
    /// Print, for each (prompt, response) row of a file (JSONL or Parquet, e.g. an annotate
    /// samples table), one JSON line: the gold score, its sequence part, and each word's points
    /// per judge rule (what pipelines/token_credit.py reads).
    Credit {
        #[arg(long)]
        data: PathBuf,
        #[command(flatten)]
        columns: ColumnNames,
    },
    /// Pair up sampled responses per prompt and label each pair by a Bradley–Terry draw on
    /// the gold scores; writes prompt/chosen/rejected/score_chosen/score_rejected JSONL.
    Label {
        #[arg(long)]
        samples: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Bradley–Terry temperature τ in gold-score points: P(a ≻ b) = σ((g_a − g_b)/τ).
        #[arg(long, default_value_t = BT_TEMPERATURE)]
        tau: f64,
        #[command(flatten)]
        columns: ColumnNames,
    },
}

/// (prompt text, response) rows; a message-list prompt is judged by its last user turn.
fn read_rows(path: &Path, columns: &ColumnNames) -> Result<Vec<(String, String)>> {
    Ok(read_responses(path, columns)?.into_iter().map(|r| (r.prompt.display_text().to_string(), r.response)).collect())
}

fn scores(rows: &[(String, String)]) -> Vec<f64> {
    rows.iter().map(|(p, r)| gold_score(p, r)).collect()
}

fn print_stats(label: &str, s: &ScoreStats) {
    println!("{label}: n={} mean={:.4} std={:.4} min={:.2} max={:.2}", s.n, s.mean, s.std, s.min, s.max);
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Generate { seed, out, sft, rl_prompts, eval_prompts } => {
            let sizes = Sizes { sft, rl_prompts, eval_prompts };
            let stats = generate_dataset_with(seed, sizes, &out)?;
            println!("wrote {} (seed {seed})", out.display());
            print_stats("sft gold score", &stats);
        }
        Command::Judge { data, baseline, columns } => {
            let rows = read_rows(&data, &columns)?;
            let ours = scores(&rows);
            print_stats(&data.display().to_string(), &ScoreStats::of(&ours));
            if let Some(base) = baseline {
                let base_rows = read_rows(&base, &columns)?;
                if base_rows.len() != rows.len() {
                    bail!("{} has {} rows, {} has {}", data.display(), rows.len(), base.display(), base_rows.len());
                }
                for (i, (a, b)) in rows.iter().zip(&base_rows).enumerate() {
                    if a.0 != b.0 {
                        bail!("row {i}: prompt in {} differs from {}'s", data.display(), base.display());
                    }
                }
                let theirs = scores(&base_rows);
                print_stats(&base.display().to_string(), &ScoreStats::of(&theirs));
                println!("win rate vs baseline: {:.4}", win_rate(&ours, &theirs)?);
            }
        }
        Command::Score { prompt, response } => {
            let b = score_breakdown(&prompt, &response);
            for w in &b.words {
                println!("{:>12} {:+.2}", w.word, w.score);
            }
            println!("{:>12} {:+.2}", "(sequence)", b.sequence);
            println!(
                "total {:+.2} = topic {:+.2} avoid {:+.2} mood {:+.2} repeat {:+.2} pairing {:+.2} grammar {:+.2} unknown {:+.2} ending {:+.2} length {:+.2}",
                b.total, b.topic, b.avoid, b.mood, b.repeat, b.pairing, b.grammar, b.unknown, b.ending, b.length
            );
        }
        Command::Credit { data, columns } => {
            let mut out = std::io::stdout().lock();
            for (prompt, response) in read_rows(&data, &columns)? {
                let b = score_breakdown(&prompt, &response);
                let line = serde_json::json!({"gold_score": b.total, "sequence": b.sequence, "words": b.words});
                writeln!(out, "{line}")?;
            }
        }
        Command::Label { samples, out, seed, tau, columns } => {
            if !(tau > 0.0 && tau.is_finite()) {
                bail!("--tau must be a positive number, got {tau}");
            }
            let rows = read_rows(&samples, &columns)?;
            let (pairs, stats) = label_samples(&rows, tau, seed);
            if pairs.is_empty() {
                bail!("{}: no prompt has two different responses to pair", samples.display());
            }
            write_pairs_jsonl(&out, &pairs)?;
            println!("wrote {} pairs to {}", pairs.len(), out.display());
            println!("{}", serde_json::to_string_pretty(&stats)?);
        }
    }
    Ok(())
}
