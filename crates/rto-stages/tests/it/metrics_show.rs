//! `show FOLDER` of the training binaries: the summary of a folder written by hand (known
//! numbers), the command line (training stays the default, `show` a subcommand), and the
//! error for a folder that is not a stage output.

use clap::CommandFactory;
use rto_data::cli::parse_with_config_from;
use rto_stages::metrics::show::{summary, TrainingCli};
use std::path::Path;

const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const INPUT: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

fn write_folder(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let manifest = serde_json::json!({
        "format": "rto-manifest/1", "key": KEY, "stage": "rm", "schema_version": 1,
        "inputs": [{"role": "model", "path": "runs/sft/x", "key": INPUT}],
        "settings": {
            "stage": {"learning_rate": 0.001, "margin": 0.0, "columns": {"prompt": "prompt"},
                "train": {"epochs": 2, "batch_size": 4, "max_steps": null, "eval_every": 2}},
            "common": {"seed": 7, "device": "cpu"}},
        "files": {}, "metrics": {}, "wall_time_s": 12.34, "tool_version": "0.1.0", "created": 0,
    });
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
    let records = [
        r#"{"step":1,"epoch":0,"lr":0.001,"train/loss":1.0,"train/accuracy":0.25,"train/tokens_per_s":99.0}"#,
        r#"{"step":2,"epoch":0,"lr":0.001,"train/loss":0.5,"train/accuracy":0.5,"eval/loss":0.75,"eval/accuracy":0.5}"#,
    ];
    std::fs::write(dir.join("metrics.jsonl"), records.join("\n") + "\n").unwrap();
}

/// The summary's lines as words.
fn words(text: &str) -> Vec<Vec<String>> {
    text.lines().map(|l| l.split_whitespace().map(String::from).collect()).collect()
}

#[test]
fn show_summarizes_a_training_folder() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("rm");
    write_folder(&dir);
    let text = summary(&dir).unwrap();
    let lines = words(&text);
    let has = |expected: &[&str]| lines.iter().any(|l| l == expected);
    assert!(has(&["stage", "rm", "key", "0123456789ab", "(12.3", "s)"]), "{text}");
    assert!(has(&["inputs", "model", "fedcba987654", "runs/sft/x"]), "{text}");
    assert!(
        has(&[
            "settings",
            "learning_rate=0.001",
            "margin=0.0",
            "train.batch_size=4",
            "train.epochs=2",
            "seed=7",
            "device=cpu"
        ]),
        "{text}"
    );
    assert!(has(&["metrics", "2", "records,", "last", "step", "2"]), "{text}");
    // Final values, train and eval on one row; the wall clock is left out.
    assert!(has(&["loss", "0.5000", "0.7500"]), "{text}");
    assert!(has(&["accuracy", "0.5000", "0.5000"]), "{text}");
    assert!(has(&["epoch", "0", "-"]), "{text}");
    assert!(!text.contains("tokens_per_s"), "{text}");
    // Curves: sparkline, first, min, max, last.
    assert!(has(&["train/loss", "█▁", "1", "0.5000", "1", "0.5000"]), "{text}");
    assert!(has(&["eval/loss", "▄", "0.7500", "0.7500", "0.7500", "0.7500"]), "{text}");
    assert!(has(&["train/accuracy", "▁█", "0.2500", "0.2500", "0.5000", "0.5000"]), "{text}");
}

#[test]
fn show_is_a_subcommand_of_every_training_binary() {
    let work = tempfile::tempdir().unwrap();
    let folder = work.path().to_str().unwrap();
    let argv = |list: &[&str]| list.iter().map(Into::into).collect::<Vec<std::ffi::OsString>>();
    let parsed: TrainingCli<rto_stages::rm::RmArgs> =
        parse_with_config_from(argv(&["rm-train", "show", folder])).unwrap();
    assert!(matches!(parsed, TrainingCli::Show(ref a) if a.folder == Path::new(folder)), "{parsed:?}");
    let parsed: TrainingCli<rto_stages::sft::SftArgs> =
        parse_with_config_from(argv(&["sft-train", "--data", "d.jsonl", "--model", "m", "--tensorboard", "tb"]))
            .unwrap();
    let TrainingCli::Train(args) = parsed else { panic!("training is the default command") };
    assert_eq!(args.logs.tensorboard.as_deref(), Some(Path::new("tb")));
    // Training flags and `show` do not mix; a training run still needs its flags.
    assert!(parse_with_config_from::<TrainingCli<rto_stages::dpo::DpoArgs>>(argv(&[
        "dpo-train",
        "--model",
        "m",
        "show",
        folder
    ]))
    .is_err());
    assert!(parse_with_config_from::<TrainingCli<rto_stages::ppo::PpoArgs>>(argv(&["ppo-train"])).is_err());
    for mut command in [
        TrainingCli::<rto_stages::sft::SftArgs>::command(),
        TrainingCli::<rto_stages::dpo::DpoArgs>::command(),
        TrainingCli::<rto_stages::rm::RmArgs>::command(),
        TrainingCli::<rto_stages::ppo::PpoArgs>::command(),
    ] {
        let help = command.render_long_help().to_string();
        assert!(help.contains("show") && help.contains("--tensorboard <DIR>"), "{help}");
    }
}

#[test]
fn show_of_a_folder_without_manifest_says_what_it_takes() {
    let work = tempfile::tempdir().unwrap();
    let err = summary(work.path()).unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("no manifest.json; `show` takes a stage output folder (runs/<stage>/<key>)"), "{message}");
}
