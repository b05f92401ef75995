//! Bad input to ppo-train fails early with an error that names the file or model, and leaves
//! no output the cache would accept.

use crate::ppo_common::*;
use rto_model::Head;
use std::path::Path;

fn error_of(args: &[String]) -> String {
    match run_ppo(args) {
        Ok(()) => panic!("ppo-train accepted {args:?}"),
        Err(e) => {
            let message = format!("{e:#}");
            eprintln!("ppo-train error: {message}");
            message
        }
    }
}

fn no_output(store: &Path) {
    let done = std::fs::read_dir(store.join("ppo"))
        .map(|d| d.flatten().filter(|e| !e.file_name().to_string_lossy().starts_with('.') && e.path().is_dir()).count())
        .unwrap_or(0);
    assert_eq!(done, 0, "a failed run left an output folder in {}", store.display());
}

#[test]
fn long_prompts_are_skipped_and_counted_and_all_skipped_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = fixture(dir.path());
    // 6 prompts of 4 words and 2 of 20; the limit is 16 tokens.
    let short = std::fs::read_to_string(prompts(&dir.path().join("short.jsonl"), 6, 4, 1)).unwrap();
    let long = std::fs::read_to_string(prompts(&dir.path().join("long.jsonl"), 2, 20, 2)).unwrap();
    f.prompts = dir.path().join("mixed.jsonl");
    std::fs::write(&f.prompts, short + &long).unwrap();
    let store = dir.path().join("store");
    run_ppo(&set(base_args(&f, &store), "--iterations", "1")).unwrap();
    let manifest = manifest(&output(&store));
    assert_eq!(manifest["metrics"]["dataset"]["skipped"]["prompt_too_long"], 2, "{}", manifest["metrics"]);
    assert_eq!(manifest["metrics"]["dataset"]["rows"], 8);

    f.prompts = dir.path().join("long.jsonl");
    let other = dir.path().join("store2");
    let message = error_of(&base_args(&f, &other));
    assert!(
        message.contains("long.jsonl")
            && message.contains("no usable prompts")
            && message.contains("--max-prompt-len 16"),
        "{message}"
    );
    no_output(&other);
}

#[test]
fn a_reward_model_with_another_tokenizer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(dir.path());
    write_tokenizer(&f.reward_model, Some(30));
    let store = dir.path().join("store");
    let message = error_of(&base_args(&f, &store));
    let ours = f.policy.join("tokenizer.json").display().to_string();
    let theirs = f.reward_model.join("tokenizer.json").display().to_string();
    assert!(
        message.contains(&ours) && message.contains(&theirs) && message.contains("different tokenizers"),
        "{message}"
    );
    no_output(&store);
}

#[test]
fn a_critic_with_another_tokenizer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(dir.path());
    let critic = reward_model(&dir.path().join("critic"));
    write_tokenizer(&critic, Some(31));
    let store = dir.path().join("store");
    let message = error_of(&set(base_args(&f, &store), "--critic", &critic.display().to_string()));
    assert!(message.contains(&critic.join("tokenizer.json").display().to_string()), "{message}");
}

#[test]
fn nan_from_the_dpo_model_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = fixture(dir.path());
    f.dpo = with_nan(&f.dpo, &dir.path().join("dpo-nan"), Head::LanguageModel, "lm_head.weight");
    let store = dir.path().join("store");
    let message = error_of(&base_args(&f, &store));
    assert!(message.contains("DPO model produced non-finite values"), "{message}");
    assert!(message.contains("iteration 1") && message.contains(&f.dpo.display().to_string()), "{message}");
    no_output(&store);
}

#[test]
fn nan_from_the_reward_model_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = fixture(dir.path());
    f.reward_model = with_nan(&f.reward_model, &dir.path().join("rm-nan"), Head::Score, "score.weight");
    let store = dir.path().join("store");
    // The critic is a separate, healthy folder, so the reward model is the first to fail.
    let critic = reward_model(&dir.path().join("critic")).display().to_string();
    let message = error_of(&set(set(base_args(&f, &store), "--critic", &critic), "--mode", "ppo"));
    assert!(message.contains("reward model produced non-finite values") && message.contains("rm-nan"), "{message}");
}

#[test]
fn a_mode_without_its_models_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(dir.path());
    let args: Vec<String> =
        base_args(&f, &dir.path().join("store")).into_iter().filter(|a| a != "--dpo" && !a.ends_with("/dpo")).collect();
    let message = error_of(&args);
    assert!(message.contains("--mode rto needs --dpo"), "{message}");
    let message = error_of(&set(base_args(&f, &dir.path().join("store")), "--train-batch-size", "5"));
    assert!(message.contains("train_batch_size 5 must divide the 16 responses of a rollout"), "{message}");
    assert!(message.contains("e.g. 4"), "the fix names a divisor: {message}");
}

#[test]
fn group_estimators_need_several_responses_per_prompt_that_fill_the_batches() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(dir.path());
    let store = dir.path().join("store");
    for estimator in ["grpo", "dr-grpo", "rloo", "reinforce++-baseline"] {
        let message = error_of(&set(base_args(&f, &store), "--advantage-estimator", estimator));
        assert!(
            message.contains(&format!("--advantage-estimator {estimator}"))
                && message.contains("--n-samples-per-prompt of at least 2 (got 1)"),
            "{message}"
        );
    }
    // 16 prompts × 3 = 48 responses: a train batch of 32 divides neither.
    let args = set(set(base_args(&f, &store), "--advantage-estimator", "grpo"), "--n-samples-per-prompt", "3");
    let message = error_of(&set(args, "--train-batch-size", "32"));
    assert!(
        message.contains("train_batch_size 32 must divide the 48 responses of a rollout (--rollout-batch-size 16 × --n-samples-per-prompt 3)")
            && message.contains("e.g. 24"),
        "{message}"
    );
    no_output(&store);
}
