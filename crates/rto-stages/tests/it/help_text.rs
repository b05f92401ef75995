//! Every stage binary's `-h` and `--help` open with the tool's own description. clap gives a
//! command the doc comment of each struct it flattens as its about text unless the command
//! sets its own after them: token-reward-annotate once opened with the column names' doc.

use clap::CommandFactory;

/// (command, the first line its help must print).
fn commands() -> Vec<(clap::Command, &'static str)> {
    use rto_stages::*;
    vec![
        (sft::SftArgs::command(), "Supervised fine-tuning on (prompt, response) rows"),
        (pairs::PairArgs::command(), "Sample two SFT responses per prompt and label them with the gold judge"),
        (dpo::DpoArgs::command(), "Direct preference optimization (DPO, cDPO, IPO, SimPO, R-DPO) on preference pairs"),
        (rm::RmArgs::command(), "Bradley–Terry reward model on preference pairs"),
        (
            annotate::AnnotateCli::command(),
            "RTO token rewards for every response token, as Parquet; `show` displays them",
        ),
        (ppo::PpoArgs::command(), "PPO on the RTO token reward (or the PPO / DPO-only / DDPO / RS-PPO baselines)"),
        (evaluate::EvalArgs::command(), "Win rate against a baseline model under a judge"),
    ]
}

#[test]
fn every_stage_help_opens_with_its_own_description() {
    for (mut command, about) in commands() {
        let name = command.get_name().to_string();
        let short = command.render_help().to_string();
        assert_eq!(short.lines().next(), Some(about), "{name} -h:\n{short}");
        let long = command.render_long_help().to_string();
        assert_eq!(long.lines().next(), Some(about), "{name} --help:\n{long}");
        for flattened in ["Names of the columns", "Flatten into", "Flags every stage binary", "Length limits"] {
            assert!(!long.contains(flattened), "{name} --help shows a flattened struct's doc ({flattened:?}):\n{long}");
        }
    }
}

#[test]
fn annotate_long_help_names_the_shared_reward_flags() {
    let long = rto_stages::annotate::AnnotateCli::command().render_long_help().to_string();
    assert!(long.contains("The reward flags are ppo-train's"), "{long}");
    for flag in ["--mode", "--beta1", "--dpo-clip", "--kl-coef", "--beta3", "--rm-clamp"] {
        assert!(long.contains(flag), "{flag} missing:\n{long}");
    }
}
