//! The bad-input cases, a table per binary (see `super`): each names the binary, builds its
//! arguments against a [`super::Ctx`] and lists what the one error line must say.

use super::{s, set, Case};
use crate::support::files::{
    edit_checkpoint, int_prompt_parquet, pairs_parquet_with_score, truncate_half, with_f32_cell,
};
use crate::support::{copy_dir, GEN_FLAGS, SFT_FLAGS};
use std::fs;

const SFT_ROW: &str =
    r#"{"prompt":"give me 8 words about the farm","response":"the cat sleeps near the red barn now"}"#;
const PAIR_ROW: &str =
    r#"{"prompt":"give me 8 words about the farm","chosen":"the cat sleeps near the red barn now","rejected":"cat"}"#;

/// Every case, binary by binary.
pub(super) fn cases() -> Vec<Case> {
    [sft(), make_pairs(), dpo(), rm(), lora(), annotate(), ppo(), eval(), sample()].into_iter().flatten().collect()
}

/// sft-train's cases.
fn sft() -> Vec<Case> {
    vec![
        Case {
            name: "sft missing data file",
            bin: "sft-train",
            args: |c| c.sft_args(&["--data", &format!("{}/nope.jsonl", s(&c.dir))]),
            expect: &["nope.jsonl"],
        },
        Case {
            name: "sft truncated parquet",
            bin: "sft-train",
            args: |c| {
                let p = c.dir.join("half.parquet");
                truncate_half(&c.annotate.join("samples.parquet"), &p);
                c.sft_args(&["--data", &s(&p)])
            },
            expect: &["half.parquet", "Parquet"],
        },
        Case {
            name: "sft text file named .parquet",
            bin: "sft-train",
            args: |c| c.sft_args(&["--data", &c.file("text.parquet", SFT_ROW)]),
            expect: &["text.parquet", "Parquet"],
        },
        Case {
            name: "sft missing response column",
            bin: "sft-train",
            args: |c| c.sft_args(&["--data", &c.file("noresp.jsonl", r#"{"prompt":"hi"}"#)]),
            expect: &["noresp.jsonl", "no column `response`", "--response-column"],
        },
        Case {
            name: "sft mistyped response",
            bin: "sft-train",
            args: |c| {
                c.sft_args(&[
                    "--data",
                    &c.file("num.jsonl", format!("{SFT_ROW}\n{{\"prompt\":\"a\",\"response\":5}}\n")),
                ])
            },
            expect: &["num.jsonl", "row 1", "response"],
        },
        Case {
            name: "sft mistyped prompt column (parquet)",
            bin: "sft-train",
            args: |c| {
                let p = c.dir.join("intprompt.parquet");
                int_prompt_parquet(&p);
                c.sft_args(&["--data", &s(&p)])
            },
            expect: &["intprompt.parquet", "prompt"],
        },
        Case {
            name: "sft empty dataset",
            bin: "sft-train",
            args: |c| c.sft_args(&["--data", &c.file("empty.jsonl", "")]),
            expect: &["empty.jsonl", "empty"],
        },
        Case {
            name: "sft non-UTF-8 text",
            bin: "sft-train",
            args: |c| {
                c.sft_args(&["--data", &c.file("latin1.jsonl", b"{\"prompt\":\"caf\xe9\",\"response\":\"ok\"}\n")])
            },
            expect: &["latin1.jsonl", "UTF-8"],
        },
        Case {
            name: "sft every prompt over the limit",
            bin: "sft-train",
            args: |c| set(c.sft_args(&["--data", &s(&c.sft_data)]), "--max-prompt-len", "2"),
            expect: &["sft.jsonl", "no usable rows", "prompt_too_long", "raise --max-prompt-len"],
        },
        Case {
            name: "sft vocab smaller than tokenizer",
            bin: "sft-train",
            args: |c| {
                let cfg =
                    fs::read_to_string(&c.model_config).unwrap().replace("\"vocab_size\": 256", "\"vocab_size\": 100");
                set(c.sft_args(&["--data", &s(&c.sft_data)]), "--init-config", &c.file("vocab100.json", cfg))
            },
            expect: &["vocab100.json", "vocab_size 100", "tokenizer.json"],
        },
        Case {
            name: "sft unknown YAML key",
            bin: "sft-train",
            args: |c| c.sft_args(&["--data", &s(&c.sft_data), "--config", &c.file("typo.yaml", "learning_rat: 0.1\n")]),
            expect: &["typo.yaml", "learning_rat", "valid keys"],
        },
        Case {
            name: "sft batch not divisible by micro batch",
            bin: "sft-train",
            args: |c| c.sft_args(&["--data", &s(&c.sft_data), "--micro-batch-size", "3"]),
            expect: &["batch_size 8", "not a multiple of micro_batch_size 3"],
        },
        Case {
            name: "sft zero learning rate",
            bin: "sft-train",
            args: |c| c.sft_args(&["--data", &s(&c.sft_data), "--learning-rate", "0"]),
            expect: &["--learning-rate", "> 0, got 0"],
        },
        Case {
            name: "sft zero epochs",
            bin: "sft-train",
            args: |c| c.sft_args(&["--data", &s(&c.sft_data), "--epochs", "0"]),
            expect: &["epochs", "at least 1"],
        },
        Case {
            name: "sft missing init config",
            bin: "sft-train",
            args: |c| {
                set(c.sft_args(&["--data", &s(&c.sft_data)]), "--init-config", &format!("{}/missing.json", s(&c.dir)))
            },
            expect: &["model config", "missing.json", "No such file"],
        },
        Case {
            name: "sft store under a regular file",
            bin: "sft-train",
            args: |c| {
                let blocker = c.file("not-a-dir", "x");
                set(c.sft_args(&["--data", &s(&c.sft_data)]), "--store", &format!("{blocker}/store"))
            },
            expect: &["not-a-dir/store/sft", "Not a directory", "--store"],
        },
        Case {
            name: "sft checkpoint missing a tensor",
            bin: "sft-train",
            args: |c| {
                let m = c.model_copy(&c.sft, "no-norm", |d| edit_checkpoint(d, "model.norm.weight", None));
                c.args(SFT_FLAGS, &["--model", &m, "--data", &s(&c.sft_data)])
            },
            expect: &["model.safetensors", "model.norm.weight"],
        },
        Case {
            name: "sft checkpoint mis-shaped tensor",
            bin: "sft-train",
            args: |c| {
                let m = c.model_copy(&c.sft, "bad-shape", |d| {
                    edit_checkpoint(d, "model.embed_tokens.weight", Some(vec![32, 256]))
                });
                c.args(SFT_FLAGS, &["--model", &m, "--data", &s(&c.sft_data)])
            },
            expect: &["model.embed_tokens.weight", "256"],
        },
    ]
}

/// make-pairs's cases.
fn make_pairs() -> Vec<Case> {
    vec![
        Case {
            name: "pairs missing prompts file",
            bin: "make-pairs",
            args: |c| {
                let mut v = c.args(GEN_FLAGS, &["--prompts", "/nonexistent/prompts.jsonl"]);
                v.extend(["--model".into(), s(&c.sft)]);
                v
            },
            expect: &["/nonexistent/prompts.jsonl"],
        },
        Case {
            name: "pairs prompts without prompt column",
            bin: "make-pairs",
            args: |c| {
                let mut v = c.args(GEN_FLAGS, &["--prompts", &c.file("q.jsonl", "{\"question\":\"hi\"}\n")]);
                v.extend(["--model".into(), s(&c.sft)]);
                v
            },
            expect: &["q.jsonl", "no column", "--prompt-column"],
        },
        Case {
            name: "pairs model folder without weights",
            bin: "make-pairs",
            args: |c| {
                let m = c.model_copy(&c.sft, "noweights", |d| fs::remove_file(d.join("model.safetensors")).unwrap());
                c.args(GEN_FLAGS, &["--model", &m, "--prompts", &s(&c.prompts)])
            },
            expect: &["noweights", "model.safetensors"],
        },
        Case {
            name: "pairs zero generation batch",
            bin: "make-pairs",
            args: |c| {
                set(
                    c.args(GEN_FLAGS, &["--model", &s(&c.sft), "--prompts", &s(&c.prompts)]),
                    "--generation-batch-size",
                    "0",
                )
            },
            expect: &["generation_batch_size", "at least 1"],
        },
        Case {
            name: "pairs negative temperature",
            bin: "make-pairs",
            args: |c| c.args(GEN_FLAGS, &["--model", &s(&c.sft), "--prompts", &s(&c.prompts), "--temperature=-1"]),
            expect: &["temperature must be positive (got -1)", "greedy"],
        },
    ]
}

/// dpo-train's cases.
fn dpo() -> Vec<Case> {
    vec![
        Case {
            name: "dpo negative beta",
            bin: "dpo-train",
            args: |c| c.pref_args(&["--data", &s(&c.pairs_file), "--beta=-0.1"]),
            expect: &["beta must be a finite number > 0, got -0.1"],
        },
        Case {
            name: "dpo missing rejected column",
            bin: "dpo-train",
            args: |c| c.pref_args(&["--data", &c.file("norej.jsonl", r#"{"prompt":"a","chosen":"b"}"#)]),
            expect: &["norej.jsonl", "no column `rejected`", "--rejected-column"],
        },
        Case {
            name: "dpo truncated parquet pairs",
            bin: "dpo-train",
            args: |c| {
                let p = c.dir.join("pairs.parquet");
                truncate_half(&c.annotate.join("samples.parquet"), &p);
                c.pref_args(&["--data", &s(&p)])
            },
            expect: &["pairs.parquet"],
        },
        Case {
            name: "dpo batch not divisible by micro batch",
            bin: "dpo-train",
            args: |c| c.pref_args(&["--data", &s(&c.pairs_file), "--micro-batch-size", "3"]),
            expect: &["batch_size 4", "not a multiple of micro_batch_size 3"],
        },
        Case {
            name: "dpo NaN score in pairs",
            bin: "dpo-train",
            args: |c| {
                c.pref_args(&["--data", &c.file("nan.jsonl", format!("{PAIR_ROW}\n{{\"prompt\":\"a\",\"chosen\":\"b\",\"rejected\":\"c\",\"score_chosen\":\"NaN\"}}\n"))])
            },
            expect: &["nan.jsonl", "row 1", "score_chosen"],
        },
        Case {
            name: "dpo infinite score in parquet pairs",
            bin: "dpo-train",
            args: |c| {
                let p = c.dir.join("inf.parquet");
                pairs_parquet_with_score(&p, f64::INFINITY);
                c.pref_args(&["--data", &s(&p)])
            },
            expect: &["inf.parquet", "row 2", "score_chosen", "not a finite number"],
        },
    ]
}

/// rm-train's cases.
fn rm() -> Vec<Case> {
    vec![
        Case {
            name: "rm empty pairs file",
            bin: "rm-train",
            args: |c| c.pref_args(&["--data", &c.file("empty.jsonl", "\n")]),
            expect: &["empty.jsonl", "file is empty"],
        },
        Case {
            name: "rm non-UTF-8 pairs",
            bin: "rm-train",
            args: |c| {
                c.pref_args(&[
                    "--data",
                    &c.file("bin.jsonl", b"{\"prompt\":\"\xff\xfe\",\"chosen\":\"a\",\"rejected\":\"b\"}\n"),
                ])
            },
            expect: &["bin.jsonl", "UTF-8"],
        },
        Case {
            name: "rm unknown YAML key",
            bin: "rm-train",
            args: |c| {
                c.pref_args(&["--data", &s(&c.pairs_file), "--config", &c.file("rm.yaml", "epochs: 1\nwarmup: 3\n")])
            },
            expect: &["rm.yaml", "warmup", "valid keys"],
        },
        Case {
            name: "rm NaN score in parquet pairs",
            bin: "rm-train",
            args: |c| {
                let p = c.dir.join("nan.parquet");
                pairs_parquet_with_score(&p, f64::NAN);
                c.pref_args(&["--data", &s(&p)])
            },
            expect: &["nan.parquet", "row 2", "score_chosen", "NaN is not a finite number"],
        },
        Case {
            name: "rm store under a regular file",
            bin: "rm-train",
            args: |c| {
                let blocker = c.file("blocker", "x");
                set(c.pref_args(&["--data", &s(&c.pairs_file)]), "--store", &format!("{blocker}/runs"))
            },
            expect: &["blocker/runs/rm", "--store"],
        },
        Case {
            name: "rm model context shorter than the data",
            bin: "rm-train",
            args: |c| {
                let m = c.model_copy(&c.sft, "short-context", |d| {
                    let path = d.join("config.json");
                    let mut config: serde_json::Value =
                        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
                    config["max_position_embeddings"] = serde_json::json!(12);
                    fs::write(&path, config.to_string()).unwrap();
                });
                set(c.pref_args(&["--data", &s(&c.pairs_file)]), "--model", &m)
            },
            expect: &["short-context", "max_position_embeddings 12", "--max-prompt-len and --max-response-len"],
        },
        Case {
            name: "rm negative learning rate",
            bin: "rm-train",
            args: |c| c.pref_args(&["--data", &s(&c.pairs_file), "--learning-rate=-0.001"]),
            expect: &["--learning-rate", "> 0, got -0.001"],
        },
    ]
}

/// The LoRA flags' cases (issue 15).
fn lora() -> Vec<Case> {
    vec![
        Case {
            name: "lora alpha without rank",
            bin: "dpo-train",
            args: |c| c.pref_args(&["--data", &s(&c.pairs_file), "--lora-alpha", "8"]),
            expect: &["--lora-alpha given but --lora-rank is 0"],
        },
        Case {
            name: "lora unknown target module",
            bin: "dpo-train",
            args: |c| {
                c.pref_args(&["--data", &s(&c.pairs_file), "--lora-rank", "4", "--lora-target-modules", "q_proj,attn"])
            },
            expect: &["--lora-target-modules", "unknown LoRA target module `attn`", "q_proj, k_proj"],
        },
        Case {
            name: "annotate dpo adapter over a base of other shapes",
            bin: "token-reward-annotate",
            args: |c| {
                let base = c.model_copy(&c.sft, "wide-base", |dir| {
                    let path = dir.join("config.json");
                    let mut config: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
                    config["hidden_size"] = 64.into();
                    fs::write(&path, config.to_string()).unwrap();
                });
                let adapter = c.model_copy(&c.sft, "adapter", |dir| {
                    let config = serde_json::json!({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                        "target_modules": ["q_proj"], "base_model_name_or_path": base});
                    fs::write(dir.join("adapter_config.json"), config.to_string()).unwrap();
                });
                set(c.annotate_args(&["--data", &s(&c.pairs_file)]), "--dpo", &adapter)
            },
            expect: &["dpo model", "adapter/config.json", "(32, ", "(64, ", "does not belong to this base"],
        },
    ]
}

/// token-reward-annotate's cases.
fn annotate() -> Vec<Case> {
    vec![
        Case {
            name: "annotate clip 0 and beta1 0",
            bin: "token-reward-annotate",
            args: |c| c.annotate_args(&["--data", &s(&c.pairs_file), "--clip", "0", "--beta1", "0", "--mode", "rto"]),
            expect: &["beta1 = 0", "clip 0", "mode ppo"],
        },
        Case {
            name: "annotate reward model without score head",
            bin: "token-reward-annotate",
            args: |c| set(c.annotate_args(&["--data", &s(&c.pairs_file)]), "--reward-model", &s(&c.sft)),
            expect: &["score.weight", "is missing", "reward model folder (written by rm-train)"],
        },
        Case {
            name: "annotate dpo folder is not a model",
            bin: "token-reward-annotate",
            args: |c| set(c.annotate_args(&["--data", &s(&c.pairs_file)]), "--dpo", &s(&c.dir)),
            expect: &["is not a model folder", "config.json"],
        },
        Case {
            name: "annotate show NaN reward",
            bin: "token-reward-annotate",
            args: |c| {
                let t = c.dir.join("table");
                copy_dir(&c.annotate, &t);
                fs::remove_file(t.join("manifest.json")).unwrap();
                with_f32_cell(&c.annotate.join("tokens.parquet"), &t.join("tokens.parquet"), "reward", 3, f32::NAN);
                vec!["show".into(), s(&t)]
            },
            expect: &["tokens.parquet", "column `reward` holds NaN at row 3", "--force"],
        },
        Case {
            name: "annotate show infinite logp",
            bin: "token-reward-annotate",
            args: |c| {
                let t = c.dir.join("table");
                copy_dir(&c.annotate, &t);
                fs::remove_file(t.join("manifest.json")).unwrap();
                with_f32_cell(
                    &c.annotate.join("tokens.parquet"),
                    &t.join("tokens.parquet"),
                    "logp_dpo",
                    0,
                    f32::INFINITY,
                );
                vec!["show".into(), s(&t)]
            },
            expect: &["tokens.parquet", "column `logp_dpo` holds inf at row 0"],
        },
        Case {
            name: "annotate show truncated table",
            bin: "token-reward-annotate",
            args: |c| {
                let t = c.dir.join("table");
                copy_dir(&c.annotate, &t);
                fs::remove_file(t.join("manifest.json")).unwrap();
                truncate_half(&c.annotate.join("tokens.parquet"), &t.join("tokens.parquet"));
                vec!["show".into(), s(&t)]
            },
            expect: &["tokens.parquet", "not a readable Parquet file"],
        },
    ]
}

/// ppo-train's cases.
fn ppo() -> Vec<Case> {
    vec![
        Case {
            name: "ppo train batch not divisible by micro batch",
            bin: "ppo-train",
            args: |c| c.ppo_args(&["--prompts", &s(&c.prompts), "--micro-batch-size", "3"]),
            expect: &["micro_batch_size 3", "must divide train_batch_size 4"],
        },
        Case {
            name: "ppo forward batch not a multiple of the generation batch",
            bin: "ppo-train",
            args: |c| {
                let flags = ["--generation-batch-size", "2", "--local-rollout-forward-batch-size", "3"];
                c.ppo_args(&[&["--prompts", &s(&c.prompts)], &flags[..]].concat())
            },
            expect: &["--local-rollout-forward-batch-size 3", "multiple of the generation batch (2 prompts", "e.g. 2"],
        },
        Case {
            name: "ppo group estimator with one response per prompt",
            bin: "ppo-train",
            args: |c| c.ppo_args(&["--prompts", &s(&c.prompts), "--advantage-estimator", "grpo"]),
            expect: &[
                "--advantage-estimator grpo",
                "--n-samples-per-prompt of at least 2 (got 1)",
                "e.g. --n-samples-per-prompt 4",
            ],
        },
        Case {
            name: "ppo train batch not dividing the responses of K samples per prompt",
            bin: "ppo-train",
            args: |c| {
                let k = ["--advantage-estimator", "rloo", "--n-samples-per-prompt", "3"];
                set(c.ppo_args(&[&["--prompts", &s(&c.prompts)], &k[..]].concat()), "--train-batch-size", "8")
            },
            expect: &[
                "train_batch_size 8 must divide the 12 responses of a rollout",
                "--rollout-batch-size 4 × --n-samples-per-prompt 3",
                "e.g. 6",
            ],
        },
        Case {
            name: "ppo missing prompts",
            bin: "ppo-train",
            args: |c| c.ppo_args(&["--prompts", &format!("{}/gone.jsonl", s(&c.dir))]),
            expect: &["gone.jsonl"],
        },
        Case {
            name: "ppo zero actor lr",
            bin: "ppo-train",
            args: |c| c.ppo_args(&["--prompts", &s(&c.prompts), "--actor-lr", "0"]),
            expect: &["actor_lr", "> 0"],
        },
        Case {
            name: "ppo negative beta1",
            bin: "ppo-train",
            args: |c| c.ppo_args(&["--prompts", &s(&c.prompts), "--beta1=-1"]),
            expect: &["beta1 must be a finite number ≥ 0, got -1"],
        },
        Case {
            name: "ppo CUDA graph on the CPU",
            bin: "ppo-train",
            args: |c| c.ppo_args(&["--prompts", &s(&c.prompts), "--cuda-graph"]),
            expect: &["--cuda-graph needs a CUDA device (--device cuda)", "this run's device is cpu"],
        },
        Case {
            name: "ppo unknown judge",
            bin: "ppo-train",
            args: |c| set(c.ppo_args(&["--prompts", &s(&c.prompts)]), "--judge", "gpt5"),
            expect: &["gpt5", "toy"],
        },
    ]
}

/// rto-eval's cases.
fn eval() -> Vec<Case> {
    vec![
        Case {
            name: "eval unknown judge",
            bin: "rto-eval",
            args: |c| c.eval_args(&["--prompts", &s(&c.prompts), "--judge", "oracle"]),
            expect: &["oracle", "toy"],
        },
        Case {
            name: "eval missing baseline",
            bin: "rto-eval",
            args: |c| {
                set(
                    c.eval_args(&["--prompts", &s(&c.prompts), "--judge", "toy"]),
                    "--baseline",
                    &format!("{}/nobase", s(&c.dir)),
                )
            },
            expect: &["--baseline", "nobase", "does not exist"],
        },
        Case {
            name: "eval zero max new tokens",
            bin: "rto-eval",
            args: |c| set(c.eval_args(&["--prompts", &s(&c.prompts), "--judge", "toy"]), "--max-new-tokens", "0"),
            expect: &["max_new_tokens must be at least 1"],
        },
        Case {
            name: "eval top_p above 1",
            bin: "rto-eval",
            args: |c| c.eval_args(&["--prompts", &s(&c.prompts), "--judge", "toy", "--top-p", "1.5"]),
            expect: &["top_p must be in (0, 1], got 1.5"],
        },
        Case {
            name: "eval CUDA graph on the CPU",
            bin: "rto-eval",
            args: |c| c.eval_args(&["--prompts", &s(&c.prompts), "--judge", "toy", "--cuda-graph"]),
            expect: &["--cuda-graph needs a CUDA device (--device cuda)", "this run's device is cpu"],
        },
        Case {
            name: "eval prompts longer than every limit",
            bin: "rto-eval",
            args: |c| c.eval_args(&["--prompts", &s(&c.prompts), "--judge", "toy", "--max-prompt-len", "1"]),
            expect: &["prompts.jsonl", "no usable prompts", "raise --max-prompt-len"],
        },
    ]
}

/// rto-sample's cases.
fn sample() -> Vec<Case> {
    vec![
        Case {
            name: "sample missing model folder",
            bin: "rto-sample",
            args: |c| vec!["--model".into(), format!("{}/nomodel", s(&c.dir))],
            expect: &["model folder", "nomodel", "does not exist", "training stage"],
        },
        Case {
            name: "sample checkpoint missing lm_head",
            bin: "rto-sample",
            args: |c| {
                vec![
                    "--model".into(),
                    c.model_copy(&c.sft, "nohead", |d| edit_checkpoint(d, "lm_head.weight", None)),
                    "--max-new-tokens".into(),
                    "2".into(),
                ]
            },
            expect: &["lm_head.weight"],
        },
    ]
}
