//! token-reward-annotate as several Gloo ranks: each scores its contiguous block of the
//! batches, rank 0 writes one table in the original order, byte for byte the table of one
//! process (the batches, and so every forward, are the same; world size is not in the key).

use crate::support::compare::assert_same_outputs;
use crate::support::ranks::run_ranks;
use crate::support::{fixture, run_ok, scratch};
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
