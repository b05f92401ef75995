//! libtorch's CUDA half (`libtorch_cuda.so`), loaded only when a stage asks for a CUDA device.
//!
//! The binaries do not link it: loading it and what it pulls in (cuBLAS, cuDNN, NCCL, cuSPARSE,
//! NVSHMEM ...) and running their static initialisers cost every process ~0.2 s and ~350 MB of
//! RSS on a CPU run, the whole start of a small stage. [`load_libtorch_cuda`] opens it from the
//! folder of the `libtorch_cpu.so` this process runs on, so the two halves are one torch build.
//! Its static initialisers register the CUDA kernels and libtorch's CUDA hooks, which libtorch
//! looks up once and then keeps: the load must come before anything asks libtorch about CUDA
//! (a device count, a CUDA tensor, a seed). [`crate::parse_device`] is the one place that turns
//! `--device cuda` into a device, and it loads the library first.

use anyhow::{bail, Result};
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::PathBuf;
use std::sync::OnceLock;

extern "C" {
    pub(crate) fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
    pub(crate) fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn dlerror() -> *mut c_char;
}

// From <dlfcn.h> (glibc).
pub(crate) const RTLD_LAZY: c_int = 0x0001;
const RTLD_NOW: c_int = 0x0002;
pub(crate) const RTLD_NOLOAD: c_int = 0x0004;
const RTLD_GLOBAL: c_int = 0x0100;

/// Loads `libtorch_cuda.so` (once per process) from the folder of the loaded `libtorch_cpu.so`.
/// Fails with the loader's reason when that build has none (a CPU-only torch) or it cannot be
/// loaded (a missing CUDA library).
pub fn load_libtorch_cuda() -> Result<()> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    match LOADED.get_or_init(open_next_to_libtorch_cpu) {
        Ok(()) => Ok(()),
        Err(why) => bail!("{why}"),
    }
}

fn open_next_to_libtorch_cpu() -> Result<(), String> {
    let dir = libtorch_dir().ok_or("libtorch_cpu.so is not among this process's mapped libraries")?;
    let path = dir.join("libtorch_cuda.so");
    if !path.exists() {
        return Err(format!(
            "{} does not exist: this torch build has no CUDA (a CPU-only wheel?); install the CUDA build of torch 2.11",
            path.display()
        ));
    }
    let name = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: dlopen with a valid NUL-terminated path; dlerror's message is read before any
    // other dl call on this thread can replace it.
    unsafe {
        if dlopen(name.as_ptr(), RTLD_NOW | RTLD_GLOBAL).is_null() {
            let why = dlerror();
            let why = if why.is_null() { "no reason given".into() } else { CStr::from_ptr(why).to_string_lossy() };
            return Err(format!("cannot load {}: {why}", path.display()));
        }
    }
    Ok(())
}

/// The folder of the `libtorch_cpu.so` mapped into this process (from /proc/self/maps).
pub fn libtorch_dir() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| path.ends_with("/libtorch_cpu.so"))
        .and_then(|path| PathBuf::from(path).parent().map(PathBuf::from))
}
