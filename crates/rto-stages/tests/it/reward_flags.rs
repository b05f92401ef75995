//! The one set of reward flags: token-reward-annotate and ppo-train read the same names into
//! the same settings; annotate's old names (`--clip`, `--beta2`, also as YAML keys) and
//! OpenRLHF's `--init-kl-coef` give exactly the settings, and the stage key, of the new names.

use rto_data::cli::parse_with_config_from;
use rto_stages::annotate::{stage_spec, AnnotateArgs, AnnotateCli};
use rto_stages::ppo::PpoArgs;
use rto_stages::token_scoring::RewardConfig;
use std::path::Path;

fn argv(bin: &str, args: &[&str]) -> Vec<std::ffi::OsString> {
    std::iter::once(bin).chain(args.iter().copied()).map(Into::into).collect()
}

/// annotate's arguments for `flags` on the inputs under `dir`.
fn annotate(dir: &Path, flags: &[&str]) -> AnnotateArgs {
    let (data, reference, dpo) = (dir.join("data.jsonl"), dir.join("ref"), dir.join("dpo"));
    let mut args = vec!["--data", data.to_str().unwrap(), "--ref", reference.to_str().unwrap()];
    args.extend(["--dpo", dpo.to_str().unwrap()]);
    args.extend(flags);
    match parse_with_config_from::<AnnotateCli>(argv("token-reward-annotate", &args)).unwrap() {
        AnnotateCli::Annotate(args) => *args,
        AnnotateCli::Show(_) => panic!("expected the annotate command"),
    }
}

fn ppo(flags: &[&str]) -> anyhow::Result<PpoArgs> {
    let mut args = vec!["--policy", "p", "--prompts", "x.jsonl"];
    args.extend(flags);
    parse_with_config_from::<PpoArgs>(argv("ppo-train", &args))
}

/// Input files for the key: their content is keyed, not their names.
fn inputs(dir: &Path) {
    std::fs::write(dir.join("data.jsonl"), "{\"prompt\": \"a\", \"response\": \"b\"}\n").unwrap();
    for model in ["ref", "dpo"] {
        std::fs::create_dir_all(dir.join(model)).unwrap();
        std::fs::write(dir.join(model).join("config.json"), model).unwrap();
    }
}

#[test]
fn annotate_old_names_give_the_new_names_settings_and_stage_key() {
    let dir = tempfile::tempdir().unwrap();
    inputs(dir.path());
    let new = annotate(dir.path(), &["--dpo-clip", "0.2", "--kl-coef", "0.03", "--beta1", "0.1"]);
    let expected = RewardConfig { beta1: 0.1, dpo_clip: 0.2, kl_coef: 0.03, ..RewardConfig::default() };
    assert_eq!(new.settings.reward, expected);

    let yaml = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let old_yaml = yaml("old.yaml", "clip: 0.2\nbeta2: 0.03\nbeta1: 0.1\n");
    let new_yaml = yaml("new.yaml", "dpo_clip: 0.2\nkl_coef: 0.03\nbeta1: 0.1\n");
    let variants = [
        annotate(dir.path(), &["--clip", "0.2", "--beta2", "0.03", "--beta1", "0.1"]),
        annotate(dir.path(), &["--clip=0.2", "--init-kl-coef=0.03", "--beta1=0.1"]),
        annotate(dir.path(), &["--config", &old_yaml]),
        annotate(dir.path(), &["--config", &new_yaml]),
        // A command-line old name overrides the file's new name (and the other way round).
        annotate(dir.path(), &["--config", &new_yaml, "--clip", "0.2"]),
        annotate(
            dir.path(),
            &["--config", &yaml("other.yaml", "clip: 0.5\nbeta2: 0.03\nbeta1: 0.1\n"), "--dpo-clip", "0.2"],
        ),
    ];
    let key = |args: &AnnotateArgs| stage_spec(args).unwrap().resolve().unwrap().key;
    let new_spec = stage_spec(&new).unwrap();
    // The key holds the resolved values under the new names, whatever name the user wrote.
    assert_eq!(new_spec.settings["stage"]["dpo_clip"], 0.2);
    assert_eq!(new_spec.settings["stage"]["kl_coef"], 0.03);
    assert!(new_spec.settings["stage"].get("clip").is_none() && new_spec.settings["stage"].get("beta2").is_none());
    for (i, old) in variants.iter().enumerate() {
        assert_eq!(old.settings.reward, expected, "variant {i}");
        assert_eq!(stage_spec(old).unwrap().settings, new_spec.settings, "variant {i}");
        assert_eq!(key(old), key(&new), "variant {i}");
    }
    let other = annotate(dir.path(), &["--dpo-clip", "0.25", "--kl-coef", "0.03", "--beta1", "0.1"]);
    assert_ne!(key(&other), key(&new), "another clip is another key");
}

#[test]
fn annotate_and_ppo_read_the_same_flags_into_the_same_reward() {
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--mode",
        "ddpo",
        "--beta1",
        "0.1",
        "--dpo-clip",
        "inf",
        "--kl-coef",
        "0.03",
        "--beta3",
        "0.5",
        "--rm-clamp",
        "5",
    ];
    let annotated = annotate(dir.path(), &flags);
    let trained = ppo(&flags).unwrap();
    let expected = RewardConfig {
        mode: rto_algo::RewardMode::Ddpo,
        beta1: 0.1,
        dpo_clip: f64::INFINITY,
        kl_coef: 0.03,
        beta3: 0.5,
        rm_clamp: 5.0,
    };
    assert_eq!(annotated.settings.reward, expected);
    assert_eq!(trained.settings.reward.config, expected);
    let defaults = annotate(dir.path(), &[]).settings.reward;
    assert_eq!(ppo(&[]).unwrap().settings.reward.config, defaults, "same defaults");
    assert_eq!(ppo(&["--init-kl-coef", "0.03"]).unwrap().settings.reward.config.kl_coef, 0.03);
}

#[test]
fn ppo_keeps_its_names_and_takes_no_bare_clip() {
    // ppo-train never had --clip: there it would read as PPO's ratio clip (--eps-clip).
    let err = ppo(&["--clip", "0.2"]).unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("--clip"), "{message}");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ppo.yaml");
    std::fs::write(&config, "beta2: 0.02\n").unwrap();
    let err = ppo(&["--config", config.to_str().unwrap()]).unwrap_err();
    assert!(format!("{err:#}").contains("unknown key `beta2`"), "{err:#}");
    // The serialized reward keeps ppo-train's former field names, so its stage keys stay put.
    let settings = serde_json::to_value(&ppo(&["--kl-target", "6"]).unwrap().settings).unwrap();
    let reward = settings["reward"].as_object().unwrap();
    let names: Vec<&str> = reward.keys().map(String::as_str).collect();
    assert_eq!(names, ["beta1", "beta3", "dpo_clip", "kl_coef", "kl_horizon", "kl_target", "mode", "rm_clamp"]);
    assert_eq!((reward["kl_coef"].as_f64(), reward["kl_target"].as_f64()), (Some(0.01), Some(6.0)));
}
