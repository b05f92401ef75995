//! CUDA graphs of libtorch work: record the kernels that some Rust code launches through tch
//! once, then re-launch them all with one call. A decode step of a small model launches a few
//! hundred kernels of a few microseconds each, so on a GPU its time is the CPU's launch
//! overhead; a replay removes that overhead (this is what vLLM's and SGLang's decode graphs do).
//!
//! What a captured region may do is CUDA's rule, not ours: it must read and write only tensors
//! that outlive the graph (the replay uses the same addresses), must not synchronise with the
//! host (no `.int64_value()`, no copy to the CPU), and must have the same shapes every time.
//! `rto_model::decode_graph` is the one user.
//!
//! The C++ side (csrc/graph.cpp) wraps `at::cuda::CUDAGraph` and is compiled only with the
//! `graphs` feature (it needs CUDA headers); without it [`CudaGraph::new`] fails with how to
//! build it, and [`AVAILABLE`] is false.

use anyhow::Result;

/// Whether this build carries the CUDA graph shim (`--features rto-cuda/graphs`).
pub const AVAILABLE: bool = cfg!(feature = "graphs");

/// Fails, saying how to get CUDA graphs, when this build lacks them: what a caller checks
/// before it commits to graphs (loading models, say).
pub fn ensure_available() -> Result<()> {
    anyhow::ensure!(
        AVAILABLE,
        "this build has no CUDA graphs: rebuild with `make build-cuda` (cargo feature \
         rto-cuda/graphs, which needs CUDA headers), or leave --cuda-graph off"
    );
    Ok(())
}

/// One captured CUDA graph; dropped with the object (its memory pool is freed with it).
pub struct CudaGraph {
    #[cfg(feature = "graphs")]
    raw: std::ptr::NonNull<std::ffi::c_void>,
    captured: bool,
}

impl CudaGraph {
    /// A graph on CUDA device `device`, empty until [`CudaGraph::capture`].
    pub fn new(device: usize) -> Result<Self> {
        imp::new(device)
    }

    /// Runs `run` twice on a side stream: the first run executes (its result is real work, and
    /// it initialises what libtorch creates lazily per stream, such as cuBLAS workspaces,
    /// outside the capture), the second is captured and executes nothing. Returns both
    /// results; the second's tensors are the graph's outputs, refilled by every
    /// [`CudaGraph::replay`]. Host-side state that `run` changes changes twice.
    pub fn capture<T>(&mut self, run: impl FnMut() -> T) -> Result<(T, T)> {
        anyhow::ensure!(!self.captured, "this CUDA graph is already captured");
        let out = imp::capture(self, run)?;
        self.captured = true;
        Ok(out)
    }

    /// Launches the captured kernels on the current stream (ordered after the work queued
    /// before it, like any other op).
    pub fn replay(&self) -> Result<()> {
        anyhow::ensure!(self.captured, "replay of a CUDA graph that was never captured");
        imp::replay(self)
    }
}

#[cfg(not(feature = "graphs"))]
mod imp {
    use super::CudaGraph;
    use anyhow::Result;

    pub fn new(_device: usize) -> Result<CudaGraph> {
        super::ensure_available()?;
        unreachable!("ensure_available fails without the graphs feature")
    }

    pub fn capture<T>(_: &mut CudaGraph, _: impl FnMut() -> T) -> Result<(T, T)> {
        unreachable!("a CudaGraph cannot be made without the graphs feature")
    }

    pub fn replay(_: &CudaGraph) -> Result<()> {
        unreachable!("a CudaGraph cannot be made without the graphs feature")
    }
}

#[cfg(feature = "graphs")]
mod imp {
    use super::CudaGraph;
    use anyhow::{anyhow, bail, Context, Result};
    use std::ffi::{c_char, c_int, c_void, CStr};
    use std::ptr::NonNull;

    extern "C" {
        fn rto_cuda_graph_new(device: c_int, error: *mut *mut c_char) -> *mut c_void;
        fn rto_cuda_graph_enter_side_stream(graph: *mut c_void, error: *mut *mut c_char) -> c_int;
        fn rto_cuda_graph_leave_side_stream(graph: *mut c_void, error: *mut *mut c_char) -> c_int;
        fn rto_cuda_graph_capture_begin(graph: *mut c_void, error: *mut *mut c_char) -> c_int;
        fn rto_cuda_graph_capture_end(graph: *mut c_void, error: *mut *mut c_char) -> c_int;
        fn rto_cuda_graph_replay(graph: *mut c_void, error: *mut *mut c_char) -> c_int;
        fn rto_cuda_graph_free(graph: *mut c_void);
        fn rto_cuda_free_message(message: *mut c_char);
    }

    type Call = unsafe extern "C" fn(*mut c_void, *mut *mut c_char) -> c_int;

    /// Runs one shim call; a non-zero status comes back as the C++ exception's message.
    fn call(graph: &CudaGraph, what: &str, f: Call) -> Result<()> {
        let mut error: *mut c_char = std::ptr::null_mut();
        // SAFETY: `raw` is a live graph made by rto_cuda_graph_new; `error` is an out-pointer
        // the shim sets to a malloc'ed string or leaves null.
        let status = unsafe { f(graph.raw.as_ptr(), &mut error) };
        match status {
            0 => Ok(()),
            _ => Err(anyhow!("{}", take_message(error))).with_context(|| format!("CUDA graph: {what}")),
        }
    }

    fn take_message(error: *mut c_char) -> String {
        if error.is_null() {
            return "no message".into();
        }
        // SAFETY: a non-null `error` is a NUL-terminated string the shim strdup'ed; it is freed
        // once, here.
        unsafe {
            let text = CStr::from_ptr(error).to_string_lossy().into_owned();
            rto_cuda_free_message(error);
            text
        }
    }

    pub fn new(device: usize) -> Result<CudaGraph> {
        let mut error: *mut c_char = std::ptr::null_mut();
        // SAFETY: the shim only allocates; `error` as in `call`.
        let raw = unsafe { rto_cuda_graph_new(device as c_int, &mut error) };
        match NonNull::new(raw) {
            Some(raw) => Ok(CudaGraph { raw, captured: false }),
            None => bail!("CUDA graph on cuda:{device}: {}", take_message(error)),
        }
    }

    pub fn capture<T>(graph: &mut CudaGraph, mut run: impl FnMut() -> T) -> Result<(T, T)> {
        call(graph, "entering the side stream", rto_cuda_graph_enter_side_stream)?;
        let captured = (|| -> Result<(T, T)> {
            let warm = run();
            call(graph, "capture_begin", rto_cuda_graph_capture_begin)?;
            let recorded = run();
            let end = "capture_end (did an op in the captured region synchronise with the host?)";
            call(graph, end, rto_cuda_graph_capture_end)?;
            Ok((warm, recorded))
        })();
        // The caller's stream comes back whatever happened in between.
        let left = call(graph, "leaving the side stream", rto_cuda_graph_leave_side_stream);
        let out = captured?;
        left?;
        Ok(out)
    }

    pub fn replay(graph: &CudaGraph) -> Result<()> {
        call(graph, "replay", rto_cuda_graph_replay)
    }

    impl Drop for CudaGraph {
        fn drop(&mut self) {
            // SAFETY: `raw` came from rto_cuda_graph_new and is freed only here.
            unsafe { rto_cuda_graph_free(self.raw.as_ptr()) }
        }
    }
}
