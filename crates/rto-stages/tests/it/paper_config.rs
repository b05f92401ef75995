//! pipelines/paper-llama3-8b.yaml is the paper's configuration: every section parses as its
//! binary's flags, validates, and holds the paper's numbers (DESIGN.md §5).

use clap::Parser;
use rto_data::cli::parse_with_config_from;
use rto_stages::{dpo::DpoArgs, ppo::PpoArgs, rm::RmArgs};
use std::path::Path;

/// The section `name` of the paper config as that binary's parsed args.
fn section<T: Parser>(name: &str) -> T {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join("pipelines/paper-llama3-8b.yaml")).unwrap();
    let all: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let part = all.get(name).unwrap_or_else(|| panic!("no section {name}"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{name}.yaml"));
    std::fs::write(&path, serde_yaml::to_string(part).unwrap()).unwrap();
    let args = vec!["bin".into(), "--config".into(), path.into_os_string()];
    parse_with_config_from::<T>(args).unwrap_or_else(|e| panic!("section {name}: {e:#}"))
}

#[test]
fn dpo_section_is_the_papers() {
    let args: DpoArgs = section("dpo");
    let s = &args.settings;
    assert_eq!(s.preference_loss().unwrap(), rto_algo::PreferenceLoss::Sigmoid { beta: 0.1, label_smoothing: 0.0 });
    assert_eq!((s.learning_rate, s.train.batch_size), (5e-7, 256));
    assert_eq!((s.limits.max_prompt_len, s.limits.max_response_len), (1024, 1024));
    s.train.validate().unwrap();
    assert!(args.model.ends_with("Llama-3-8b-sft-mixture"));
    assert_eq!(args.common.device, "cuda");
}

#[test]
fn rm_section_is_the_papers() {
    let args: RmArgs = section("rm");
    assert_eq!((args.settings.learning_rate, args.settings.train.batch_size), (1e-6, 128));
    assert!(args.model.ends_with("Llama-3.2-1B"));
    args.settings.train.validate().unwrap();
}

#[test]
fn ppo_and_rto_sections_are_the_papers_and_differ_only_in_the_dpo_reward() {
    let ppo: PpoArgs = section("ppo");
    let rto: PpoArgs = section("rto");
    for (args, mode) in [(&ppo, rto_algo::RewardMode::Ppo), (&rto, rto_algo::RewardMode::Rto)] {
        let s = &args.settings;
        s.validate().unwrap();
        assert_eq!(s.reward.mode(), mode);
        assert_eq!((s.gamma, s.lambda, s.eps_clip, s.value_clip), (1.0, 0.95, 0.2, 0.2));
        assert_eq!((s.actor_lr, s.critic_lr), (5e-7, 9e-6));
        assert_eq!((s.rollout_batch_size, s.train_batch_size, s.ppo_epochs), (1024, 128, 1));
        assert_eq!((s.reward.config.kl_coef, s.reward.config.beta3, s.reward.config.rm_clamp), (0.01, 1.0, 10.0));
        assert_eq!((s.temperature, s.top_p), (1.0, 1.0));
        assert_eq!(s.max_new_tokens, Some(1024));
    }
    assert_eq!((rto.settings.reward.config.beta1, rto.settings.reward.config.dpo_clip), (0.05, 0.05));
    let (mut a, mut b) = (serde_json::to_value(&ppo.settings).unwrap(), serde_json::to_value(&rto.settings).unwrap());
    for v in [&mut a, &mut b] {
        v["reward"]["mode"] = serde_json::Value::Null;
    }
    assert_eq!(a, b, "the PPO baseline and RTO share every other setting");
}
