//! rto-cuda without a GPU: what a build says about its CUDA graphs.

/// A build without the `graphs` feature (CI's, every CPU build's) has no shim: making a graph
/// fails with how to get one, and nothing pretends to capture.
#[cfg(not(feature = "graphs"))]
#[test]
fn a_build_without_the_shim_refuses_graphs_and_says_how_to_build_them() {
    let err = rto_cuda::CudaGraph::new(0).err().expect("no graph without the shim").to_string();
    assert!(err.contains("make build-cuda"), "{err}");
    assert!(err.contains("--cuda-graph"), "{err}");
}
