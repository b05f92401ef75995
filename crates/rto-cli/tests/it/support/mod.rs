//! Shared fixtures of the binary-level tests (`bad_input`, `tampering`, kill/concurrency tests):
//! the paths of the stage binaries, a runner that captures (status, stdout, stderr), a tiny
//! real pipeline built once per build of the binaries and shared by every test process, and a store snapshot for "nothing changed".
//!
//! Each test file uses only part of this module, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod compare;
pub mod files;
pub mod ranks;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::OnceLock;

pub use rto_test_support::{repo_root, snapshot, snapshot_diff};

/// Path of a stage binary built with this test (cargo builds them before the tests run).
pub fn bin(name: &str) -> &'static str {
    match name {
        "sft-train" => env!("CARGO_BIN_EXE_sft-train"),
        "make-pairs" => env!("CARGO_BIN_EXE_make-pairs"),
        "dpo-train" => env!("CARGO_BIN_EXE_dpo-train"),
        "rm-train" => env!("CARGO_BIN_EXE_rm-train"),
        "token-reward-annotate" => env!("CARGO_BIN_EXE_token-reward-annotate"),
        "ppo-train" => env!("CARGO_BIN_EXE_ppo-train"),
        "rto-eval" => env!("CARGO_BIN_EXE_rto-eval"),
        "rto-sample" => env!("CARGO_BIN_EXE_rto-sample"),
        other => panic!("unknown binary {other}"),
    }
}

/// What one binary run gave back.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The last line of stdout: every stage prints its output folder there.
    pub fn last_line(&self) -> &str {
        self.stdout.lines().last().unwrap_or("")
    }
}

/// Runs binary `name` with `args` in the repository root, with RUST_BACKTRACE/RUST_LIB_BACKTRACE
/// removed (so a backtrace in stderr means the binary forced one, which the tests reject).
pub fn run<S: AsRef<std::ffi::OsStr>>(name: &str, args: &[S]) -> Output {
    let out = Command::new(bin(name))
        .args(args)
        .current_dir(repo_root())
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    Output {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Like [`run`], but panics with the captured output unless the run succeeds; returns the
/// output folder (last stdout line).
pub fn run_ok<S: AsRef<std::ffi::OsStr>>(name: &str, args: &[S]) -> PathBuf {
    let out = run(name, args);
    assert!(out.status.success(), "{name} failed: {}\nstdout:\n{}\nstderr:\n{}", out.status, out.stdout, out.stderr);
    PathBuf::from(out.last_line())
}

/// A tiny but real pipeline: every folder and file comes from the real binaries, so tests
/// see exactly the artifacts users get. Built on first use by [`fixture`] (see [`fixture_dir`]).
#[derive(Debug)]
pub struct Fixture {
    /// Scratch root of this fixture (holds the inputs and the store).
    pub dir: PathBuf,
    /// The store every fixture stage wrote to. Tests must not write here (use their own store).
    pub store: PathBuf,
    /// Tiny model config (hidden 32, 2 layers) and the toy tokenizer folder.
    pub model_config: PathBuf,
    pub tokenizer: PathBuf,
    /// JSONL slices of data/toy: SFT demonstrations (prompt/response) and prompts.
    pub sft_data: PathBuf,
    pub prompts: PathBuf,
    /// Stage outputs: model folders, the pairs file and the token-reward output folder.
    pub sft: PathBuf,
    pub pairs: PathBuf,
    pub pairs_file: PathBuf,
    pub dpo: PathBuf,
    pub rm: PathBuf,
    pub annotate: PathBuf,
}

/// Flags that keep every stage of the fixture (and of tests reusing them) to seconds.
pub const SFT_FLAGS: &[&str] = &[
    "--max-steps",
    "3",
    "--batch-size",
    "8",
    "--eval-every",
    "100",
    "--checkpoint-every",
    "100",
    "--max-prompt-len",
    "48",
    "--max-response-len",
    "48",
];
pub const GEN_FLAGS: &[&str] = &[
    "--num-prompts",
    "8",
    "--max-new-tokens",
    "12",
    "--generation-batch-size",
    "16",
    "--max-prompt-len",
    "48",
    "--max-response-len",
    "48",
];
pub const PREF_FLAGS: &[&str] = &[
    "--max-steps",
    "2",
    "--batch-size",
    "4",
    "--eval-every",
    "100",
    "--checkpoint-every",
    "100",
    "--max-prompt-len",
    "48",
    "--max-response-len",
    "48",
];
/// Flags that keep a ppo-train run on the fixture to seconds (iterations and the rest are each
/// test's own).
pub const PPO_FLAGS: &[&str] = &[
    "--rollout-batch-size",
    "8",
    "--train-batch-size",
    "4",
    "--micro-batch-size",
    "2",
    "--max-new-tokens",
    "8",
    "--max-prompt-len",
    "48",
];
pub const ANNOTATE_FLAGS: &[&str] = &["--batch-size", "8", "--max-prompt-len", "48", "--max-response-len", "48"];

/// A tiny config of the toy model's shape family: vocabulary of data/toy's tokenizer (256).
pub const TINY_CONFIG: &str = r#"{
  "model_type": "llama", "architectures": ["LlamaForCausalLM"],
  "vocab_size": 256, "hidden_size": 32, "intermediate_size": 64,
  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
  "max_position_embeddings": 160, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
  "tie_word_embeddings": false, "hidden_act": "silu",
  "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0
}"#;

/// First `n` lines of a repository file, written to `dest`.
pub fn head_lines(src: &Path, n: usize, dest: &Path) {
    let text = fs::read_to_string(src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    let lines: Vec<&str> = text.lines().take(n).collect();
    write_atomic(dest, &(lines.join("\n") + "\n"));
}

/// Writes by rename, so a process reading `dest` never sees half a file while another
/// process of the same run writes the same bytes.
fn write_atomic(dest: &Path, text: &str) {
    let tmp = dest.with_extension(format!("tmp-{}", std::process::id()));
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, dest).unwrap();
}

/// The fixture's folder, shared by every test process built from the same binaries: its
/// stages go through the store, so a second process (or a second `cargo test`) reuses them by
/// key and waits on their locks while one computes. The name holds a fingerprint (size and
/// mtime) of the stage binaries, so a rebuilt binary never reuses outputs of an older one whose
/// stage keys would be the same; fixtures of other builds untouched for an hour are removed.
fn fixture_dir() -> PathBuf {
    let mut fingerprint = blake3::Hasher::new();
    for name in ["sft-train", "make-pairs", "dpo-train", "rm-train", "token-reward-annotate"] {
        let meta = fs::metadata(bin(name)).unwrap_or_else(|e| panic!("{}: {e}", bin(name)));
        let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        fingerprint.update(format!("{name} {} {:?}\n", meta.len(), mtime).as_bytes());
    }
    let name = format!("fixture-{}", &fingerprint.finalize().to_hex()[..16]);
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    for entry in fs::read_dir(tmp).into_iter().flatten().flatten() {
        let other = entry.file_name().to_string_lossy().into_owned();
        let stale = entry.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok());
        if other.starts_with("fixture-") && other != name && stale.is_some_and(|age| age.as_secs() > 3600) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    tmp.join(name)
}

/// The process-wide fixture, built on first use (a few seconds on 2 CPU cores).
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(build_fixture)
}

