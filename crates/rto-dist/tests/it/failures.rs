//! A rank that is gone or stuck makes the others fail within the timeout (Gloo gets the
//! timeout in its Options), and a rendezvous nobody completes ends in an error naming the store.

use crate::worker::{free_port, group, is_worker, report, run, test_name, timeout, torchrun_vars, Finished};
use rto_dist::{ProcessGroup, ReduceOp};
use std::thread;
use std::time::{Duration, Instant};
use tch::{Device, Tensor};

/// Slack over the timeout for process start and a loaded machine.
const SLACK: Duration = Duration::from_secs(3);

/// Rank 0's all-reduce against a rank 1 that does `rank_1` after both joined: reports how long
/// the failing call took and its error.
fn all_reduce_against(rank_1: impl FnOnce()) {
    let group = group();
    group.barrier().unwrap(); // both ranks are fully connected before rank 1 misbehaves
    if group.rank() == 1 {
        rank_1();
        return;
    }
    let start = Instant::now();
    let err = group.all_reduce(&mut Tensor::from_slice(&[1.0f32; 4]), ReduceOp::Sum).expect_err("no peer");
    report("elapsed_ms", &[start.elapsed().as_millis() as f64]);
    println!("ERROR {err:#}");
}

fn two_ranks(name: &str, timeout: Duration) -> Vec<Finished> {
    let port = free_port();
    let finished = run(&test_name(module_path!(), name), (0..2).map(|r| torchrun_vars(r, 2, port)).collect(), timeout);
    for f in &finished {
        assert!(f.status.success(), "{}", f.describe());
    }
    finished
}

fn assert_fails_within(f: &Finished, limit: Duration, needles: &[&str]) {
    let elapsed = f.values("elapsed_ms")[0];
    assert!(elapsed <= limit.as_millis() as f64, "the failing collective took {elapsed} ms: {}", f.describe());
    for needle in needles {
        assert!(f.stdout.contains(needle), "{needle:?} missing: {}", f.describe());
    }
}

#[test]
fn a_peer_that_exited_fails_the_collective_within_the_timeout() {
    if is_worker() {
        // exit() skips Rust destructors: the process vanishes as a crash would, sockets and all.
        return all_reduce_against(|| std::process::exit(0));
    }
    let timeout = Duration::from_secs(5);
    let ranks = two_ranks("a_peer_that_exited_fails_the_collective_within_the_timeout", timeout);
    let needles = ["all_reduce (sum) of [4] Float tensor on Cpu failed on rank 0 of 2: a peer is gone", "c10d: "];
    assert_fails_within(&ranks[0], timeout + SLACK, &needles);
}

#[test]
fn a_stuck_peer_fails_the_collective_after_the_timeout() {
    if is_worker() {
        let stuck = timeout() * 2;
        return all_reduce_against(move || thread::sleep(stuck));
    }
    let timeout = Duration::from_secs(3);
    let ranks = two_ranks("a_stuck_peer_fails_the_collective_after_the_timeout", timeout);
    assert_fails_within(&ranks[0], timeout + SLACK, &["failed on rank 0 of 2", "within the 3s timeout"]);
    // Not before the timeout: the error is Gloo's timeout, not something else failing early.
    let elapsed = ranks[0].values("elapsed_ms")[0];
    assert!(elapsed >= timeout.as_millis() as f64 - 200.0, "failed after only {elapsed} ms: {}", ranks[0].describe());
}

#[test]
fn a_rendezvous_nobody_completes_times_out_naming_the_store() {
    if is_worker() {
        let start = Instant::now();
        let err = ProcessGroup::from_env(Device::Cpu, timeout()).err().expect("the other rank never comes");
        report("elapsed_ms", &[start.elapsed().as_millis() as f64]);
        println!("ERROR {err:#}");
        return;
    }
    // Each process is alone in its world of 2: rank 0 hosts a store nobody joins, rank 1 looks
    // for a store nobody hosts.
    let (port_0, port_1) = (free_port(), free_port());
    let timeout = Duration::from_secs(3);
    let name = test_name(module_path!(), "a_rendezvous_nobody_completes_times_out_naming_the_store");
    let finished = run(&name, vec![torchrun_vars(0, 2, port_0), torchrun_vars(1, 2, port_1)], timeout);
    for (f, (rank, port, role)) in finished.iter().zip([(0, port_0, "this rank hosts"), (1, port_1, "rank 0 hosts")]) {
        assert!(f.status.success(), "{}", f.describe());
        let store =
            format!("rank {rank} of 2 (torchrun): rendezvous store at MASTER_ADDR:MASTER_PORT=127.0.0.1:{port}");
        assert_fails_within(f, timeout + SLACK, &[&store, role]);
    }
}
