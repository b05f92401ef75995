//! The metrics outputs of real training runs: `--tensorboard` read back by TensorBoard's own
//! reader with the values of metrics.jsonl (rm-train, ppo-train, and a reused output), the
//! flag changing neither the key nor a byte of the stage folder, metrics.png the same in two
//! identical runs, an unwritable DIR failing before anything runs, and `show` of the folder.

use crate::dpo_common::{learnable_pairs, output, run_rm, tiny_model, write_jsonl};
use crate::metrics_events::{expected_scalars, read_events, scalars_of};
use rto_test_support::{read_jsonl, snapshot, snapshot_diff};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn rm_flags(model: &Path, data: &Path, store: &Path, extra: &[&str]) -> Vec<String> {
    let base = [
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--batch-size",
        "4",
        "--max-steps",
        "4",
        "--eval-every",
        "2",
        "--eval-fraction",
        "0.25",
        "--checkpoint-every",
        "0",
    ];
    base.iter().chain(extra).map(|s| s.to_string()).collect()
}

fn run(flags: &[String]) -> anyhow::Result<()> {
    run_rm(&flags.iter().map(String::as_str).collect::<Vec<_>>())
}

/// metrics.jsonl records without their wall-clock numbers.
fn without_clock(records: Vec<Value>) -> Vec<Value> {
    records
        .into_iter()
        .map(|mut r| {
            r.as_object_mut().unwrap().retain(|k, _| !k.starts_with("time/") && !k.ends_with("tokens_per_s"));
            r
        })
        .collect()
}

/// The one run folder under a `--tensorboard` DIR.
fn run_folder(tensorboard: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(tensorboard).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(dirs.len(), 1, "one run folder in {}: {dirs:?}", tensorboard.display());
    dirs[0].clone()
}

#[test]
fn tensorboard_gets_the_metrics_and_the_stage_folder_does_not_change() {
    let work = tempfile::tempdir().unwrap();
    let model = tiny_model(&work.path().join("base"), 91, 32, 1, 1.0);
    let data = write_jsonl(&work.path().join("pairs.jsonl"), &learnable_pairs(24, 3));
    let (with, without) = (work.path().join("with"), work.path().join("without"));
    let tensorboard = work.path().join("tb");
    run(&rm_flags(&model, &data, &with, &["--tensorboard", tensorboard.to_str().unwrap()])).unwrap();
    run(&rm_flags(&model, &data, &without, &[])).unwrap();
    let (a, b) = (output(&with, "rm"), output(&without, "rm"));
    assert_eq!(a.file_name(), b.file_name(), "--tensorboard is not part of the key");

    // Byte for byte but the wall clock: metrics.jsonl's tokens_per_s, the manifest's times
    // and the hash of the metrics log that holds them. metrics.png is compared as bytes.
    let (mut files_a, mut files_b) = (snapshot(&a), snapshot(&b));
    for files in [&mut files_a, &mut files_b] {
        files.remove("metrics.jsonl");
        files.remove("manifest.json");
    }
    assert!(files_a.contains_key("metrics.png"), "{files_a:?}");
    assert_eq!(snapshot_diff(&files_a, &files_b), Vec::<String>::new());
    let records = read_jsonl(&a.join("metrics.jsonl"));
    assert_eq!(without_clock(records.clone()), without_clock(read_jsonl(&b.join("metrics.jsonl"))));
    let manifest_files = |dir: &Path| {
        let mut files = rto_test_support::manifest(dir)["files"].clone();
        files.as_object_mut().unwrap().remove("metrics.jsonl");
        files
    };
    assert_eq!(manifest_files(&a), manifest_files(&b));

    // TensorBoard reads DIR/rm-<short key> with the values of metrics.jsonl.
    let key = a.file_name().unwrap().to_string_lossy().into_owned();
    let folder = run_folder(&tensorboard);
    assert_eq!(folder.file_name().unwrap().to_string_lossy(), format!("rm-{}", &key[..12]));
    let events = read_events(&folder);
    assert_eq!(records.len(), 4);
    assert!(expected_scalars(&records).iter().any(|s| s.0 == "eval/accuracy" && s.1 == 2), "eval at step 2");
    assert_eq!(scalars_of(&events["accumulated"]), expected_scalars(&records));

    // A reused output still gets its curves: from the folder's metrics.jsonl.
    let later = work.path().join("tb-later");
    run(&rm_flags(&model, &data, &without, &["--tensorboard", later.to_str().unwrap()])).unwrap();
    let reused = read_events(&run_folder(&later));
    assert_eq!(scalars_of(&reused["accumulated"]), expected_scalars(&read_jsonl(&b.join("metrics.jsonl"))));

    let summary = rto_stages::metrics::show::summary(&a).unwrap();
    let last_loss = rto_stages::metrics::show::number(records[3]["train/loss"].as_f64());
    assert!(summary.lines().next().unwrap().starts_with(&format!("stage     rm  key {}", &key[..12])), "{summary}");
    assert!(
        summary.lines().any(|l| l.split_whitespace().next() == Some("train/loss") && l.ends_with(&last_loss)),
        "the loss curve ends at the last loss {last_loss}:\n{summary}"
    );
}

#[test]
fn an_unwritable_tensorboard_dir_fails_before_training() {
    let work = tempfile::tempdir().unwrap();
    let model = tiny_model(&work.path().join("base"), 92, 32, 1, 1.0);
    let data = write_jsonl(&work.path().join("pairs.jsonl"), &learnable_pairs(8, 4));
    let store = work.path().join("runs");
    // A folder inside a file: no permission bit would stop the tests, which run as root.
    let file = work.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let dir = file.join("tb");
    let err = run(&rm_flags(&model, &data, &store, &["--tensorboard", dir.to_str().unwrap()])).unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains(&format!("--tensorboard {}: not a writable folder", dir.display())), "{message}");
    assert!(!store.exists(), "the store was touched before the check");
}

#[test]
fn tensorboard_reads_a_ppo_run() {
    use crate::ppo_common::{base_args, fixture, output, run_ppo};
    let work = tempfile::tempdir().unwrap();
    let f = fixture(work.path());
    let store = work.path().join("runs");
    let tensorboard = work.path().join("tb");
    let mut args = base_args(&f, &store);
    args.extend(["--tensorboard".to_string(), tensorboard.display().to_string()]);
    run_ppo(&args).unwrap();
    let out = output(&store);
    let records = read_jsonl(&out.join("metrics.jsonl"));
    let events = read_events(&run_folder(&tensorboard));
    let scalars = scalars_of(&events["accumulated"]);
    assert_eq!(scalars, expected_scalars(&records));
    for tag in ["reward", "kl", "returns", "policy_loss"] {
        assert!(scalars.iter().filter(|s| s.0 == tag).count() == 2, "{tag} at both iterations");
    }
    assert!(!scalars.iter().any(|s| s.0 == "iteration"), "the iteration is the axis");
    assert!(out.join("metrics.png").is_file());
}
