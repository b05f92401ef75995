//! The C ABI of csrc/shim.cpp. Every call returns NULL or a malloc'd message of the C++
//! exception it caught; [`check`] turns that into an `anyhow` error.

use anyhow::{anyhow, Result};
use std::ffi::{c_char, c_void, CStr};
use tch::Tensor;

/// Opaque C++ objects (csrc/shim.cpp): a TCPStore, and a c10d backend with its store.
#[repr(C)]
pub struct RtoStore {
    _private: [u8; 0],
}

#[repr(C)]
pub struct RtoGroup {
    _private: [u8; 0],
}

/// tch's `C_tensor` (torch-sys) is an `at::Tensor`; the shim takes pointers to it.
type AtTensor = c_void;

extern "C" {
    fn rto_dist_error_free(message: *mut c_char);
    pub fn rto_dist_store_new(
        host: *const c_char,
        port: u16,
        world_size: i32,
        is_server: i32,
        wait_workers: i32,
        timeout_ms: i64,
        out: *mut *mut RtoStore,
    ) -> *mut c_char;
    pub fn rto_dist_store_port(store: *const RtoStore) -> u16;
    pub fn rto_dist_store_num_keys(store: *const RtoStore, out: *mut i64) -> *mut c_char;
    pub fn rto_dist_store_free(store: *mut RtoStore);
    pub fn rto_dist_group_new(
        store: *const RtoStore,
        prefix: *const c_char,
        rank: i32,
        world_size: i32,
        backend: i32,
        cuda_index: i32,
        timeout_ms: i64,
        out: *mut *mut RtoGroup,
    ) -> *mut c_char;
    pub fn rto_dist_group_free(group: *mut RtoGroup);
    pub fn rto_dist_all_reduce(group: *mut RtoGroup, tensor: *mut AtTensor, op: i32) -> *mut c_char;
    pub fn rto_dist_broadcast(group: *mut RtoGroup, tensor: *mut AtTensor, root: i32) -> *mut c_char;
    pub fn rto_dist_reduce_scatter(
        group: *mut RtoGroup,
        output: *mut AtTensor,
        input: *const AtTensor,
        op: i32,
    ) -> *mut c_char;
    pub fn rto_dist_all_gather(group: *mut RtoGroup, output: *mut AtTensor, input: *const AtTensor) -> *mut c_char;
    pub fn rto_dist_barrier(group: *mut RtoGroup) -> *mut c_char;
}

/// The shim's result: Ok for NULL, else the C++ message (freed here) as an error.
pub fn check(message: *mut c_char) -> Result<()> {
    if message.is_null() {
        return Ok(());
    }
    // SAFETY: a non-NULL result is a NUL-terminated string the shim allocated for us to free.
    let text = unsafe { CStr::from_ptr(message) }.to_string_lossy().trim_end().to_string();
    unsafe { rto_dist_error_free(message) };
    Err(anyhow!("c10d: {text}"))
}

pub fn tensor_mut(tensor: &mut Tensor) -> *mut AtTensor {
    tensor.as_mut_ptr().cast()
}

pub fn tensor_ref(tensor: &Tensor) -> *const AtTensor {
    tensor.as_ptr().cast()
}

pub fn millis(timeout: std::time::Duration) -> i64 {
    i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX)
}

/// Ranks and sizes come from validated env values; c10d takes them as int.
pub fn to_i32(value: usize) -> i32 {
    i32::try_from(value).expect("ranks and world sizes fit in an i32")
}
