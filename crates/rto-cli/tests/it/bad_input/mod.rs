//! Bad input gets one clear error and leaves the store as it was (DESIGN.md §6, issue 9 part 1).
//!
//! One table of cases over every binary; each case builds its arguments against a private copy
//! of the fixture's store (so "unchanged" covers the inputs already there too), runs the real
//! binary and checks: non-zero exit, exactly one `error:` line, no panic or backtrace, the
//! expected substrings (file / field / row and the fix), and an identical store snapshot.
//! Every case runs; the failure lists all failing cases at once.

use crate::support;

use crate::support::{copy_dir, fixture, snapshot, snapshot_diff, StoreCopy, ANNOTATE_FLAGS, PREF_FLAGS, SFT_FLAGS};
use std::fs;
use std::path::{Path, PathBuf};

/// Everything a case's argument builder may point at: copies of the fixture's artifacts in a
/// private store (reached through `Deref`), and a scratch folder (outside the store) for the
/// broken inputs.
struct Ctx {
    dir: PathBuf,
    stored: StoreCopy,
    sft_data: PathBuf,
    prompts: PathBuf,
    model_config: PathBuf,
}

impl std::ops::Deref for Ctx {
    type Target = StoreCopy;
    fn deref(&self) -> &StoreCopy {
        &self.stored
    }
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

impl Ctx {
    fn new(dir: &Path) -> Ctx {
        let f = fixture();
        let inputs = dir.join("inputs");
        fs::create_dir_all(&inputs).unwrap();
        Ctx {
            dir: inputs,
            stored: StoreCopy::at(dir.join("store")),
            sft_data: f.sft_data.clone(),
            prompts: f.prompts.clone(),
            model_config: f.model_config.clone(),
        }
    }

    /// Writes a scratch input file and returns its path.
    fn file(&self, name: &str, content: impl AsRef<[u8]>) -> String {
        let p = self.dir.join(name);
        fs::write(&p, content).unwrap();
        s(&p)
    }

    /// A user-supplied copy of a model folder (no manifest: not a store artifact), edited by `f`.
    fn model_copy(&self, src: &Path, name: &str, f: impl FnOnce(&Path)) -> String {
        let dest = self.dir.join(name);
        copy_dir(src, &dest);
        fs::remove_file(dest.join("manifest.json")).unwrap();
        f(&dest);
        s(&dest)
    }

    /// `flags` + `--store <private store>` + `rest`.
    fn args(&self, flags: &[&str], rest: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = flags.iter().map(|x| x.to_string()).collect();
        v.extend(["--store".to_string(), s(&self.store)]);
        v.extend(rest.iter().map(|x| x.to_string()));
        v
    }

    fn sft_args(&self, rest: &[&str]) -> Vec<String> {
        let mut v = vec![
            "--init-config".to_string(),
            s(&self.model_config),
            "--tokenizer".into(),
            s(&support::repo_root().join("data/toy")),
        ];
        v.extend(self.args(SFT_FLAGS, rest));
        v
    }

    fn pref_args(&self, rest: &[&str]) -> Vec<String> {
        let mut v = vec!["--model".to_string(), s(&self.sft)];
        v.extend(self.args(PREF_FLAGS, rest));
        v
    }

    fn annotate_args(&self, rest: &[&str]) -> Vec<String> {
        let mut v =
            vec!["--ref".to_string(), s(&self.sft), "--dpo".into(), s(&self.dpo), "--reward-model".into(), s(&self.rm)];
        v.extend(self.args(ANNOTATE_FLAGS, rest));
        v
    }

    fn ppo_args(&self, rest: &[&str]) -> Vec<String> {
        let mut v = vec![
            "--policy".to_string(),
            s(&self.sft),
            "--dpo".into(),
            s(&self.dpo),
            "--reward-model".into(),
            s(&self.rm),
            "--judge".into(),
            "toy".into(),
            "--rollout-batch-size".into(),
            "4".into(),
            "--train-batch-size".into(),
            "4".into(),
            "--iterations".into(),
            "1".into(),
            "--max-new-tokens".into(),
            "8".into(),
        ];
        v.extend(self.args(&[], rest));
        v
    }

