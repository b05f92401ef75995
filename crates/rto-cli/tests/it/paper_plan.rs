//! The paper configs' memory plans, by dry run: no weights, only the config.json (and tokenizer
//! files) of Llama-3-8B and Llama-3.2-1B written where pipelines/paper-llama3-8b*.yaml expect
//! them, the plan for a given world size checked against 80 GiB GPUs (`--plan-world-size`,
//! `--plan-memory-gib`).
//!
//! Llama-3-8B's parameters by hand: per layer q/k/v 4096 × (32 + 2·8)·128 = 25 165 824, o
//! 4096² = 16 777 216, MLP 3 · 4096 · 14336 = 176 160 768, two norms 8192: 218 112 000; × 32
//! layers = 6 979 584 000, plus the embedding and the untied LM head (128256 × 4096 each) and
//! the final norm: 8 030 261 248.

use crate::support::{bin, repo_root, scratch};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const LLAMA3_8B_PARAMETERS: u64 = 8_030_261_248;
const SFT: &str = "models/Llama-3-8b-sft-mixture";
const RM_BASE: &str = "models/Llama-3.2-1B";

/// A folder laid out as the paper configs expect: the two models' config.json (the toy
/// tokenizer stands in for Llama-3's: the plan does not read it, the compat check parses it),
/// and the data files (they must exist; a dry run does not read them).
fn paper_folder() -> tempfile::TempDir {
    let dir = scratch();
    let llama3_8b = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256,
        "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": false,
        "bos_token_id": 128000, "eos_token_id": 128001, "torch_dtype": "bfloat16"
    });
    let llama32_1b = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256,
        "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
        "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
        "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "tie_word_embeddings": true, "bos_token_id": 128000, "eos_token_id": 128001, "torch_dtype": "bfloat16"
    });
    for (folder, config) in [(SFT, llama3_8b), (RM_BASE, llama32_1b)] {
        let path = dir.path().join(folder);
        fs::create_dir_all(&path).unwrap();
        fs::write(path.join("config.json"), config.to_string()).unwrap();
        for file in ["tokenizer.json", "tokenizer_config.json"] {
            fs::copy(repo_root().join("data/toy").join(file), path.join(file)).unwrap();
        }
    }
    for data in ["data/paper/ultrafeedback_binarized/train_prefs.parquet", "data/paper/ultra_train.parquet"] {
        let path = dir.path().join(data);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, b"").unwrap();
    }
    dir
}

/// Section `name` of `pipelines/<config>` as a flat config file in `dir`.
fn section(dir: &Path, config: &str, name: &str) -> PathBuf {
    let text = fs::read_to_string(repo_root().join("pipelines").join(config)).unwrap();
    let all: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let part = all.get(name).unwrap_or_else(|| panic!("{config}: no section {name}"));
    let path = dir.join(format!("{config}.{name}.yaml"));
    fs::write(&path, serde_yaml::to_string(part).unwrap()).unwrap();
    path
}

struct DryRun {
    ok: bool,
    stderr: String,
}

impl DryRun {
    /// The plan's total, from its `total` line.
    fn total_gib(&self) -> f64 {
        self.mib("total") / 1024.0
    }

    /// The MiB of the plan line ending in `what`.
    fn mib(&self, what: &str) -> f64 {
        let line = self.stderr.lines().find(|l| l.trim_end().ends_with(what));
        let line = line.unwrap_or_else(|| panic!("no plan line `{what}`:\n{}", self.stderr));
        line.split_whitespace().next().unwrap().parse().unwrap()
    }

    fn error(&self) -> &str {
        self.stderr.lines().find(|l| l.starts_with("error")).unwrap_or_else(|| panic!("no error:\n{}", self.stderr))
    }
}

/// `binary --config <section> --dry-run` for `world` ranks on 80 GiB GPUs, run in `dir`.
fn dry_run(dir: &Path, binary: &str, section: &Path, world: u32, extra: &[&str]) -> DryRun {
    let out = Command::new(bin(binary))
        .arg("--config")
        .arg(section)
        .args(["--dry-run", "--plan-world-size", &world.to_string(), "--plan-memory-gib", "80"])
        .args(extra)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.stdout.is_empty(), "a dry run printed an output folder: {}", String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success() || out.status.code() == Some(1), "{binary}: {}\n{stderr}", out.status);
    assert!(!dir.join("runs").exists(), "a dry run wrote to the store");
    DryRun { ok: out.status.success(), stderr }
}

const MIB: f64 = 1024.0 * 1024.0;

