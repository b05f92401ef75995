//! libtorch's grad mode, queried: whether an operation run now is recorded for a backward.
//!
//! tch sets the mode (`tch::no_grad`) but keeps its query private; code that picks a cheaper
//! path when no graph is built (an `out=` kernel, which autograd refuses) asks here.

use std::os::raw::c_int;
use tch::Tensor;

extern "C" {
    /// torch-sys's C wrapper over `at::GradMode::set_enabled`: sets the mode, returns the old.
    fn at_grad_set_enabled(enabled: c_int) -> c_int;
}

/// Whether grad mode is on in this thread (libtorch keeps it per thread).
pub fn enabled() -> bool {
    // SAFETY: the call only reads and writes libtorch's thread-local grad-mode flag; the
    // second call puts back the value the first one returned.
    unsafe {
        let was = at_grad_set_enabled(1);
        at_grad_set_enabled(was);
        was != 0
    }
}

/// Whether an operation on `inputs` run now would be recorded: grad mode on and an input
/// requiring a gradient.
pub fn records_op(inputs: &[&Tensor]) -> bool {
    inputs.iter().any(|t| t.requires_grad()) && enabled()
}
