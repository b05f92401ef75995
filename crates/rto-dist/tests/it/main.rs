//! rto-dist's tests: real two-process groups on Gloo (this binary re-executes itself once per
//! rank, see worker.rs), the single-process invariant, launch-variable parsing, failures, and
//! a run under the venv's torchrun.

mod collectives;
mod failures;
mod launch_env;
mod single;
mod stores;
mod torchrun;
mod worker;
