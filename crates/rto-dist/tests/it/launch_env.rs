//! Reading torchrun's and Slurm's variables: what they give, and errors naming the variable.

use crate::worker::{is_worker, run, test_name, DEFAULT_TIMEOUT};
use rto_dist::{Launch, Launcher, ProcessGroup};
use std::collections::HashMap;
use std::time::Duration;
use tch::Device;

/// Variables and their values, as a test gives them.
type Vars<'a> = &'a [(&'a str, &'a str)];

fn parse(vars: &[(&str, &str)]) -> anyhow::Result<Option<Launch>> {
    let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Launch::from_vars(|name| map.get(name).cloned())
}

fn error(vars: &[(&str, &str)]) -> String {
    format!("{:#}", parse(vars).expect_err("a bad launch environment"))
}

const TORCHRUN: [(&str, &str); 5] =
    [("RANK", "1"), ("WORLD_SIZE", "4"), ("LOCAL_RANK", "1"), ("MASTER_ADDR", "node0"), ("MASTER_PORT", "29500")];

fn with(
    base: &[(&'static str, &'static str)],
    changes: &[(&'static str, &'static str)],
) -> Vec<(&'static str, &'static str)> {
    let mut vars: Vec<_> = base.iter().filter(|(k, _)| !changes.iter().any(|(c, _)| c == k)).copied().collect();
    vars.extend(changes.iter().filter(|(_, v)| !v.is_empty()));
    vars
}

#[test]
fn no_variables_is_a_single_process() {
    assert_eq!(parse(&[]).unwrap(), None);
    // LOCAL_RANK alone (some tools export it) does not make a launch.
    assert_eq!(parse(&[("LOCAL_RANK", "0")]).unwrap(), None);
}

#[test]
fn torchrun_variables() {
    let vars = with(
        &TORCHRUN,
        &[("LOCAL_WORLD_SIZE", "2"), ("TORCHELASTIC_USE_AGENT_STORE", "True"), ("TORCHELASTIC_RESTART_COUNT", "2")],
    );
    let launch = parse(&vars).unwrap().unwrap();
    let expected = Launch {
        rank: 1,
        world_size: 4,
        local_rank: 1,
        local_world_size: Some(2),
        master_addr: "node0".into(),
        master_port: 29500,
        agent_store: true,
        restart_count: 2,
        launcher: Launcher::Torchrun,
    };
    assert_eq!(launch, expected);
    // A hand launch: no LOCAL_*, no agent: local rank = rank, one node, rank 0 hosts the store.
    let launch = parse(&with(&TORCHRUN, &[("LOCAL_RANK", "")])).unwrap().unwrap();
    assert_eq!(
        (launch.local_rank, launch.local_world_size, launch.agent_store, launch.restart_count),
        (1, Some(4), false, 0)
    );
}

#[test]
fn slurm_variables_are_the_fallback() {
    let slurm = [("SLURM_PROCID", "5"), ("SLURM_NTASKS", "8"), ("SLURM_LOCALID", "1")];
    let launch = parse(&with(&slurm, &[("MASTER_ADDR", "gpu01"), ("MASTER_PORT", "29400")])).unwrap().unwrap();
    assert_eq!((launch.rank, launch.world_size, launch.local_rank), (5, 8, 1));
    assert_eq!(
        (launch.launcher, launch.local_world_size, launch.master_addr.as_str()),
        (Launcher::Slurm, None, "gpu01")
    );
    let err = error(&slurm);
    assert!(err.contains("MASTER_ADDR is not set") && err.contains("scontrol show hostnames"), "{err}");
    let err = error(&with(&slurm, &[("MASTER_ADDR", "gpu01")]));
    assert!(err.contains("MASTER_PORT is not set") && err.contains("export MASTER_PORT"), "{err}");
    // torchrun inside a Slurm job: torchrun's variables win.
    let both: Vec<_> = TORCHRUN.iter().chain(slurm.iter()).copied().collect();
    assert_eq!(parse(&both).unwrap().unwrap().launcher, Launcher::Torchrun);
}

#[test]
fn bad_values_name_the_variable_and_the_fix() {
    let cases: [(Vars, &[&str]); 9] = [
        (&[("RANK", "3"), ("WORLD_SIZE", "2")], &["RANK=3 is not below WORLD_SIZE=2", "0 to WORLD_SIZE-1"]),
        (
            &[("RANK", "x"), ("WORLD_SIZE", "2")],
            &["RANK=\"x\" is not a non-negative whole number", "fix or unset RANK"],
        ),
        (&[("RANK", "-1"), ("WORLD_SIZE", "2")], &["RANK=\"-1\""]),
        (&[("WORLD_SIZE", "2")], &["RANK is not set", "torchrun sets both"]),
        (&[("RANK", "0")], &["WORLD_SIZE is not set"]),
        (&[("RANK", "0"), ("WORLD_SIZE", "0")], &["WORLD_SIZE=0", "at least 1"]),
        (&with(&TORCHRUN, &[("MASTER_PORT", "70000")]), &["MASTER_PORT=\"70000\""]),
        (&with(&TORCHRUN, &[("LOCAL_WORLD_SIZE", "1")]), &["LOCAL_RANK=1 is not below LOCAL_WORLD_SIZE=1"]),
        (
            &with(&TORCHRUN, &[("TORCHELASTIC_USE_AGENT_STORE", "yes")]),
            &["TORCHELASTIC_USE_AGENT_STORE=\"yes\"", "True"],
        ),
    ];
    for (vars, needles) in cases {
        let err = error(vars);
        for needle in needles {
            assert!(err.contains(needle), "{vars:?}: {err:?} lacks {needle:?}");
        }
    }
    let err = error(&with(&TORCHRUN, &[("MASTER_ADDR", "")]));
    assert!(err.contains("MASTER_ADDR is not set") && err.contains("torchrun sets it"), "{err}");
}

/// The same checks reach a real process through `ProcessGroup::from_env`, before any socket.
#[test]
fn from_env_reports_bad_variables() {
    if is_worker() {
        let err = ProcessGroup::from_env(Device::Cpu, Duration::from_secs(1)).err().expect("bad variables fail");
        println!("ERROR {err:#}");
        return;
    }
    let name = test_name(module_path!(), "from_env_reports_bad_variables");
    let vars = |rank: &str| vec![("RANK".to_string(), rank.to_string()), ("WORLD_SIZE".to_string(), "2".to_string())];
    let finished = run(&name, vec![vars("3"), vars("x")], DEFAULT_TIMEOUT);
    for (f, needle) in finished.iter().zip(["RANK=3 is not below WORLD_SIZE=2", "RANK=\"x\" is not a non-negative"]) {
        assert!(f.status.success(), "{}", f.describe());
        assert!(f.stdout.contains("ERROR reading the launch environment (torchrun or Slurm): "), "{}", f.describe());
        assert!(f.stdout.contains(needle), "{}", f.describe());
    }
}
