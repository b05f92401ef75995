//! The real launcher: the venv's torchrun runs the rto-dist-check binary on 2 processes.

use crate::worker::run_command;
use std::process::Command;

#[test]
fn torchrun_standalone_runs_two_ranks() {
    let torchrun = rto_test_support::repo_root().join(".venv/bin/torchrun");
    assert!(torchrun.exists(), "{} is missing: run `make setup`", torchrun.display());
    let mut command = Command::new(torchrun);
    command
        .args(["--standalone", "--nproc-per-node", "2", "--no-python", env!("CARGO_BIN_EXE_rto-dist-check")])
        .args(["--timeout-s", "60"])
        .env("OMP_NUM_THREADS", "1");
    let f = run_command(command);
    assert!(f.status.success(), "{}", f.describe());
    for rank in 0..2 {
        let line =
            format!("rank {rank} of 2 (local rank {rank}, store hosted by torchrun's agent): all_reduce sum 3 ok");
        assert!(f.stdout.contains(&line), "{line:?} missing: {}", f.describe());
    }
}
