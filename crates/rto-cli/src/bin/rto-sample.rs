//! Samples text from a model folder, or from a random-init model when none is given: the
//! smallest end-to-end check that libtorch, the model and the sampler work on this machine.

use anyhow::Result;
use clap::Parser;
use rto_model::{generate, parse_device, CausalLm, Head, ModelConfig, SamplingConfig, TextTokenizer};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(version, about = "Sample continuations from a Llama-family model folder")]
struct Args {
    /// HF model folder (config.json, model.safetensors, tokenizer.json).
    #[arg(long, required_unless_present = "random_init")]
    model: Option<PathBuf>,
    /// Use a small random Llama instead of a folder (prompt ids are bytes of the text).
    #[arg(long)]
    random_init: bool,
    #[arg(long, default_value = "Hello")]
    prompt: String,
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    #[arg(long, default_value_t = 0)]
    top_k: i64,
    #[arg(long)]
    greedy: bool,
    #[arg(long, default_value_t = 2)]
    num_samples: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Replay the decode steps from a CUDA graph (CUDA only; a build with `make build-cuda`).
    #[arg(long)]
    cuda_graph: bool,
}

fn main() {
    rto_cli::main_with(run)
}

fn run() -> Result<()> {
    let args = Args::parse();
    let device = parse_device(&args.device)?;
    let mut config = SamplingConfig {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        greedy: args.greedy,
        seed: args.seed,
        stop_ids: vec![],
        cuda_graph: args.cuda_graph,
    };
    let (model, tokenizer) = match &args.model {
        Some(dir) => {
            // A store folder is verified first, as the stages do with their inputs.
            if dir.join(rto_data::store::MANIFEST_FILE).is_file() {
                rto_data::store::verify(dir)?;
            }
            let model = CausalLm::load(dir, Head::LanguageModel, device, tch::Kind::Float)?;
            let tokenizer = TextTokenizer::from_dir(dir)?;
            tokenizer.check_fits(model.config.vocab_size, dir)?;
            config.stop_ids = tokenizer.eos_id.into_iter().chain(model.config.eos_token_ids()).collect();
            (model, Some(tokenizer))
        }
        None => {
            let config = ModelConfig::small_llama(256, 128, 344, 2, 4, 2, 512);
            (CausalLm::random(config, Head::LanguageModel, device, tch::Kind::Float, args.seed)?, None)
        }
    };
    let prompt: Vec<i64> = match &tokenizer {
        Some(t) => t.encode(&args.prompt, true)?,
        None => args.prompt.bytes().map(i64::from).collect(),
    };
    let prompts = vec![prompt; args.num_samples];
    let start = std::time::Instant::now();
    let generation = generate(&model, &prompts, &config, tokenizer.as_ref().map_or(0, |t| t.pad_id))?;
    let elapsed = start.elapsed().as_secs_f64();
    let total: usize = generation.responses.iter().map(Vec::len).sum();
    for (i, response) in generation.responses.iter().enumerate() {
        let text = match &tokenizer {
            Some(t) => t.decode(response, true)?,
            None => format!("{response:?}"),
        };
        println!("[{i}] {}{text}", args.prompt);
    }
    eprintln!("{total} tokens in {elapsed:.2}s ({:.0} tok/s) on {:?}", total as f64 / elapsed, device);
    Ok(())
}
