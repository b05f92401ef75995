//! The TCPStore ranks rendezvous through, and [`StoreServer`] for launchers that host it
//! themselves.

use crate::ffi;
use anyhow::{Context, Result};
use std::ffi::CString;
use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::ptr::{self, NonNull};
use std::thread;
use std::time::{Duration, Instant};

/// An owned TCPStore of the shim.
pub(crate) struct Store(NonNull<ffi::RtoStore>);

// SAFETY: the TCPStore is not tied to the thread that made it.
unsafe impl Send for Store {}

impl Store {
    /// A TCPStore on host:port: the server (`is_server`, which first waits up to `timeout` for
    /// `world_size` clients when `wait_workers`), else a client, which first waits up to
    /// `timeout` for the server to listen.
    pub(crate) fn open(
        host: &str,
        port: u16,
        world_size: usize,
        is_server: bool,
        wait_workers: bool,
        timeout: Duration,
    ) -> Result<Store> {
        if !is_server {
            wait_until_listening(host, port, timeout)?;
        }
        let host = CString::new(host).with_context(|| format!("store host {host:?} holds a NUL byte"))?;
        let mut store = ptr::null_mut();
        // SAFETY: `store` receives an owned pointer on success.
        ffi::check(unsafe {
            ffi::rto_dist_store_new(
                host.as_ptr(),
                port,
                ffi::to_i32(world_size),
                i32::from(is_server),
                i32::from(wait_workers),
                ffi::millis(timeout),
                &mut store,
            )
        })?;
        Ok(Store(NonNull::new(store).expect("the shim sets the store on success")))
    }

    pub(crate) fn as_ptr(&self) -> *const ffi::RtoStore {
        self.0.as_ptr()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: owned, freed once.
        unsafe { ffi::rto_dist_store_free(self.0.as_ptr()) }
    }
}

/// Returns once something accepts connections at host:port, or fails after `timeout`. c10d's
/// TCPStore client, when nobody listens yet, sleeps a jittered backoff before its last try that
/// can overrun its timeout by more than the timeout itself (a 3 s timeout took up to 7.7 s), and
/// logs a warning with a C++ backtrace per try; polling the port first keeps the rendezvous
/// within the timeout and the log quiet.
fn wait_until_listening(host: &str, port: u16, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let error = match try_connect(host, port, deadline) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let now = Instant::now();
        if now >= deadline {
            anyhow::bail!("nothing accepted a connection at {host}:{port} within {timeout:?} (last try: {error})");
        }
        thread::sleep(Duration::from_millis(100).min(deadline - now));
    }
}

fn try_connect(host: &str, port: u16, deadline: Instant) -> io::Result<()> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host} resolves to no address"));
    for addr in (host, port).to_socket_addrs()? {
        let wait =
            deadline.saturating_duration_since(Instant::now()).clamp(Duration::from_millis(1), Duration::from_secs(1));
        match TcpStream::connect_timeout(&addr, wait) {
            Ok(_) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A TCPStore server in this process, as torchrun's agent hosts one: ranks started with
/// TORCHELASTIC_USE_AGENT_STORE=True and MASTER_PORT=[`StoreServer::port`] all join it as
/// clients. It does not wait for them; dropping it stops the server.
pub struct StoreServer {
    store: Store,
}

impl StoreServer {
    /// Listens on `host:port` (port 0: any free port) for `world_size` ranks; `timeout` bounds
    /// the store's own operations.
    pub fn start(host: &str, port: u16, world_size: usize, timeout: Duration) -> Result<StoreServer> {
        let store = Store::open(host, port, world_size, true, false, timeout)
            .with_context(|| format!("starting a TCPStore server on {host}:{port}"))?;
        Ok(StoreServer { store })
    }

    /// The port it listens on (the one picked when started with port 0).
    pub fn port(&self) -> u16 {
        // SAFETY: the store is live.
        unsafe { ffi::rto_dist_store_port(self.store.as_ptr()) }
    }

    /// How many keys the store holds (the ranks' rendezvous keys and c10d's own).
    pub fn num_keys(&self) -> Result<i64> {
        let mut keys = 0;
        // SAFETY: the store is live; `keys` receives the count.
        ffi::check(unsafe { ffi::rto_dist_store_num_keys(self.store.as_ptr(), &mut keys) })
            .context("counting the store's keys")?;
        Ok(keys)
    }
}
