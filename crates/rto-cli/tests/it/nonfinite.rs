//! NaN/inf guard at binary level: a non-finite loss (a learning rate that blows the weights
//! up) or a non-finite reward (a reward model whose score head holds NaN) stops the run with
//! one error naming the step or iteration and what was non-finite, exit code 1, nothing
//! accepted in the store, and the scratch checkpoint from before the bad step intact: it
//! parses, its step is before the failing one, and every weight in it is finite.

use crate::support;

use crate::support::compare::{assert_all_verify, published};
use crate::support::{copy_dir, fixture, run, scratch, PPO_FLAGS};
use std::fs;
use std::path::{Path, PathBuf};

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// The number after the first `word ` in `text` (e.g. "step 3", "iteration 2").
fn number_after(text: &str, word: &str) -> usize {
    let pattern = format!("{word} ");
    let at = text.find(&pattern).unwrap_or_else(|| panic!("no `{word} N` in: {text}")) + pattern.len();
    text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("no number after `{word}` in: {text}"))
}

/// The one scratch checkpoint of `stage` in `store`.
fn checkpoint(store: &Path, stage: &str) -> PathBuf {
    let work: Vec<PathBuf> = fs::read_dir(store.join(stage))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(".work-"))
        .collect();
    assert_eq!(work.len(), 1, "expected one scratch folder in {}", store.join(stage).display());
    work[0].join("ckpt")
}

/// Asserts `ckpt` is a usable checkpoint from before `failed_step`: state.json parses with a
/// step in 1..failed_step, and every tensor of `weights` files is finite f32 data.
fn assert_good_checkpoint(ckpt: &Path, failed_step: usize, weights: &[&str]) {
    let state: serde_json::Value = serde_json::from_slice(&fs::read(ckpt.join("state.json")).unwrap()).unwrap();
    let step = state["step"].as_u64().unwrap() as usize;
    assert!((1..failed_step).contains(&step), "checkpoint step {step} is not before the failing step {failed_step}");
    for name in weights {
        let bytes = fs::read(ckpt.join(name)).unwrap();
        let tensors =
            safetensors::SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{name} does not load: {e}"));
        assert!(!tensors.is_empty(), "{name} holds no tensor");
        for (tensor, view) in tensors.tensors() {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{tensor}");
            let finite = view.data().chunks_exact(4).all(|c| f32::from_le_bytes(c.try_into().unwrap()).is_finite());
            assert!(finite, "{name}: {tensor} holds a non-finite value in the last good checkpoint");
        }
    }
}

