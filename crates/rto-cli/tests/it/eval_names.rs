//! rto-eval's `--name` is written into its outputs, so it is part of the key: evaluating one
//! model under two names gives two folders, each with its own name (the demo once showed the
//! replication's "rto-s1" label because the two shared a folder).

use crate::support::{fixture, run_ok, scratch};
use std::path::Path;

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

#[test]
fn two_names_give_two_folders_each_with_its_own_name() {
    let f = fixture();
    let work = scratch();
    let store = work.path().join("store");
    let eval = |name: &str| {
        let args: Vec<String> = [
            "--store",
            &s(&store),
            "--model",
            &s(&f.sft),
            "--baseline",
            &s(&f.sft),
            "--prompts",
            &s(&f.prompts),
            "--judge",
            "toy",
            "--max-new-tokens",
            "8",
            "--num-prompts",
            "4",
            "--name",
            name,
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        run_ok("rto-eval", &args)
    };
    let (a, b) = (eval("first"), eval("second"));
    assert_ne!(a, b, "one folder for two names");
    for (folder, name) in [(&a, "first"), (&b, "second")] {
        let results: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(folder.join("results.json")).unwrap()).unwrap();
        assert_eq!(results["generator"], name, "{}", folder.display());
    }
}
