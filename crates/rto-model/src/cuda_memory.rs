//! Free memory of a CUDA device, for the memory plan's check before any model is loaded.
//!
//! tch has no query for it, so this asks the CUDA runtime (`cudaMemGetInfo`) that
//! libtorch_cuda brought in when [`crate::cuda_library`] loaded it, found with
//! `dlopen(RTLD_NOLOAD)`: nothing new is loaded, and on a machine without CUDA the answer is
//! simply `None`. Unverified on a GPU in this repository's
//! CI (no device there); `tools/gpu-check.sh` is where a device run checks it.

use crate::cuda_library::{dlopen, dlsym, RTLD_LAZY, RTLD_NOLOAD};
use std::ffi::{c_int, CStr};

/// The CUDA runtime sonames the torch wheels ship (cu13 for torch 2.11, cu12 before).
const CUDART: [&CStr; 3] = [c"libcudart.so.13", c"libcudart.so.12", c"libcudart.so"];

type MemGetInfo = unsafe extern "C" fn(free: *mut usize, total: *mut usize) -> c_int;
type SetDevice = unsafe extern "C" fn(device: c_int) -> c_int;

/// (free, total) bytes of CUDA device `index`, or `None` when no CUDA runtime is loaded or the
/// query fails.
pub fn cuda_free_and_total_bytes(index: usize) -> Option<(u64, u64)> {
    // SAFETY: dlopen with RTLD_NOLOAD only returns a handle to a library already mapped into
    // the process; dlsym returns symbols whose C signatures are those of the CUDA runtime API
    // (cudaMemGetInfo(size_t*, size_t*), cudaSetDevice(int)), called with valid pointers.
    unsafe {
        let handle = CUDART.iter().map(|name| dlopen(name.as_ptr(), RTLD_LAZY | RTLD_NOLOAD)).find(|h| !h.is_null())?;
        let set_device = dlsym(handle, c"cudaSetDevice".as_ptr());
        let mem_get_info = dlsym(handle, c"cudaMemGetInfo".as_ptr());
        if set_device.is_null() || mem_get_info.is_null() {
            return None;
        }
        let set_device: SetDevice = std::mem::transmute(set_device);
        let mem_get_info: MemGetInfo = std::mem::transmute(mem_get_info);
        if set_device(index as c_int) != 0 {
            return None;
        }
        let (mut free, mut total) = (0usize, 0usize);
        (mem_get_info(&mut free, &mut total) == 0).then_some((free as u64, total as u64))
    }
}
