//! pipelines/stats.py and pipelines/tuning.py, the replication study's statistics and tuning
//! rule: their Python unit tests (hand-computed values, pipelines/test_study.py) run with the
//! venv's python, and the bootstrap's SplitMix64 checked draw for draw against rto_rng's.

use rto_rng::SplitMix64;

const PIPELINES_ON_PATH: &str = "import sys; sys.path.insert(0, sys.argv[1]);";

fn pipelines_dir() -> String {
    rto_test_support::repo_root().join("pipelines").to_string_lossy().into_owned()
}

#[test]
fn study_statistics_unit_tests_pass() {
    let code = format!(
        "{PIPELINES_ON_PATH} import unittest, test_study; \
         r = unittest.main(module=test_study, argv=['test_study'], exit=False); \
         sys.exit(0 if r.result.wasSuccessful() and r.result.testsRun > 0 else 1)"
    );
    // python_code panics with unittest's report (stderr) when a test fails.
    rto_test_support::python_code(&code, &[&pipelines_dir()]);
}

#[test]
fn bootstrap_generator_draws_what_rto_rng_draws() {
    // Bounds that exercise the rejection zone differently (a power of two has none).
    let (seed, bounds) = (20261126u64, [1u64, 2, 3, 5, 7, 64, 1000, u64::MAX - 1]);
    let mut rng = SplitMix64::new(seed);
    let expected: Vec<String> = (0..40).map(|i| rng.below(bounds[i % bounds.len()]).to_string()).collect();
    let code = format!(
        "{PIPELINES_ON_PATH} import stats; rng = stats.SplitMix64({seed}); b = {bounds:?}; \
         print(' '.join(str(rng.below(b[i % len(b)])) for i in range(40)))"
    );
    let got = rto_test_support::python_code(&code, &[&pipelines_dir()]);
    assert_eq!(got.split_whitespace().collect::<Vec<_>>(), expected);
}
