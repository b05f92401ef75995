//! Determinism: the whole tiny pipeline (sft-train, make-pairs, dpo-train, rm-train,
//! token-reward-annotate, ppo-train, rto-eval), each stage reading the previous one's output
//! from its own store, run twice with the same seed in two stores, gives the same accepted
//! folders (same stage/key names, cache-internal stages included) with the same bytes.
//! Wall-clock fields and input paths (which differ by the store root only) are excluded as
//! documented in `support::compare`.

use crate::support::compare::{assert_all_verify, assert_same_outputs, published};
use crate::support::{fixture, run_ok, scratch, ANNOTATE_FLAGS, GEN_FLAGS, PPO_FLAGS, PREF_FLAGS, SFT_FLAGS};
use std::path::{Path, PathBuf};

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

fn with(base: &[&str], extra: &[String]) -> Vec<String> {
    base.iter().map(|x| x.to_string()).chain(extra.iter().cloned()).collect()
}

/// Every stage once, in `store`; returns the stage outputs in order.
fn pipeline(store: &Path) -> Vec<PathBuf> {
    let f = fixture();
    let st = || vec!["--store".to_string(), s(store)];
    let arg = |xs: &[(&str, &Path)]| -> Vec<String> { xs.iter().flat_map(|(k, v)| [k.to_string(), s(v)]).collect() };
    let sft = run_ok(
        "sft-train",
        &with(
            SFT_FLAGS,
            &[st(), arg(&[("--init-config", &f.model_config), ("--tokenizer", &f.tokenizer), ("--data", &f.sft_data)])]
                .concat(),
        ),
    );
    let pairs =
        run_ok("make-pairs", &with(GEN_FLAGS, &[st(), arg(&[("--model", &sft), ("--prompts", &f.sft_data)])].concat()));
    let data = pairs.join("pairs.jsonl");
    let dpo = run_ok("dpo-train", &with(PREF_FLAGS, &[st(), arg(&[("--model", &sft), ("--data", &data)])].concat()));
    let rm = run_ok("rm-train", &with(PREF_FLAGS, &[st(), arg(&[("--model", &sft), ("--data", &data)])].concat()));
    let annotate = run_ok(
        "token-reward-annotate",
        &with(
            ANNOTATE_FLAGS,
            &[st(), arg(&[("--ref", &sft), ("--dpo", &dpo), ("--reward-model", &rm), ("--data", &data)])].concat(),
        ),
    );
    let ppo_flags = [PPO_FLAGS, &["--iterations", "2", "--eval-every", "2", "--save-rollouts-every", "1"]].concat();
    let ppo = run_ok(
        "ppo-train",
        &with(
            &ppo_flags,
            &[
                st(),
                arg(&[
                    ("--policy", &sft),
                    ("--dpo", &dpo),
                    ("--reward-model", &rm),
                    ("--prompts", &f.prompts),
                    ("--eval-prompts", &f.prompts),
                ]),
            ]
            .concat(),
        ),
    );
    let eval_flags = [
        "--num-prompts",
        "8",
        "--max-new-tokens",
        "8",
        "--generation-batch-size",
        "8",
        "--max-prompt-len",
        "48",
        "--judge",
        "toy",
    ];
    let eval = run_ok(
        "rto-eval",
        &with(
            &eval_flags,
            &[st(), arg(&[("--model", &ppo), ("--baseline", &sft), ("--prompts", &f.prompts)])].concat(),
        ),
    );
    vec![sft, pairs, dpo, rm, annotate, ppo, eval]
}

#[test]
fn every_stage_gives_the_same_keys_and_bytes_in_two_stores() {
    let work = scratch();
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    let (outs_a, outs_b) = (pipeline(&a), pipeline(&b));
    for (x, y) in outs_a.iter().zip(&outs_b) {
        assert_eq!(
            x.strip_prefix(&a).unwrap(),
            y.strip_prefix(&b).unwrap(),
            "same seed and inputs, different cache key"
        );
    }
    let (pa, pb) = (published(&a), published(&b));
    assert_eq!(
        pa.keys().collect::<Vec<_>>(),
        pb.keys().collect::<Vec<_>>(),
        "the two stores hold different stage/key folders"
    );
    assert!(pa.len() >= 7, "expected every stage in the store: {:?}", pa.keys().collect::<Vec<_>>());
    for (name, path) in &pa {
        assert_same_outputs(path, &a, &pb[name], &b);
    }
    assert_all_verify(&a, "store a");
    assert_all_verify(&b, "store b");
    eprintln!("{} folders identical: {:?}", pa.len(), pa.keys().collect::<Vec<_>>());
}
