//! libtorch's CUDA half is mapped only once `--device cuda` is parsed, and what it then
//! registers is live: libtorch's own "CUDA library not loaded" stub must not answer. Run in a
//! child process (this test binary, one test), since a process loads the library at most once
//! and other tests in this process may parse a CUDA device.

use rto_model::cuda_library::libtorch_dir;
use tch::{Device, Kind, Tensor};

const CHILD_ENV: &str = "RTO_CUDA_LIBRARY_CHILD";
/// What libtorch says when CUDA is used without libtorch_cuda.so loaded: no CUDA kernel is
/// registered (seen with torch 2.11: a CUDA tensor made before the load), or its hooks' stub.
const NOT_LOADED: [&str; 2] =
    ["with arguments from the 'CUDA' backend", "Cannot initialize CUDA without ATen_cuda library"];

fn cuda_half_mapped() -> bool {
    std::fs::read_to_string("/proc/self/maps").unwrap().contains("/libtorch_cuda.so")
}

/// The child: prints what it saw, one `KEY=value` line each.
#[test]
fn child_parses_a_cuda_device() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    // CPU work first: it must not need the CUDA half.
    let sum = Tensor::ones([4], (Kind::Float, Device::Cpu)).sum(Kind::Float).double_value(&[]);
    println!("CPU_SUM={sum}");
    println!("MAPPED_BEFORE={}", cuda_half_mapped());
    let parsed = rto_model::parse_device("cuda").map_err(|e| format!("{e:#}"));
    println!("MAPPED_AFTER={}", cuda_half_mapped());
    println!("PARSED={parsed:?}");
    let tensor = match Tensor::f_zeros([1], (Kind::Float, Device::Cuda(0))) {
        Ok(_) => "ok".to_string(),
        Err(err) => err.to_string().lines().next().unwrap_or_default().to_string(),
    };
    println!("CUDA_TENSOR={tensor}");
}

fn value<'a>(out: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}=");
    // The first line follows libtest's `test NAME ... ` on the same line.
    out.lines()
        .find_map(|l| l.split_once(prefix.as_str()).map(|(_, v)| v))
        .unwrap_or_else(|| panic!("no {key} in:\n{out}"))
}

#[test]
fn libtorch_cuda_is_loaded_for_a_cuda_device_only() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["cuda_library::child_parses_a_cuda_device", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "child failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(value(&stdout, "CPU_SUM"), "4");
    assert_eq!(value(&stdout, "MAPPED_BEFORE"), "false", "a CPU process must not map libtorch_cuda.so");
    let parsed = value(&stdout, "PARSED");
    let tensor = value(&stdout, "CUDA_TENSOR");
    let dir = libtorch_dir().expect("libtorch_cpu.so is mapped into the test process");
    if !dir.join("libtorch_cuda.so").exists() {
        // A CPU-only torch: the error names the missing file.
        assert!(parsed.contains("libtorch_cuda.so does not exist"), "{parsed}");
        return;
    }
    assert_eq!(value(&stdout, "MAPPED_AFTER"), "true", "--device cuda maps libtorch_cuda.so: {parsed}");
    for stub in NOT_LOADED {
        assert!(!tensor.contains(stub), "CUDA answered as if libtorch_cuda.so were not loaded: {tensor}");
    }
    if parsed.starts_with("Ok") {
        assert_eq!(tensor, "ok", "a GPU machine makes a CUDA tensor");
    } else {
        // No GPU here: the device check names what it saw, and the CUDA runtime itself says why
        // (torch 2.11: "Found no NVIDIA driver on your system").
        assert!(parsed.contains("libtorch sees 0 CUDA device(s)"), "{parsed}");
        assert!(tensor.contains("NVIDIA driver") || tensor.contains("CUDA"), "{tensor}");
    }
}
