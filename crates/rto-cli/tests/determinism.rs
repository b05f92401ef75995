//! Determinism at binary level: the whole pipeline (sft-train, make-pairs, dpo-train, rm-train,
//! token-reward-annotate, ppo-train, rto-eval) run twice with the same seed into two fresh
//! stores must give the same cache keys (folder names, printed paths) and the same files.
//! Wall-clock fields are the only exclusion, listed by name in `support::compare`.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use support::compare::{assert_all_verify, assert_same_outputs, published};
use support::{head_lines, repo_root, run_ok, scratch, ANNOTATE_FLAGS, GEN_FLAGS, PREF_FLAGS, SFT_FLAGS, TINY_CONFIG};

/// The pipeline's inputs, shared by both runs (only the store differs).
struct Inputs {
    config: PathBuf,
    tokenizer: PathBuf,
    sft_data: PathBuf,
    prompts: PathBuf,
}

fn inputs(dir: &Path) -> Inputs {
    let root = repo_root();
    let config = dir.join("tiny.json");
    fs::write(&config, TINY_CONFIG).unwrap();
    let sft_data = dir.join("sft.jsonl");
    head_lines(&root.join("data/toy/sft.jsonl"), 48, &sft_data);
    let prompts = dir.join("prompts.jsonl");
    head_lines(&root.join("data/toy/rl_prompts.jsonl"), 8, &prompts);
    Inputs { config, tokenizer: root.join("data/toy"), sft_data, prompts }
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// `base` flags, then `--store store`, then `extra` (path flags).
fn args(base: &[&str], store: &Path, extra: &[(&str, &Path)]) -> Vec<String> {
    let mut out: Vec<String> = base.iter().map(|x| x.to_string()).collect();
    out.extend(["--store".to_string(), s(store)]);
    for (flag, path) in extra {
        out.extend([flag.to_string(), s(path)]);
    }
    out
}

const PPO_FLAGS: &[&str] = &["--rollout-batch-size", "8", "--train-batch-size", "4", "--micro-batch-size", "2", "--max-new-tokens", "8", "--max-prompt-len", "48", "--iterations", "3", "--checkpoint-every", "2", "--save-rollouts-every", "2", "--eval-every", "2", "--kl-target", "2", "--kl-horizon", "100"];
const EVAL_FLAGS: &[&str] = &["--num-prompts", "8", "--max-new-tokens", "8", "--generation-batch-size", "8", "--max-prompt-len", "48", "--max-response-len", "48"];

/// Runs every stage into `store`; returns (binary, printed output folder) in pipeline order.
fn pipeline(store: &Path, i: &Inputs) -> Vec<(&'static str, PathBuf)> {
    let sft = run_ok("sft-train", &args(SFT_FLAGS, store, &[("--init-config", &i.config), ("--tokenizer", &i.tokenizer), ("--data", &i.sft_data)]));
    let pairs = run_ok("make-pairs", &args(GEN_FLAGS, store, &[("--model", &sft), ("--prompts", &i.sft_data)]));
    let pairs_file = pairs.join("pairs.jsonl");
    let dpo = run_ok("dpo-train", &args(PREF_FLAGS, store, &[("--model", &sft), ("--data", &pairs_file)]));
    let rm = run_ok("rm-train", &args(PREF_FLAGS, store, &[("--model", &sft), ("--data", &pairs_file)]));
    let annotate = run_ok("token-reward-annotate", &args(ANNOTATE_FLAGS, store, &[("--ref", &sft), ("--dpo", &dpo), ("--reward-model", &rm), ("--data", &pairs_file)]));
    let ppo = run_ok("ppo-train", &args(PPO_FLAGS, store, &[("--policy", &sft), ("--dpo", &dpo), ("--reward-model", &rm), ("--prompts", &i.prompts), ("--eval-prompts", &i.prompts)]));
    let eval = run_ok("rto-eval", &args(EVAL_FLAGS, store, &[("--model", &ppo), ("--baseline", &sft), ("--prompts", &i.prompts)]));
    vec![("sft-train", sft), ("make-pairs", pairs), ("dpo-train", dpo), ("rm-train", rm), ("token-reward-annotate", annotate), ("ppo-train", ppo), ("rto-eval", eval)]
}

#[test]
fn every_stage_gives_the_same_keys_and_files_in_two_stores() {
    let work = scratch();
    let i = inputs(work.path());
    let (store_a, store_b) = (work.path().join("a"), work.path().join("b"));
    let a = pipeline(&store_a, &i);
    let b = pipeline(&store_b, &i);
    for ((name, pa), (_, pb)) in a.iter().zip(&b) {
        assert!(pa.starts_with(&store_a) && pb.starts_with(&store_b), "{name}: output outside its store");
        assert_eq!(pa.strip_prefix(&store_a).unwrap(), pb.strip_prefix(&store_b).unwrap(), "{name}: different cache key");
    }
    // Every accepted folder, including intermediate ones (reference log-probs, generations).
    let (fa, fb) = (published(&store_a), published(&store_b));
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>(), "the two stores hold different folders");
    let stages: std::collections::BTreeSet<&str> = fa.keys().map(|k| k.split('/').next().unwrap()).collect();
    for stage in ["sft", "generate", "pairs", "dpo-ref-logps", "dpo", "rm", "annotate", "ppo", "eval"] {
        assert!(stages.contains(stage), "no {stage} folder in {stages:?}");
    }
    for (name, path) in &fa {
        assert_same_outputs(path, &store_a, &fb[name], &store_b);
    }
    assert_all_verify(&store_a, "after the first pipeline");
    assert_all_verify(&store_b, "after the second pipeline");
}
