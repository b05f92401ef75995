//! Compiles csrc/shim.cpp against the venv's torch headers and Debian's gloo headers, and links
//! it to libtorch_cpu/libc10 (gloo itself lives inside libtorch_cpu.so: never link a libgloo).
//! Paths come from .cargo/config.toml's [env], which `make setup` writes.

use std::env;
use std::path::{Path, PathBuf};

fn main() {
    for var in ["LIBTORCH", "RTO_GLOO_INCLUDE", "RTO_CUDA_INCLUDE"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=csrc/shim.cpp");
    let libtorch = PathBuf::from(required_env("LIBTORCH", "the torch folder of the venv's wheel"));
    let gloo = PathBuf::from(required_env("RTO_GLOO_INCLUDE", "the gloo headers unpacked from Debian's libgloo-dev"));
    require_file(&libtorch.join("include/torch/csrc/distributed/c10d/ProcessGroupGloo.hpp"), "LIBTORCH");
    require_file(&gloo.join("gloo/context.h"), "RTO_GLOO_INCLUDE");

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .file("csrc/shim.cpp")
        .include(libtorch.join("include"))
        .include(libtorch.join("include/torch/csrc/api/include"))
        .include(&gloo)
        // The wheel's ABI and the macros its libtorch_cpu was built with (Caffe2Targets.cmake):
        // without USE_C10D_GLOO, ProcessGroupGloo.hpp is an empty block.
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .define("USE_DISTRIBUTED", None)
        .define("USE_C10D_GLOO", None)
        // torch's headers are noisy under -Wall; our own file is small enough to read.
        .warnings(false);
    if env::var_os("CARGO_FEATURE_NCCL").is_some() {
        add_nccl(&mut build, &libtorch);
    }
    build.compile("rto_dist_shim");

    println!("cargo:rustc-link-search=native={}", libtorch.join("lib").display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}

/// The NCCL path: ProcessGroupNCCL.hpp pulls in ATen/cuda/CUDAContext.h, which needs the CUDA
/// runtime headers plus `crt/host_config.h` and `nv/target` (PyPI nvidia-cuda-crt and
/// nvidia-cuda-cccl, absent from the cu13 runtime wheels). RTO_CUDA_INCLUDE lists those folders
/// (':'-separated); the venv's nvidia/cu13 and nvidia/nccl include folders are always added.
fn add_nccl(build: &mut cc::Build, libtorch: &Path) {
    let nvidia = libtorch.join("../nvidia");
    for dir in [nvidia.join("cu13/include"), nvidia.join("nccl/include")] {
        require_file(&dir, "LIBTORCH (its ../nvidia wheels)");
        build.include(dir);
    }
    for dir in env::var("RTO_CUDA_INCLUDE").unwrap_or_default().split(':').filter(|d| !d.is_empty()) {
        build.include(dir);
    }
    // USE_C10D_NCCL is what torch_cuda's cmake target gives its users (USE_NVSHMEM too, which no
    // c10d header reads); RTO_DIST_NCCL switches on the shim's NCCL branch.
    build.define("USE_C10D_NCCL", None).define("RTO_DIST_NCCL", None);
    println!("cargo:rustc-link-search=native={}", nvidia.join("cu13/lib").display());
    println!("cargo:rustc-link-lib=dylib=torch_cuda");
    println!("cargo:rustc-link-lib=dylib=c10_cuda");
    println!("cargo:rustc-link-lib=dylib:+verbatim=libcudart.so.13");
}

fn required_env(var: &str, what: &str) -> String {
    env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set ({what}): run `make setup`, which writes it into .cargo/config.toml's [env]")
    })
}

fn require_file(path: &Path, var: &str) {
    assert!(
        path.exists(),
        "{} is missing ({var} points there): run `make setup`, which fetches and unpacks it",
        path.display()
    );
}
