//! TORCHELASTIC_USE_AGENT_STORE=True: the launcher hosts the TCPStore (here the test, as
//! torchrun's agent would) and every rank, rank 0 included, joins it as a client. The agent's
//! store outlives a restart, so each attempt's keys must stay apart (the restart-count prefix).

use crate::worker::{group, is_worker, report, run, test_name, torchrun_vars, DEFAULT_TIMEOUT};
use rto_dist::{ReduceOp, StoreServer};
use tch::Tensor;

#[test]
fn ranks_join_the_agents_store_once_per_attempt() {
    if is_worker() {
        let group = group();
        let mut tensor = Tensor::from_slice(&[group.rank() as f64 + 1.0]);
        group.all_reduce(&mut tensor, ReduceOp::Sum).unwrap();
        report("sum", &[tensor.double_value(&[0])]);
        return;
    }
    let server = StoreServer::start("127.0.0.1", 0, 2, DEFAULT_TIMEOUT).unwrap();
    let port = server.port();
    assert_ne!(port, 0, "the server reports the port it picked");
    let name = test_name(module_path!(), "ranks_join_the_agents_store_once_per_attempt");
    // Two attempts on one store: the second writes its keys beside the first's (under its own
    // restart count) instead of over them, so it can never read a dead attempt's peer addresses.
    let mut keys = vec![server.num_keys().unwrap()];
    for restart in ["3", "4"] {
        let agent = [("TORCHELASTIC_USE_AGENT_STORE", "True"), ("TORCHELASTIC_RESTART_COUNT", restart)];
        let ranks = (0..2)
            .map(|r| {
                let mut vars = torchrun_vars(r, 2, port);
                vars.extend(agent.map(|(k, v)| (k.to_string(), v.to_string())));
                vars
            })
            .collect();
        for f in run(&name, ranks, DEFAULT_TIMEOUT) {
            assert!(f.status.success(), "attempt {restart}: {}", f.describe());
            assert_eq!(f.values("sum"), [3.0], "attempt {restart}");
        }
        keys.push(server.num_keys().unwrap());
    }
    assert!(keys[1] > keys[0] && keys[2] > keys[1], "each attempt adds keys of its own: counts {keys:?}");
}