/// Asserts a failed run: exit code 1, one `error:` line naming `what` was non-finite, and
/// nothing of `stage` accepted in `store` (an upstream cache entry such as DPO's reference
/// log-probs may be, and must verify). Returns the error line.
fn assert_failed(out: &support::Output, store: &Path, stage: &str, what: &[&str]) -> String {
    assert_eq!(out.status.code(), Some(1), "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    let errors: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "expected one error line:\n{}", out.stderr);
    assert!(
        what.iter().any(|w| errors[0].contains(w)),
        "the error does not say what was non-finite ({what:?}): {}",
        errors[0]
    );
    let points =
        errors[0].contains("last good checkpoint is in") || errors[0].contains("no checkpoint had been saved yet");
    assert!(points, "the error does not say where the last good checkpoint is: {}", errors[0]);
    let accepted = published(store);
    assert!(
        !accepted.keys().any(|k| k.starts_with(&format!("{stage}/"))),
        "a failed run accepted {:?}",
        accepted.keys().collect::<Vec<_>>()
    );
    assert_all_verify(store, "after a non-finite failure");
    errors[0].to_string()
}

const TRAIN: &[&str] = &[
    "--max-steps",
    "10",
    "--epochs",
    "8",
    "--batch-size",
    "4",
    "--checkpoint-every",
    "1",
    "--eval-every",
    "100",
    "--learning-rate",
    "1e30",
    "--max-prompt-len",
    "48",
    "--max-response-len",
    "48",
];

/// sft and dpo share the trainer loop; each is driven into a non-finite loss by its learning
/// rate. (rm-train is not: its Bradley–Terry loss saturates to 0 with finite, huge scores.)
#[test]
fn a_non_finite_loss_stops_the_supervised_stages_at_a_named_step() {
    let f = fixture();
    let cases: [(&str, &str, Vec<String>); 2] = [
        (
            "sft-train",
            "sft",
            vec![
                "--init-config".into(),
                s(&f.model_config),
                "--tokenizer".into(),
                s(&f.tokenizer),
                "--data".into(),
                s(&f.sft_data),
            ],
        ),
        ("dpo-train", "dpo", vec!["--model".into(), s(&f.sft), "--data".into(), s(&f.pairs_file)]),
    ];
    for (name, stage, inputs) in cases {
        let work = scratch();
        let store = work.path().join("store");
        let mut list: Vec<String> = TRAIN.iter().map(|x| x.to_string()).collect();
        list.extend(["--store".into(), s(&store)]);
        list.extend(inputs);
        let out = run(name, &list);
        let error = assert_failed(&out, &store, stage, &["NaN", "inf", "non-finite"]);
        let step = number_after(&error, "step");
        assert!(step >= 2, "{name}: the first step cannot be affected by the learning rate: {error}");
        assert_good_checkpoint(&checkpoint(&store, stage), step, &["model.safetensors"]);
        eprintln!("{name}: {error}");
    }
}

/// A model checkpoint with an inf weight: rm-train stops at step 1 (no checkpoint yet).
#[test]
fn an_inf_weight_in_the_input_model_stops_rm_train_at_step_1() {
    let work = scratch();
    let (store, model) = (work.path().join("store"), work.path().join("sft-inf"));
    copy_dir(&fixture().sft, &model);
    fs::remove_file(model.join("manifest.json")).unwrap();
    fill_tensor(&model, "model.norm.weight", f32::INFINITY);
    let mut list: Vec<String> = TRAIN.iter().map(|x| x.to_string()).collect();
    list.extend(["--store".into(), s(&store), "--model".into(), s(&model), "--data".into(), s(&fixture().pairs_file)]);
    let out = run("rm-train", &list);
    let error = assert_failed(&out, &store, "rm", &["NaN", "inf", "non-finite"]);
    assert_eq!(number_after(&error, "step"), 1, "{error}");
    assert!(error.contains("no checkpoint had been saved yet"), "{error}");
    eprintln!("rm-train: {error}");
}

fn ppo_args(store: &Path, reward_model: &Path, extra: &[&str]) -> Vec<String> {
    let f = fixture();
    let mut list: Vec<String> = PPO_FLAGS
        .iter()
        .chain(&["--iterations", "4", "--checkpoint-every", "1"])
        .chain(extra)
        .map(|x| x.to_string())
        .collect();
    list.extend([
        "--store".into(),
        s(store),
        "--policy".into(),
        s(&f.sft),
        "--dpo".into(),
        s(&f.dpo),
        "--reward-model".into(),
        s(reward_model),
        "--prompts".into(),
        s(&f.prompts),
    ]);
    list
}

/// Overwrites every element of tensor `name` in `model_dir/model.safetensors` with `value`.
fn fill_tensor(model_dir: &Path, name: &str, value: f32) {
    use safetensors::tensor::{SafeTensors, TensorView};
    let path = model_dir.join("model.safetensors");
    let bytes = fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut filled = Vec::new();
    let mut views: Vec<(String, TensorView)> = Vec::new();
    for (n, view) in st.tensors() {
        if n == name {
            filled = value.to_le_bytes().repeat(view.data().len() / 4);
        }
        views.push((n, view));
    }
    assert!(!filled.is_empty(), "{name} is not in {}", path.display());
    let views: Vec<(String, TensorView)> = views
        .into_iter()
        .map(|(n, v)| {
            if n == name {
                let t = TensorView::new(v.dtype(), v.shape().to_vec(), &filled).unwrap();
                (n, t)
            } else {
                (n, v)
            }
        })
        .collect();
    fs::write(&path, safetensors::tensor::serialize(views, &None).unwrap()).unwrap();
}

#[test]
fn a_nan_reward_model_stops_ppo_before_any_update() {
    let work = scratch();
    let (store, rm) = (work.path().join("store"), work.path().join("rm-nan"));
    copy_dir(&fixture().rm, &rm);
    fs::remove_file(rm.join("manifest.json")).unwrap(); // a plain model folder, not a store entry
    fill_tensor(&rm, "score.weight", f32::NAN);
    let out = run("ppo-train", &ppo_args(&store, &rm, &[]));
    let error = assert_failed(&out, &store, "ppo", &["non-finite"]);
    assert_eq!(number_after(&error, "iteration"), 1, "{error}");
    assert!(error.contains("no checkpoint had been saved yet"), "{error}");
    assert!(error.contains("reward model") || error.contains("critic"), "the error does not name the model: {error}");
}

#[test]
fn a_blown_up_policy_stops_ppo_at_a_named_iteration_with_the_checkpoint_intact() {
    let work = scratch();
    let store = work.path().join("store");
    let out = run("ppo-train", &ppo_args(&store, &fixture().rm, &["--actor-lr", "1e30"]));
    let error = assert_failed(&out, &store, "ppo", &["non-finite", "NaN", "inf"]);
    let iteration = number_after(&error, "iteration");
    assert!(iteration >= 2, "{error}");
    assert_good_checkpoint(&checkpoint(&store, "ppo"), iteration, &["actor.safetensors", "critic.safetensors"]);
    eprintln!("ppo-train: {error}");
}
