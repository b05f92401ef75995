//! The reproducible mode's parsing and key (no process environment is touched: `pins_to_set`
//! takes the environment as a lookup).

use clap::Parser;
use rto_data::cli::{parse_with_config_from, CommonArgs};
use rto_data::reproducible::{pins_to_set, switch_on, PINS};
use serde_json::json;
use std::collections::HashMap;
use std::ffi::OsString;

#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

fn common(list: &[&str]) -> CommonArgs {
    let argv = std::iter::once("stage").chain(list.iter().copied()).map(OsString::from).collect();
    parse_with_config_from::<Args>(argv).unwrap().common
}

#[test]
fn the_pins_enter_the_key_only_in_the_mode() {
    let (off, on) = (common(&[]), common(&["--reproducible"]));
    assert_eq!(off.key_settings(), json!({"device": "cpu", "seed": 42}));
    let pins = json!({"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"});
    assert_eq!(on.key_settings(), json!({"device": "cpu", "seed": 42, "reproducible": pins}));
    // The DPO reference pass's key (no seed) carries them too: they change its floats.
    assert_eq!(on.numerics_key(), json!({"device": "cpu", "reproducible": pins}));
}

#[test]
fn the_switch_reads_one_or_zero_and_refuses_the_rest() {
    assert!(!switch_on(None).unwrap());
    assert!(!switch_on(Some("")).unwrap());
    assert!(!switch_on(Some("0")).unwrap());
    assert!(switch_on(Some("1")).unwrap());
    let err = switch_on(Some("true")).unwrap_err().to_string();
    assert!(err.contains("RTO_REPRODUCIBLE=true") && err.contains("expected 1"), "{err}");
}

#[test]
fn preset_pins_are_kept_when_equal_and_refused_when_not() {
    let env = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let lookup = |e: HashMap<String, String>| move |var: &str| e.get(var).cloned();
    assert_eq!(pins_to_set(lookup(env(&[]))).unwrap(), PINS.to_vec());
    let left = pins_to_set(lookup(env(&[("MKL_CBWR", "AVX2")]))).unwrap();
    assert_eq!(left, vec![("ATEN_CPU_CAPABILITY", "avx2"), ("ONEDNN_MAX_CPU_ISA", "AVX2")]);
    let err = pins_to_set(lookup(env(&[("MKL_CBWR", "COMPATIBLE"), ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")])))
        .unwrap_err()
        .to_string();
    assert!(err.contains("MKL_CBWR=COMPATIBLE (the mode needs MKL_CBWR=AVX2)"), "{err}");
    assert!(err.contains("ONEDNN_MAX_CPU_ISA=AVX512_CORE") && err.contains("unset them"), "{err}");
    assert!(!err.contains("ATEN_CPU_CAPABILITY"), "{err}");
}
