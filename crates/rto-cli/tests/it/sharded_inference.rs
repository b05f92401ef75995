//! token-reward-annotate, make-pairs and rto-eval as several Gloo ranks: each scores (or
//! samples) its contiguous block of the batches, rank 0 writes one table in the original order,
//! byte for byte the table of one process (the batches, their seeds and so every forward are the
//! same; world size is not in the key).

use crate::support::compare::assert_same_outputs;
use crate::support::ranks::{run_ranks, text};
use crate::support::{fixture, run_ok, scratch};
use rto_test_support::stage_output;
use std::fs;
use std::path::Path;

/// Pairs of the fixture in batches of 3 sequences: 16 sequences make 6 batches, which 4 ranks
/// share unevenly (2, 2, 1, 1), one batch holding the chosen side of a pair whose rejected
/// side the next rank scores.
fn annotate_args(store: &Path) -> Vec<String> {
    let f = fixture();
    let mut list: Vec<String> =
        ["--batch-size", "3", "--max-prompt-len", "48", "--max-response-len", "48"].map(String::from).to_vec();
    for (flag, path) in [("--store", store), ("--ref", &f.sft), ("--dpo", &f.dpo), ("--reward-model", &f.rm)] {
        list.extend([flag.to_string(), path.to_str().unwrap().to_string()]);
    }
    list.extend(["--data".to_string(), f.pairs_file.to_str().unwrap().to_string()]);
    list
}

#[test]
fn annotate_on_two_and_four_ranks_writes_the_single_process_table_bytes() {
    let work = scratch();
    let one = work.path().join("one");
    let single = run_ok("token-reward-annotate", &annotate_args(&one));
    let samples = fs::read(single.join("samples.parquet")).unwrap();
    assert!(samples.len() > 1000, "the single-process table is nearly empty");
    for world in [2, 4] {
        let store = work.path().join(format!("world{world}"));
        let (sharded, _) = run_ranks("token-reward-annotate", &annotate_args(&store), world);
        assert_eq!(sharded.file_name(), single.file_name(), "world {world}: another key for the same table");
        for table in ["tokens.parquet", "samples.parquet"] {
            assert!(
                fs::read(sharded.join(table)).unwrap() == fs::read(single.join(table)).unwrap(),
                "world {world}: {table} differs from one process's"
            );
        }
        assert_same_outputs(&sharded, &store, &single, &one);
    }
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// Generation flags whose 16 sampled sequences (8 prompts × 2) make 6 batches of 3, which 2
/// ranks share 3 and 3, 4 ranks 2, 2, 1, 1.
fn generation_args(store: &Path) -> Vec<String> {
    let flags = ["--num-prompts", "8", "--max-new-tokens", "12", "--generation-batch-size", "3"];
    let mut list: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
    list.extend(["--max-prompt-len", "48", "--max-response-len", "48", "--store"].map(String::from));
    list.push(s(store));
    list
}

#[test]
fn make_pairs_on_two_ranks_writes_the_single_process_samples_and_pairs() {
    let f = fixture();
    let work = scratch();
    let args = |store: &Path| {
        let mut list = generation_args(store);
        list.extend(["--model".into(), s(&f.sft), "--prompts".into(), s(&f.sft_data)]);
        list
    };
    let one = work.path().join("one");
    let single = run_ok("make-pairs", &args(&one));
    let pairs = fs::read_to_string(single.join("pairs.jsonl")).unwrap();
    assert_eq!(pairs.lines().count(), 8, "one pair per prompt:\n{pairs}");
    for world in [2, 4] {
        let store = work.path().join(format!("world{world}"));
        let (sharded, outputs) = run_ranks("make-pairs", &args(&store), world);
        assert_eq!(sharded.file_name(), single.file_name(), "world {world}: another key for the same pairs");
        assert_eq!(fs::read_to_string(sharded.join("pairs.jsonl")).unwrap(), pairs, "world {world}");
        let (gen_one, gen_sharded) = (stage_output(&one, "generate"), stage_output(&store, "generate"));
        assert_eq!(gen_sharded.file_name(), gen_one.file_name(), "world {world}: another generate key");
        assert!(
            fs::read(gen_sharded.join("generations.parquet")).unwrap()
                == fs::read(gen_one.join("generations.parquet")).unwrap(),
            "world {world}: generations.parquet differs from one process's"
        );
        assert_same_outputs(&sharded, &store, &single, &one);
        for (rank, out) in outputs.iter().enumerate().skip(1) {
            assert!(out.stdout.is_empty(), "rank {rank} printed an output folder: {}", text(&out.stdout));
        }
    }
}

#[test]
fn rto_eval_on_two_ranks_gives_the_single_process_scores_and_results() {
    let f = fixture();
    let work = scratch();
    let args = |store: &Path| {
        let mut list = generation_args(store);
        list.extend(["--model".into(), s(&f.dpo), "--baseline".into(), s(&f.sft)]);
        list.extend(["--prompts".into(), s(&f.prompts), "--judge".into(), "toy".into()]);
        list.extend(["--samples-per-prompt".into(), "2".into(), "--name".into(), "sharded".into()]);
        list
    };
    let one = work.path().join("one");
    let single = run_ok("rto-eval", &args(&one));
    let results: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(single.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["prompts"], 16, "{results}");
    let store = work.path().join("world2");
    let (sharded, _) = run_ranks("rto-eval", &args(&store), 2);
    assert_eq!(sharded.file_name(), single.file_name(), "another key for the same evaluation");
    for file in ["scores.parquet", "results.json", "model_outputs.json"] {
        assert!(fs::read(sharded.join(file)).unwrap() == fs::read(single.join(file)).unwrap(), "{file} differs");
    }
    assert_same_outputs(&sharded, &store, &single, &one);
}