    fn eval_args(&self, rest: &[&str]) -> Vec<String> {
        let mut v = vec![
            "--model".to_string(),
            s(&self.dpo),
            "--baseline".into(),
            s(&self.sft),
            "--max-new-tokens".into(),
            "8".into(),
            "--num-prompts".into(),
            "4".into(),
        ];
        v.extend(self.args(&[], rest));
        v
    }
}

/// `args` with the value after `flag` replaced (clap rejects a flag given twice).
fn set(mut args: Vec<String>, flag: &str, value: &str) -> Vec<String> {
    let i = args.iter().position(|a| a == flag).unwrap_or_else(|| panic!("{flag} not in {args:?}"));
    args[i + 1] = value.to_string();
    args
}

struct Case {
    name: &'static str,
    bin: &'static str,
    args: fn(&Ctx) -> Vec<String>,
    /// Substrings of stderr: what is wrong (file, field, row) and the fix.
    expect: &'static [&'static str],
}

mod cases;

use cases::cases;

/// Everything wrong with one case's run, or None when it behaved.
fn check(case: &Case) -> Option<String> {
    let tmp = support::scratch();
    let ctx = Ctx::new(tmp.path());
    let args = (case.args)(&ctx);
    let before = snapshot(&ctx.store);
    let out = support::run(case.bin, &args);
    let after = snapshot(&ctx.store);
    let mut problems = Vec::new();
    if out.status.success() {
        problems.push("exited 0".to_string());
    }
    let err = &out.stderr;
    for bad in ["panicked", "stack backtrace", "Caused by", "RUST_BACKTRACE"] {
        if err.contains(bad) {
            problems.push(format!("stderr contains `{bad}`"));
        }
    }
    // clap refuses a repeated flag before any validation runs: such a case tests nothing.
    if err.contains("cannot be used multiple times") {
        problems.push("the case passes a flag twice (use `set`)".to_string());
    }
    let error_lines = err.lines().filter(|l| l.starts_with("error")).count();
    if error_lines != 1 {
        problems.push(format!("{error_lines} `error` lines instead of one"));
    }
    for want in case.expect {
        if !err.contains(want) {
            problems.push(format!("stderr lacks `{want}`"));
        }
    }
    let diff = snapshot_diff(&before, &after);
    if !diff.is_empty() {
        problems.push(format!("store changed: {}", diff.join(", ")));
    }
    (!problems.is_empty()).then(|| {
        format!(
            "[{}] {}: {}\n    args: {}\n    stderr: {}",
            case.bin,
            case.name,
            problems.join("; "),
            args.join(" "),
            err.trim().replace('\n', "\n            ")
        )
    })
}

#[test]
fn bad_input_gets_one_clear_error_and_leaves_the_store_unchanged() {
    let cases = cases();
    assert!(cases.len() >= 30, "the issue asks for at least 30 cases");
    let bins: std::collections::BTreeSet<&str> = cases.iter().map(|c| c.bin).collect();
    assert_eq!(bins.len(), 8, "every binary has cases: {bins:?}");
    let failures: Vec<String> = cases.iter().filter_map(check).collect();
    assert!(
        failures.is_empty(),
        "{} of {} bad-input cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Users often run with RUST_BACKTRACE=1 set globally: the error must still be one line (a
/// `fn main() -> Result` would print a Debug chain and a backtrace here).
#[test]
fn errors_stay_one_line_with_rust_backtrace_set() {
    let tmp = support::scratch();
    let ctx = Ctx::new(tmp.path());
    let args = ctx.pref_args(&["--data", &format!("{}/absent.jsonl", s(&ctx.dir))]);
    let out = std::process::Command::new(support::bin("rm-train"))
        .args(&args)
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LIB_BACKTRACE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected:\n{stderr}");
    assert!(lines[0].starts_with("error: ") && lines[0].contains("absent.jsonl"), "{stderr}");
}
