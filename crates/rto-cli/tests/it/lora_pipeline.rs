//! The toy chain with LoRA: a LoRA DPO adapter is accepted wherever a model folder is
//! (token-reward-annotate's --dpo, ppo-train's --dpo and --policy, rto-eval's --model), and the
//! memory plans of annotate and of a LoRA ppo-train hold no second copy of the base (the
//! reference and the DPO model stand on the loaded base's weights).

use crate::support::{fixture, run, run_ok, scratch, ANNOTATE_FLAGS, PPO_FLAGS, PREF_FLAGS};
use std::path::{Path, PathBuf};

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

fn with(flags: &[&str], rest: &[String]) -> Vec<String> {
    flags.iter().map(|x| x.to_string()).chain(rest.iter().cloned()).collect()
}

/// dpo-train --lora-rank 4 on the fixture's SFT model, into `store`.
fn lora_dpo(store: &Path) -> PathBuf {
    let f = fixture();
    let rest = [
        "--store".into(),
        s(store),
        "--model".into(),
        s(&f.sft),
        "--data".into(),
        s(&f.pairs_file),
        "--lora-rank".into(),
        "4".into(),
    ];
    run_ok("dpo-train", &with(PREF_FLAGS, &rest))
}

fn assert_lines(stderr: &str, present: &[&str], absent: &[&str]) {
    for line in present {
        assert!(stderr.contains(line), "no `{line}` in:\n{stderr}");
    }
    for line in absent {
        assert!(!stderr.contains(line), "`{line}` in:\n{stderr}");
    }
}

#[test]
fn lora_adapters_run_through_annotate_ppo_and_eval_without_a_second_base() {
    let f = fixture();
    let work = scratch();
    let store = work.path().join("store");
    let dpo = lora_dpo(&store);
    assert!(dpo.join("adapter_config.json").is_file(), "{}", dpo.display());

    // annotate: --dpo an adapter over --ref; its plan counts only the adapter.
    let annotate = with(
        ANNOTATE_FLAGS,
        &[
            "--store".into(),
            s(&store),
            "--ref".into(),
            s(&f.sft),
            "--dpo".into(),
            s(&dpo),
            "--data".into(),
            s(&f.pairs_file),
        ],
    );
    let dry = run("token-reward-annotate", &with(&["--dry-run"], &annotate));
    assert!(dry.status.success(), "{}", dry.stderr);
    assert_lines(
        &dry.stderr,
        &["reference: weights", "dpo model: LoRA adapters over reference's base weights"],
        &["dpo model: weights"],
    );
    let table = run_ok("token-reward-annotate", &annotate);
    assert!(table.join("tokens.parquet").is_file());

    // ppo-train --lora-rank 4 on the SFT folder with the DPO adapter: neither the reference
    // nor the DPO model loads the base again.
    let ppo = |policy: &Path, extra: &[&str]| {
        let rest: Vec<String> = [
            "--store",
            &s(&store),
            "--policy",
            &s(policy),
            "--dpo",
            &s(&dpo),
            "--reward-model",
            &s(&f.rm),
            "--prompts",
            &s(&f.prompts),
            "--iterations",
            "1",
            "--actor-lr",
            "1e-3",
        ]
        .iter()
        .chain(extra)
        .map(|x| x.to_string())
        .collect();
        with(PPO_FLAGS, &rest)
    };
    let dry = run("ppo-train", &ppo(&f.sft, &["--lora-rank", "4", "--dry-run"]));
    assert!(dry.status.success(), "{}", dry.stderr);
    assert_lines(
        &dry.stderr,
        &["actor: weights", "reference: forward activations", "dpo: LoRA adapters over actor's base weights"],
        &["reference: weights", "dpo: weights"],
    );
    // Without LoRA the actor trains its base: the reference is a copy of its own.
    let full = run("ppo-train", &ppo(&f.sft, &["--dry-run"]));
    assert_lines(&full.stderr, &["reference: weights", "dpo: LoRA adapters over reference's base weights"], &[]);
    let policy = run_ok("ppo-train", &ppo(&f.sft, &["--lora-rank", "4"]));
    assert!(policy.join("adapter_config.json").is_file(), "ppo-train --lora-rank writes an adapter");
    // The adapter output as --policy: it keeps training its adapter.
    let again = run_ok("ppo-train", &ppo(&policy, &[]));
    assert!(again.join("adapter_config.json").is_file());

    // rto-eval --model takes the adapter.
    let eval = [
        "--store",
        &s(&store),
        "--model",
        &s(&again),
        "--baseline",
        &s(&f.sft),
        "--prompts",
        &s(&f.prompts),
        "--judge",
        "toy",
        "--max-new-tokens",
        "8",
        "--num-prompts",
        "4",
    ];
    run_ok("rto-eval", &eval);
}
