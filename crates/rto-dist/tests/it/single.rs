//! The single process: no launch variables means world size 1 without c10d, and every
//! collective leaves the tensor's bytes exactly as they were (the invariant that keeps
//! single-process runs identical to before the crate existed).

use crate::worker::{group, is_worker, report, run, test_name, DEFAULT_TIMEOUT};
use rto_dist::ReduceOp;
use tch::{Device, Kind, Tensor};

/// Bit patterns arithmetic could disturb: a NaN with a payload, -0.0, infinity, the smallest
/// subnormal, 1/3 rounded.
const F32_BITS: [u32; 5] = [0x7fc0_0001, 0x8000_0000, 0x7f80_0000, 0x0000_0001, 0x3eaa_aaab];
/// bf16: a NaN with a payload, -0.0, the smallest subnormal, 1/3 rounded.
const BF16_BITS: [i16; 4] = [0x7fc1, i16::MIN, 0x0001, 0x3eab];

fn f32_bits(tensor: &Tensor) -> Vec<f64> {
    Vec::<i32>::try_from(tensor.view_dtype(Kind::Int)).unwrap().into_iter().map(|b| f64::from(b as u32)).collect()
}

fn bf16_bits(tensor: &Tensor) -> Vec<f64> {
    Vec::<i16>::try_from(tensor.view_dtype(Kind::Int16)).unwrap().into_iter().map(f64::from).collect()
}

/// Runs every collective on copies of `original`; reports the bits each leaves, via `bits`.
fn every_collective(original: &Tensor, name: &str, bits: fn(&Tensor) -> Vec<f64>) {
    let group = group();
    for op in [ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Max] {
        let mut tensor = original.copy();
        group.all_reduce(&mut tensor, op).unwrap();
        report(&format!("{name}_all_reduce_{op}"), &bits(&tensor));
        let mut output = original.zeros_like();
        group.reduce_scatter(&mut output, original, op).unwrap();
        report(&format!("{name}_reduce_scatter_{op}"), &bits(&output));
    }
    let mut tensor = original.copy();
    group.broadcast(&mut tensor, 0).unwrap();
    report(&format!("{name}_broadcast"), &bits(&tensor));
    let mut output = original.zeros_like();
    group.all_gather(&mut output, original).unwrap();
    report(&format!("{name}_all_gather"), &bits(&output));
}

#[test]
fn without_launch_variables_collectives_leave_bytes_unchanged() {
    if is_worker() {
        let group = group();
        assert_eq!((group.rank(), group.world_size(), group.local_rank()), (0, 1, 0));
        assert!(group.is_main() && !group.is_distributed(), "no launch variables: no c10d");
        group.barrier().unwrap();
        let floats: Vec<f32> = F32_BITS.iter().map(|&b| f32::from_bits(b)).collect();
        every_collective(&Tensor::from_slice(&floats), "f32", f32_bits);
        every_collective(&Tensor::from_slice(&BF16_BITS).view_dtype(Kind::BFloat16), "bf16", bf16_bits);
        let nan = f64::from_bits(0x7ff8_0000_0000_0001);
        let reduced = group.all_reduce_f64s(&[nan, -0.0], ReduceOp::Avg).unwrap();
        report("f64s_bits", &reduced.iter().map(|v| v.to_bits() as f64).collect::<Vec<_>>());
        report(
            "bytes",
            &group.broadcast_bytes(vec![0, 255, 7], 0).unwrap().iter().map(|&b| f64::from(b)).collect::<Vec<_>>(),
        );
        return;
    }
    // No launch variable at all (the harness removes inherited ones).
    let name = test_name(module_path!(), "without_launch_variables_collectives_leave_bytes_unchanged");
    let finished = run(&name, vec![vec![]], DEFAULT_TIMEOUT).remove(0);
    assert!(finished.status.success(), "{}", finished.describe());
    let f32_expected: Vec<f64> = F32_BITS.iter().map(|&b| f64::from(b)).collect();
    let bf16_expected: Vec<f64> = BF16_BITS.iter().map(|&b| f64::from(b)).collect();
    for (name, expected) in [("f32", &f32_expected), ("bf16", &bf16_expected)] {
        for op in ["sum", "avg", "max"] {
            assert_eq!(&finished.values(&format!("{name}_all_reduce_{op}")), expected, "{name} all_reduce {op}");
            assert_eq!(
                &finished.values(&format!("{name}_reduce_scatter_{op}")),
                expected,
                "{name} reduce_scatter {op}"
            );
        }
        assert_eq!(&finished.values(&format!("{name}_broadcast")), expected);
        assert_eq!(&finished.values(&format!("{name}_all_gather")), expected);
    }
    assert_eq!(finished.values("f64s_bits"), [0x7ff8_0000_0000_0001u64 as f64, (-0.0f64).to_bits() as f64]);
    assert_eq!(finished.values("bytes"), [0.0, 255.0, 7.0]);
}

/// Wrong inputs are refused before any communication, with the tensor named; the single
/// process checks them too, so a bug shows up before a multi-process run.
#[test]
fn bad_tensors_are_refused_with_their_shape() {
    let group = rto_dist::ProcessGroup::single(Device::Cpu);
    let mut transposed = Tensor::arange(6, (Kind::Float, Device::Cpu)).reshape([2, 3]).transpose(0, 1);
    let err = format!("{:#}", group.all_reduce(&mut transposed, ReduceOp::Sum).unwrap_err());
    assert!(err.contains("all_reduce: tensor [3, 2] Float") && err.contains("not contiguous"), "{err}");

    let input = Tensor::zeros([4], (Kind::Float, Device::Cpu));
    let mut output = Tensor::zeros([3], (Kind::Float, Device::Cpu));
    let err = format!("{:#}", group.reduce_scatter(&mut output, &input, ReduceOp::Sum).unwrap_err());
    assert!(err.contains("reduce_scatter: [3] Float") && err.contains("[4] Float") && err.contains("[3]"), "{err}");

    let mut output = Tensor::zeros([4], (Kind::Double, Device::Cpu));
    let err = format!("{:#}", group.all_gather(&mut output, &input).unwrap_err());
    assert!(err.contains("all_gather") && err.contains("dtype"), "{err}");

    let err = format!("{:#}", group.broadcast(&mut output, 1).unwrap_err());
    assert!(err.contains("root rank 1 is not below the world size 1"), "{err}");

    let cuda_group = rto_dist::ProcessGroup::single(Device::Cuda(0));
    let mut cpu_tensor = Tensor::zeros([2], (Kind::Float, Device::Cpu));
    let err = format!("{:#}", cuda_group.all_reduce(&mut cpu_tensor, ReduceOp::Sum).unwrap_err());
    assert!(err.contains("[2] Float tensor on Cpu is not on the group's device Cuda(0)"), "{err}");
}