#[test]
fn the_papers_dpo_fits_8_gpus_with_zero_1_and_not_without_or_on_one() {
    let dir = paper_folder();
    let dpo = section(dir.path(), "paper-llama3-8b.yaml", "dpo");
    let run = dry_run(dir.path(), "dpo-train", &dpo, 8, &[]);
    assert!(run.ok, "{}", run.stderr);
    eprintln!("paper dpo, 8 ranks: {:.1} GiB per GPU\n{}", run.total_gib(), run.stderr);
    assert!(run.total_gib() < 80.0, "{}", run.stderr);
    // bf16 weights and gradients whole (2 bytes each); fp32 masters (4) and moments (2 × 4) of
    // one eighth of the parameters on each rank.
    let shard = LLAMA3_8B_PARAMETERS.div_ceil(8) as f64;
    let by_hand = [
        ("policy: weights (8030.3 M parameters, bf16)", 2.0 * LLAMA3_8B_PARAMETERS as f64),
        ("policy: gradients (bf16)", 2.0 * LLAMA3_8B_PARAMETERS as f64),
        ("policy: fp32 master weights, sharded over 8 ranks (ZeRO-1)", 4.0 * shard),
        ("policy: AdamW moments (2 × fp32), sharded over 8 ranks (ZeRO-1)", 8.0 * shard),
    ];
    for (what, bytes) in by_hand {
        assert!((run.mib(what) - bytes / MIB).abs() < 0.1, "{what}: {} MiB, by hand {}", run.mib(what), bytes / MIB);
    }
    assert!(run.stderr.contains("gradient checkpointing)"), "{}", run.stderr);

    let unsharded = dry_run(dir.path(), "dpo-train", &dpo, 8, &["--zero-stage", "0"]);
    assert!(!unsharded.ok, "the paper's DPO fits 80 GiB without ZeRO-1?\n{}", unsharded.stderr);
    assert!(
        unsharded.error().contains("largest lines: policy: AdamW moments (2 × fp32) (59.8 GiB)"),
        "{}",
        unsharded.error()
    );
    let one_gpu = dry_run(dir.path(), "dpo-train", &dpo, 1, &[]);
    assert!(!one_gpu.ok, "the paper's DPO fits one 80 GiB GPU?\n{}", one_gpu.stderr);
    assert!(one_gpu.total_gib() > 80.0);

    let rm = dry_run(dir.path(), "rm-train", &section(dir.path(), "paper-llama3-8b.yaml", "rm"), 8, &[]);
    assert!(rm.ok && rm.total_gib() < 80.0, "{}", rm.stderr);
}

/// The paper's full-parameter PPO and RTO on 8 ranks: with ZeRO-1 (the actor's and critic's
/// fp32 masters and moments divided by 8), bf16 and checkpointing they fit 80 GiB per GPU by the
/// plan; without ZeRO-1 each rank holds the whole 8B actor's optimizer state (12 bytes a
/// parameter, 90 GiB) and they do not. (The DPO and reward-model inputs are stood in for by the
/// models they are trained from: the same shapes.)
#[test]
fn the_papers_full_ppo_and_rto_fit_8_gpus_with_zero_1_and_not_without() {
    let dir = paper_folder();
    for name in ["ppo", "rto"] {
        let file = section(dir.path(), "paper-llama3-8b.yaml", name);
        let inputs = ["--dpo", SFT, "--reward-model", RM_BASE];
        let run = dry_run(dir.path(), "ppo-train", &file, 8, &inputs);
        eprintln!("paper {name}, 8 ranks: {:.1} GiB per GPU\n{}", run.total_gib(), run.stderr);
        assert!(run.ok && run.total_gib() < 80.0, "{name} does not fit?\n{}", run.stderr);
        let moments = LLAMA3_8B_PARAMETERS as f64 * 8.0 / 8.0 / MIB;
        let line = run.mib("actor: AdamW moments (2 × fp32), sharded over 8 ranks (ZeRO-1)");
        assert!((line - moments).abs() < 1.0, "{name}: moments line {line} MiB, expected {moments}");
        let unsharded = dry_run(dir.path(), "ppo-train", &file, 8, &[&inputs[..], &["--zero-stage", "0"]].concat());
        assert!(!unsharded.ok, "{name} fits 80 GiB without ZeRO-1?\n{}", unsharded.stderr);
        assert!(unsharded.error().contains("actor: AdamW moments (2 × fp32) (59.8 GiB)"), "{}", unsharded.error());
    }
}

/// The LoRA RTO stage on one 80 GiB GPU: the plan names the largest scoring forward batch
/// it allows (a multiple of the config's generation batch of 8 prompts, above it: the frozen
/// forwards are not held to the KV cache's batch), a dry run at that size fits, and one
/// generation batch more is refused with the largest named in the error.
#[test]
fn the_plan_names_the_largest_rollout_forward_batch_and_means_it() {
    let dir = paper_folder();
    let config = "paper-llama3-8b-lora.yaml";
    let rto = section(dir.path(), config, "rto");
    let inputs = ["--dpo", SFT, "--reward-model", RM_BASE];
    let run = dry_run(dir.path(), "ppo-train", &rto, 1, &inputs);
    assert!(run.ok, "{}", run.stderr);
    let marker =
        "the largest --local-rollout-forward-batch-size this plan allows on each rank's GPU (--plan-memory-gib 80) is ";
    let line = run.stderr.lines().find(|l| l.contains(marker)).unwrap_or_else(|| panic!("{}", run.stderr));
    let largest: usize = line.split(marker).nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    eprintln!("{line}");
    assert!(largest > 8 && largest.is_multiple_of(8), "{line}");
    let at = |n: usize| {
        dry_run(
            dir.path(),
            "ppo-train",
            &rto,
            1,
            &[&inputs[..], &["--local-rollout-forward-batch-size", &n.to_string()]].concat(),
        )
    };
    let fits = at(largest);
    assert!(fits.ok && fits.total_gib() <= 80.0 && fits.total_gib() > run.total_gib(), "{}", fits.stderr);
    let over = at(largest + 8);
    assert!(!over.ok, "{} prompts per forward fit too:\n{}", largest + 8, over.stderr);
    assert!(
        over.error().contains(&format!(
            "--local-rollout-forward-batch-size {largest} (with this --generation-batch-size) is the largest"
        )),
        "{}",
        over.error()
    );
}

