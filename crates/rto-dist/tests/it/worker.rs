//! Multi-process tests without torchrun: a test re-executes this test binary, filtered to
//! itself, once per rank with the launch variables set and WORKER marking it a worker. The
//! worker half of the test runs the collectives and prints `VALUE <key> <numbers...>` lines; the
//! parent half checks every rank's exit status and values against hand-computed ones.

use rto_dist::ProcessGroup;
use std::collections::BTreeMap;
use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use tch::Device;

/// Set in workers; its value is the group timeout in milliseconds.
const WORKER: &str = "RTO_DIST_TEST_WORKER";
/// Generous for two processes per test on a loaded 2-core machine.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// A worker still running after this is killed and the test fails (a hang, not a pass).
const DEADLINE: Duration = Duration::from_secs(120);

/// Everything a launcher may set: removed from workers so only what a test gives reaches them.
const LAUNCH_VARS: [&str; 13] = [
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_USE_AGENT_STORE",
    "TORCHELASTIC_RESTART_COUNT",
    "SLURM_PROCID",
    "SLURM_NTASKS",
    "SLURM_LOCALID",
    "GLOO_SOCKET_IFNAME",
    WORKER,
];

/// The libtest name of test function `name` in module `module_path` (`it::collectives` →
/// `collectives::name`), for `--exact`.
pub fn test_name(module_path: &str, name: &str) -> String {
    let module = module_path.strip_prefix("it::").unwrap_or(module_path);
    format!("{module}::{name}")
}

/// Whether this process is a worker of a test (else it is the test itself).
pub fn is_worker() -> bool {
    std::env::var_os(WORKER).is_some()
}

/// The worker's group timeout, as the parent chose it.
pub fn timeout() -> Duration {
    let ms = std::env::var(WORKER).expect("called in a worker").parse().expect("the parent sets milliseconds");
    Duration::from_millis(ms)
}

/// The worker's process group, from the launch variables the parent set.
pub fn group() -> ProcessGroup {
    ProcessGroup::from_env(Device::Cpu, timeout()).unwrap_or_else(|e| panic!("joining the group: {e:#}"))
}

/// Prints one value line for the parent.
pub fn report(key: &str, values: &[f64]) {
    let numbers: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    println!("VALUE {key} {}", numbers.join(" "));
}

/// A port nothing listens on right now (the OS hands out a fresh ephemeral one).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("binding a probe socket").local_addr().unwrap().port()
}

/// torchrun's variables for `rank` of `world` on this host.
pub fn torchrun_vars(rank: usize, world: usize, port: u16) -> Vec<(String, String)> {
    [
        ("RANK", rank.to_string()),
        ("WORLD_SIZE", world.to_string()),
        ("LOCAL_RANK", rank.to_string()),
        ("MASTER_ADDR", "127.0.0.1".to_string()),
        ("MASTER_PORT", port.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// One finished worker.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Finished {
    /// The numbers of the worker's `VALUE key ...` line.
    pub fn values(&self, key: &str) -> Vec<f64> {
        self.value_lines().remove(key).unwrap_or_else(|| panic!("no VALUE {key} line in:\n{}", self.stdout))
    }

    fn value_lines(&self) -> BTreeMap<String, Vec<f64>> {
        let mut out = BTreeMap::new();
        // libtest's `test name ... ` has no newline: the first line may start after it.
        for line in self.stdout.lines().filter_map(|l| l.split_once("VALUE ").map(|(_, rest)| rest)) {
            let mut words = line.split(' ');
            let key = words.next().unwrap().to_string();
            out.insert(key, words.map(|w| w.parse().expect("a number")).collect());
        }
        out
    }

    pub fn describe(&self) -> String {
        format!("{} after {:?}\n--- stdout\n{}\n--- stderr\n{}", self.status, self.elapsed, self.stdout, self.stderr)
    }
}

/// Runs test `test` in one worker per entry of `ranks` (each the launch variables of that
/// process) with group timeout `timeout`; returns when all have exited.
pub fn run(test: &str, ranks: Vec<Vec<(String, String)>>, timeout: Duration) -> Vec<Finished> {
    let exe = std::env::current_exe().expect("the test binary's path");
    let started = Instant::now();
    let running: Vec<Running> = ranks
        .into_iter()
        .map(|vars| {
            let mut command = Command::new(&exe);
            command.args(["--exact", test, "--nocapture", "--test-threads", "1"]);
            for var in LAUNCH_VARS {
                command.env_remove(var);
            }
            command.envs(vars).env(WORKER, timeout.as_millis().to_string()).env("OMP_NUM_THREADS", "1");
            Running::spawn(command)
        })
        .collect();
    running.into_iter().map(|r| r.wait(started)).collect()
}

/// `run` for a plain world of `world` ranks on a free port, asserting every rank exits 0.
pub fn run_world(test: &str, world: usize) -> Vec<Finished> {
    let port = free_port();
    let finished = run(test, (0..world).map(|r| torchrun_vars(r, world, port)).collect(), DEFAULT_TIMEOUT);
    for (rank, f) in finished.iter().enumerate() {
        assert!(f.status.success(), "rank {rank} of {test} failed: {}", f.describe());
    }
    finished
}

/// Runs any command to its end under the same hang deadline as the workers.
pub fn run_command(command: Command) -> Finished {
    let started = Instant::now();
    Running::spawn(command).wait(started)
}

struct Running {
    child: Child,
    stdout: JoinHandle<String>,
    stderr: JoinHandle<String>,
}

impl Running {
    fn spawn(mut command: Command) -> Running {
        let mut child =
            command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("re-executing the test binary");
        // Drained by threads: a worker blocked on a full pipe would look like a hang.
        let stdout = drain(child.stdout.take().unwrap());
        let stderr = drain(child.stderr.take().unwrap());
        Running { child, stdout, stderr }
    }

    fn wait(mut self, started: Instant) -> Finished {
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("polling a worker") {
                break status;
            }
            if started.elapsed() > DEADLINE {
                self.child.kill().expect("killing a hung worker");
                let status = self.child.wait().unwrap();
                let f = finished(status, self.stdout, self.stderr, started);
                panic!("a worker hung past {DEADLINE:?}: {}", f.describe());
            }
            thread::sleep(Duration::from_millis(20));
        };
        finished(status, self.stdout, self.stderr, started)
    }
}

fn finished(status: ExitStatus, stdout: JoinHandle<String>, stderr: JoinHandle<String>, started: Instant) -> Finished {
    let elapsed = started.elapsed();
    Finished { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap(), elapsed }
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        pipe.read_to_string(&mut text).expect("a worker's output is UTF-8");
        text
    })
}
