//! With the `graphs` feature: compiles csrc/graph.cpp against the venv's torch headers and the
//! CUDA headers of its nvidia wheels (the runtime's, plus nvidia-cuda-crt's `crt/host_config.h`
//! and nvidia-cuda-cccl's `nv/target`, which `make build-cuda` installs), and links it to
//! libtorch_cuda. Without the feature there is nothing to build.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=csrc/graph.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=RTO_CUDA_INCLUDE");
    if env::var_os("CARGO_FEATURE_GRAPHS").is_none() {
        return;
    }
    let libtorch = PathBuf::from(env::var("LIBTORCH").unwrap_or_else(|_| {
        panic!("LIBTORCH is not set (the torch folder of the venv's wheel): run `make setup`, which writes it into .cargo/config.toml")
    }));
    let cuda = libtorch.join("../nvidia/cu13");
    for header in ["include/cuda_runtime_api.h", "include/crt/host_config.h", "include/nv/target"] {
        let path = cuda.join(header);
        assert!(
            path.exists(),
            "{} is missing: `make build-cuda` installs nvidia-cuda-crt and nvidia-cuda-cccl into the venv",
            path.display()
        );
    }
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .file("csrc/graph.cpp")
        .include(libtorch.join("include"))
        .include(libtorch.join("include/torch/csrc/api/include"))
        .include(cuda.join("include"))
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .warnings(false);
    for dir in env::var("RTO_CUDA_INCLUDE").unwrap_or_default().split(':').filter(|d| !d.is_empty()) {
        build.include(dir);
    }
    build.compile("rto_cuda_graph_shim");
    println!("cargo:rustc-link-search=native={}", libtorch.join("lib").display());
    println!("cargo:rustc-link-search=native={}", cuda.join("lib").display());
    for lib in ["torch_cuda", "c10_cuda", "torch_cpu", "c10"] {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }
    println!("cargo:rustc-link-lib=dylib:+verbatim=libcudart.so.13");
}
