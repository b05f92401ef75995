//! Every collective at world size 2 on Gloo, against values computed by hand. Inputs are
//! chosen exactly representable in bf16 (and their sums, means and maxima too), so results
//! compare exactly in both dtypes.

use crate::worker::{group, is_worker, report, run_world, test_name, Finished};
use rto_dist::ReduceOp;
use std::thread;
use std::time::{Duration, Instant};
use tch::{Kind, Tensor};

/// Rank r's all-reduce input.
const INPUTS: [[f32; 4]; 2] = [[1.5, -2.0, 0.0, 100.0], [2.5, -4.0, 0.25, 99.0]];

fn f64s(tensor: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(tensor.to_kind(Kind::Double).flatten(0, -1)).unwrap()
}

fn on_every_rank(ranks: &[Finished], key: &str, expected: &[f64]) {
    for (rank, f) in ranks.iter().enumerate() {
        assert_eq!(f.values(key), expected, "{key} on rank {rank}");
    }
}

#[test]
fn all_reduce_sum_avg_max_in_f32_and_bf16() {
    if is_worker() {
        let group = group();
        for kind in [Kind::Float, Kind::BFloat16] {
            for op in [ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Max] {
                let mut tensor = Tensor::from_slice(&INPUTS[group.rank()]).to_kind(kind);
                group.all_reduce(&mut tensor, op).unwrap();
                assert_eq!(tensor.kind(), kind, "all_reduce keeps the dtype");
                report(&format!("{kind:?}_{op}"), &f64s(&tensor));
            }
        }
        return;
    }
    let ranks = run_world(&test_name(module_path!(), "all_reduce_sum_avg_max_in_f32_and_bf16"), 2);
    for kind in ["Float", "BFloat16"] {
        on_every_rank(&ranks, &format!("{kind}_sum"), &[4.0, -6.0, 0.25, 199.0]);
        on_every_rank(&ranks, &format!("{kind}_avg"), &[2.0, -3.0, 0.125, 99.5]);
        on_every_rank(&ranks, &format!("{kind}_max"), &[2.5, -2.0, 0.25, 100.0]);
    }
}

#[test]
fn broadcast_from_rank_1() {
    if is_worker() {
        let group = group();
        let base = 10.0 * group.rank() as f32;
        let mut floats = Tensor::from_slice(&[base + 1.0, base + 2.0, base + 3.0]);
        group.broadcast(&mut floats, 1).unwrap();
        report("f32", &f64s(&floats));
        let mut ints = Tensor::from_slice(&[group.rank() as i64 - 7, 1 << 40]);
        group.broadcast(&mut ints, 1).unwrap();
        report("i64", &f64s(&ints));
        return;
    }
    let ranks = run_world(&test_name(module_path!(), "broadcast_from_rank_1"), 2);
    on_every_rank(&ranks, "f32", &[11.0, 12.0, 13.0]);
    on_every_rank(&ranks, "i64", &[-6.0, (1u64 << 40) as f64]);
}

#[test]
fn reduce_scatter_and_all_gather_with_rank_dependent_inputs() {
    if is_worker() {
        let group = group();
        let r = group.rank() as f32;
        // Rank 0: [1, 2, 10, 20]; rank 1: [2, 3, 20, 40]. Slice s (2 values) goes to rank s.
        let input = Tensor::from_slice(&[1.0 + r, 2.0 + r, 10.0 * (r + 1.0), 20.0 * (r + 1.0)]);
        for op in [ReduceOp::Sum, ReduceOp::Max] {
            let mut output = Tensor::zeros([2], (Kind::Float, tch::Device::Cpu));
            group.reduce_scatter(&mut output, &input, op).unwrap();
            report(&format!("reduce_scatter_{op}"), &f64s(&output));
        }
        // [2, 2] per rank, gathered along dim 0 into [4, 2].
        let input = Tensor::from_slice(&[r, r + 0.5, -r, 7.0]).reshape([2, 2]);
        let mut output = Tensor::full([4, 2], -99.0, (Kind::Float, tch::Device::Cpu));
        group.all_gather(&mut output, &input).unwrap();
        report("all_gather", &f64s(&output));
        return;
    }
    let ranks = run_world(&test_name(module_path!(), "reduce_scatter_and_all_gather_with_rank_dependent_inputs"), 2);
    assert_eq!(ranks[0].values("reduce_scatter_sum"), [3.0, 5.0]);
    assert_eq!(ranks[1].values("reduce_scatter_sum"), [30.0, 60.0]);
    assert_eq!(ranks[0].values("reduce_scatter_max"), [2.0, 3.0]);
    assert_eq!(ranks[1].values("reduce_scatter_max"), [20.0, 40.0]);
    on_every_rank(&ranks, "all_gather", &[0.0, 0.5, 0.0, 7.0, 1.0, 1.5, -1.0, 7.0]);
}

#[test]
fn barrier_waits_for_the_late_rank() {
    const LATE: Duration = Duration::from_millis(1500);
    if is_worker() {
        let group = group();
        group.barrier().unwrap(); // both joined: the clock starts together
        if group.rank() == 1 {
            thread::sleep(LATE);
        }
        let start = Instant::now();
        group.barrier().unwrap();
        report("waited_ms", &[start.elapsed().as_millis() as f64]);
        return;
    }
    let ranks = run_world(&test_name(module_path!(), "barrier_waits_for_the_late_rank"), 2);
    let early = ranks[0].values("waited_ms")[0];
    // Rank 0 cannot leave before rank 1 arrives, ~1.5 s later (less the time rank 0 took to
    // leave the first barrier after rank 1 did).
    assert!(early >= LATE.as_millis() as f64 - 300.0, "rank 0 left the barrier after {early} ms");
    assert!(ranks[1].values("waited_ms")[0] < early, "the late rank does not wait for itself");
}

#[test]
fn host_helpers_broadcast_bytes_and_reduce_f64s() {
    const MESSAGE: &[u8] = b"runs/dpo/3f\0\xff";
    if is_worker() {
        let group = group();
        // Only the root's bytes count: rank 1 offers others of another length.
        let mine = if group.is_main() { MESSAGE.to_vec() } else { vec![7; 5] };
        let got = group.broadcast_bytes(mine, 0).unwrap();
        report("bytes", &got.iter().map(|&b| f64::from(b)).collect::<Vec<_>>());
        let empty = group.broadcast_bytes(if group.is_main() { b"ignored".to_vec() } else { vec![] }, 1).unwrap();
        report("empty_len", &[empty.len() as f64]);
        let metrics = [[0.5, -1.0], [0.25, 3.0]][group.rank()];
        report("f64_sum", &group.all_reduce_f64s(&metrics, ReduceOp::Sum).unwrap());
        report("f64_max", &group.all_reduce_f64s(&metrics, ReduceOp::Max).unwrap());
        return;
    }
    let ranks = run_world(&test_name(module_path!(), "host_helpers_broadcast_bytes_and_reduce_f64s"), 2);
    on_every_rank(&ranks, "bytes", &MESSAGE.iter().map(|&b| f64::from(b)).collect::<Vec<_>>());
    on_every_rank(&ranks, "empty_len", &[0.0]);
    on_every_rank(&ranks, "f64_sum", &[0.75, 2.0]);
    on_every_rank(&ranks, "f64_max", &[0.5, 3.0]);
}
