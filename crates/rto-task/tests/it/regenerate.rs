//! The shipped data/toy must be exactly what the generator produces from its seed: anyone can
//! rebuild it (`rto-task generate --seed 20261126 --out data/toy`) and get the same bytes.

use crate::common;

use rto_task::{generate_dataset, DEFAULT_SEED};
use std::collections::BTreeSet;

fn file_names(dir: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

#[test]
fn regeneration_is_byte_identical_to_the_committed_data() {
    let committed = common::toy_dir();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(committed.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["seed"].as_u64(), Some(DEFAULT_SEED));

    let fresh = tempfile::tempdir().unwrap();
    generate_dataset(DEFAULT_SEED, fresh.path()).unwrap();
    let names = file_names(fresh.path());
    assert_eq!(names, file_names(&committed), "same set of files");
    for name in &names {
        let a = std::fs::read(fresh.path().join(name)).unwrap();
        let b = std::fs::read(committed.join(name)).unwrap();
        assert!(a == b, "{name} differs from the committed data/toy/{name}: regenerate it");
    }
    // The manifest's hashes describe the files next to it.
    for (name, hash) in manifest["files"].as_object().unwrap() {
        let bytes = std::fs::read(committed.join(name)).unwrap();
        assert_eq!(blake3::hash(&bytes).to_hex().as_str(), hash.as_str().unwrap(), "{name}");
    }
}

#[test]
fn another_seed_gives_other_data_and_same_seed_same_data() {
    use rto_task::{generate_sft, Sizes};
    let sizes = Sizes { sft: 50, rl_prompts: 20, eval_prompts: 10 };
    let a = generate_sft(1, sizes).unwrap();
    let b = generate_sft(1, sizes).unwrap();
    let c = generate_sft(2, sizes).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.0, c.0);
    // Changing the SFT size leaves the eval prompts alone (independent streams).
    let d = generate_sft(1, Sizes { sft: 60, ..sizes }).unwrap();
    assert_eq!(a.2, d.2);
}