/// pipelines/paper-llama3-8b-lora.yaml: the DPO model an adapter over the SFT base (stood in
/// for by an adapter_config.json naming it), the 8B actor's adapters r = 16 on the seven
/// projections (1 310 720 parameters a layer: 41.9 M), the reference and the DPO model on the
/// actor's base: every stage fits one 80 GiB GPU.
#[test]
fn the_lora_rto_chain_fits_one_80_gib_gpu() {
    let dir = paper_folder();
    let config = "paper-llama3-8b-lora.yaml";
    let dpo = dry_run(dir.path(), "dpo-train", &section(dir.path(), config, "dpo"), 1, &[]);
    assert!(dpo.ok && dpo.total_gib() < 80.0, "{}", dpo.stderr);
    let rm = dry_run(dir.path(), "rm-train", &section(dir.path(), config, "rm"), 1, &[]);
    assert!(rm.ok && rm.total_gib() < 80.0, "{}", rm.stderr);

    let adapter = dir.path().join("dpo-adapter");
    fs::create_dir_all(&adapter).unwrap();
    let targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
    let adapter_config = serde_json::json!({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": dir.path().join(SFT),
        "r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "bias": "none", "target_modules": targets
    });
    fs::write(adapter.join("adapter_config.json"), adapter_config.to_string()).unwrap();
    let rto = section(dir.path(), config, "rto");
    let run = dry_run(dir.path(), "ppo-train", &rto, 1, &["--dpo", "dpo-adapter", "--reward-model", RM_BASE]);
    eprintln!("LoRA rto, one GPU: {:.1} GiB\n{}", run.total_gib(), run.stderr);
    assert!(run.ok && run.total_gib() < 80.0, "{}", run.stderr);
    let adapters = 32.0 * 1_310_720.0 * 2.0 / MIB;
    assert!((run.mib("actor: LoRA adapters (r=16, 41.94 M parameters, bf16)") - adapters).abs() < 0.1);
    assert!(run.stderr.contains("dpo: LoRA adapters over actor's base weights (r=16"), "{}", run.stderr);
    assert!(!run.stderr.contains("reference: weights"), "the reference holds a second base:\n{}", run.stderr);
}

/// The launcher's dry run: every section of a config, its earlier stages' outputs stood in for
/// by their inputs; exit 0 when all fit, 1 naming those that do not.
#[test]
fn paper_sh_dry_runs_the_chain() {
    let dir = paper_folder();
    let launcher = |config: &str, nproc: &str| {
        Command::new(repo_root().join("pipelines/paper.sh"))
            .arg("--dry-run")
            .current_dir(dir.path())
            .env("CONFIG", repo_root().join("pipelines").join(config))
            .env("NPROC", nproc)
            .env("BIN", Path::new(bin("dpo-train")).parent().unwrap())
            .env("PYTHON", rto_test_support::venv_python())
            .output()
            .unwrap()
    };
    let lora = launcher("paper-llama3-8b-lora.yaml", "1");
    let stderr = String::from_utf8_lossy(&lora.stderr);
    assert!(lora.status.success(), "{stderr}");
    for part in ["== dpo (dpo-train)", "== rm (rm-train)", "== rto (ppo-train)", "every stage fits 1 ranks"] {
        assert!(stderr.contains(part), "no `{part}` in:\n{stderr}");
    }
    assert!(stderr
        .contains("runs/latest/paper-lora-dpo does not exist yet; planning --dpo as models/Llama-3-8b-sft-mixture"));
    let full = launcher("paper-llama3-8b.yaml", "8");
    let stderr = String::from_utf8_lossy(&full.stderr);
    assert!(full.status.success(), "{stderr}");
    assert!(stderr.contains("every stage fits 8 ranks"), "{stderr}");
    // On 4 ranks the ZeRO-1 shards are twice as large: PPO and RTO no longer fit.
    let half = launcher("paper-llama3-8b.yaml", "4");
    let stderr = String::from_utf8_lossy(&half.stderr);
    assert_eq!(half.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("does not fit (or failed): ppo rto"), "{stderr}");
}