/// A fresh scratch directory under cargo's target tmpdir, removed when the value drops.
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("rto-cli-test-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

fn build_fixture() -> Fixture {
    let root = repo_root();
    let dir = fixture_dir();
    fs::create_dir_all(&dir).unwrap();
    let store = dir.join("store");
    let model_config = dir.join("tiny.json");
    write_atomic(&model_config, TINY_CONFIG);
    let tokenizer = root.join("data/toy");
    let sft_data = dir.join("sft.jsonl");
    head_lines(&root.join("data/toy/sft.jsonl"), 48, &sft_data);
    let prompts = dir.join("prompts.jsonl");
    head_lines(&root.join("data/toy/rl_prompts.jsonl"), 8, &prompts);

    let s = |p: &Path| p.to_str().unwrap().to_string();
    let with = |base: &[&str], extra: &[String]| -> Vec<String> {
        base.iter().map(|x| x.to_string()).chain(extra.iter().cloned()).collect()
    };
    let sft = run_ok(
        "sft-train",
        &with(
            SFT_FLAGS,
            &[
                "--store".into(),
                s(&store),
                "--init-config".into(),
                s(&model_config),
                "--tokenizer".into(),
                s(&tokenizer),
                "--data".into(),
                s(&sft_data),
            ],
        ),
    );
    let pairs = run_ok(
        "make-pairs",
        &with(GEN_FLAGS, &["--store".into(), s(&store), "--model".into(), s(&sft), "--prompts".into(), s(&sft_data)]),
    );
    let pairs_file = pairs.join("pairs.jsonl");
    let dpo = run_ok(
        "dpo-train",
        &with(PREF_FLAGS, &["--store".into(), s(&store), "--model".into(), s(&sft), "--data".into(), s(&pairs_file)]),
    );
    let rm = run_ok(
        "rm-train",
        &with(PREF_FLAGS, &["--store".into(), s(&store), "--model".into(), s(&sft), "--data".into(), s(&pairs_file)]),
    );
    let annotate = run_ok(
        "token-reward-annotate",
        &with(
            ANNOTATE_FLAGS,
            &[
                "--store".into(),
                s(&store),
                "--ref".into(),
                s(&sft),
                "--dpo".into(),
                s(&dpo),
                "--reward-model".into(),
                s(&rm),
                "--data".into(),
                s(&pairs_file),
            ],
        ),
    );
    Fixture { dir, store, model_config, tokenizer, sft_data, prompts, sft, pairs, pairs_file, dpo, rm, annotate }
}

/// A private copy of the fixture's store with the fixture's artifacts re-rooted inside it, for
/// tests that damage inputs or check that a store stays unchanged. Paths never enter keys, so
/// stages run against the copy meet the fixture's cache entries.
pub struct StoreCopy {
    pub store: PathBuf,
    pub sft: PathBuf,
    pub dpo: PathBuf,
    pub rm: PathBuf,
    pub pairs_file: PathBuf,
    pub annotate: PathBuf,
}

impl StoreCopy {
    /// Copies the fixture's store to `store` (which must not exist yet).
    pub fn at(store: PathBuf) -> StoreCopy {
        let f = fixture();
        copy_dir(&f.store, &store);
        let moved = |p: &Path| store.join(p.strip_prefix(&f.store).unwrap());
        StoreCopy {
            sft: moved(&f.sft),
            dpo: moved(&f.dpo),
            rm: moved(&f.rm),
            pairs_file: moved(&f.pairs_file),
            annotate: moved(&f.annotate),
            store,
        }
    }
}

/// Copies a folder (flat or nested) to `dest`, e.g. to tamper with a model folder without
/// touching the fixture's store.
pub fn copy_dir(src: &Path, dest: &Path) {
    fs::create_dir_all(dest).unwrap();
    for entry in fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dest.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to);
        } else {
            fs::copy(entry.path(), &to).unwrap();
        }
    }
}
