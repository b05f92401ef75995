"""Unit tests of pipelines/stats.py and pipelines/tuning.py against hand-computed values.

Run by `cargo test --release -p rto-task --test it pipeline_stats` (crates/rto-task/tests/it/
pipeline_stats.rs, with the venv's python), or directly: `.venv/bin/python pipelines/test_study.py`.
"""
import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import stats  # noqa: E402
import study_report  # noqa: E402
import tuning  # noqa: E402


class MeanCi(unittest.TestCase):
    def test_five_values(self):
        # mean 3, sd sqrt(2.5), se sqrt(2.5/5) = 0.7071068; t(4) = 2.7764 -> half width 1.9632113
        r = stats.mean_ci([1, 2, 3, 4, 5])
        self.assertAlmostEqual(r["mean"], 3.0)
        self.assertAlmostEqual(r["sd"], 1.5811388, places=6)
        self.assertAlmostEqual(r["lo"], 1.0367887, places=6)
        self.assertAlmostEqual(r["hi"], 4.9632113, places=6)

    def test_two_values_use_one_degree_of_freedom(self):
        # mean 3, sd sqrt(2), se 1; t(1) = 12.7062
        r = stats.mean_ci([2.0, 4.0])
        self.assertAlmostEqual(r["lo"], 3 - 12.7062, places=6)
        self.assertAlmostEqual(r["hi"], 3 + 12.7062, places=6)

    def test_one_value_has_no_interval(self):
        r = stats.mean_ci([0.7])
        self.assertEqual((r["mean"], r["lo"], r["hi"], r["n"]), (0.7, None, None, 1))


class SplitMix(unittest.TestCase):
    def test_reference_outputs(self):
        # Vigna's splitmix64.c seeded with 0 (the same check as crates/rto-rng's own test).
        rng = stats.SplitMix64(0)
        self.assertEqual(rng.next_u64(), 0xE220A8397B1DCDAF)
        self.assertEqual(rng.next_u64(), 0x6E789E6AA1B965F4)


class Quantile(unittest.TestCase):
    def test_linear_between_order_statistics(self):
        xs = [1.0, 2.0, 4.0, 8.0]
        self.assertEqual(stats.quantile(xs, 0.0), 1.0)
        self.assertEqual(stats.quantile(xs, 1.0), 8.0)
        # h = 3 * 0.5 = 1.5: halfway between 2 and 4
        self.assertAlmostEqual(stats.quantile(xs, 0.5), 3.0)
        # h = 3 * 0.9 = 2.7: 4 + 0.7 * 4
        self.assertAlmostEqual(stats.quantile(xs, 0.9), 6.8)


class PairedDifference(unittest.TestCase):
    def test_pairs_by_seed_not_by_position(self):
        # Per seed, a is b + 0.1 exactly: every resample's mean difference is 0.1. Pairing the
        # values in listing order (3 with 1.1, ...) would give a wide interval instead.
        a = {3: 3.0, 1: 1.0, 2: 2.0}
        b = {1: 0.9, 2: 1.9, 3: 2.9}
        r = stats.paired_difference(a, b, seed=7, resamples=500)
        self.assertAlmostEqual(r["mean"], 0.1)
        self.assertAlmostEqual(r["lo"], 0.1)
        self.assertAlmostEqual(r["hi"], 0.1)
        self.assertEqual(r["n"], 3)

    def test_against_one_offline_value(self):
        r = stats.paired_difference({1: 0.5, 2: 0.7}, 0.6, seed=1, resamples=200)
        self.assertAlmostEqual(r["mean"], 0.0)
        self.assertEqual([round(d, 9) for d in r["diffs"]], [-0.1, 0.1])

    def test_t_interval_of_the_differences(self):
        # diffs 0.1 and 0.3: mean 0.2, sd 0.1414214, se 0.1, t(1) = 12.7062
        r = stats.paired_difference({1: 1.1, 2: 1.3}, {1: 1.0, 2: 1.0}, seed=3, resamples=200)
        self.assertAlmostEqual(r["t_lo"], 0.2 - 1.27062, places=6)
        self.assertAlmostEqual(r["t_hi"], 0.2 + 1.27062, places=6)
        # the bootstrap interval stays within the range of the two differences
        self.assertGreaterEqual(r["lo"], 0.1 - 1e-12)
        self.assertLessEqual(r["hi"], 0.3 + 1e-12)

    def test_two_point_bootstrap_distribution(self):
        # Differences {0, 1}: a resample's mean is 0, 0.5 or 1 with probability 1/4, 1/2, 1/4,
        # so the 2.5% and 97.5% quantiles are 0 and 1.
        means = stats.bootstrap_means([0.0, 1.0], seed=11, resamples=4000)
        for value, p in [(0.0, 0.25), (0.5, 0.5), (1.0, 0.25)]:
            share = sum(m == value for m in means) / len(means)
            self.assertAlmostEqual(share, p, delta=0.03, msg=f"share of resample mean {value}")
        self.assertEqual(stats.bootstrap_ci([0.0, 1.0], seed=11, resamples=4000), (0.0, 1.0))

    def test_three_point_bootstrap_distribution(self):
        # Differences {0, 0, 3}: the mean is the number of 3s drawn, Binomial(3, 1/3):
        # P = 8/27, 12/27, 6/27, 1/27 for means 0, 1, 2, 3.
        means = stats.bootstrap_means([0.0, 0.0, 3.0], seed=5, resamples=6000)
        for value, p in [(0.0, 8 / 27), (1.0, 12 / 27), (2.0, 6 / 27), (3.0, 1 / 27)]:
            self.assertAlmostEqual(sum(m == value for m in means) / len(means), p, delta=0.03)

    def test_same_seed_same_interval(self):
        values = {1: 0.3, 2: -0.1, 3: 0.25, 4: 0.05, 5: 0.4}
        first = stats.paired_difference(values, 0.0, seed=18)
        self.assertEqual(first, stats.paired_difference(values, 0.0, seed=18))
        diffs = list(values.values())
        self.assertNotEqual(stats.bootstrap_means(diffs, 18, 1000), stats.bootstrap_means(diffs, 19, 1000))

    def test_mismatched_seeds_are_refused(self):
        with self.assertRaisesRegex(ValueError, "same seeds"):
            stats.paired_difference({1: 0.0, 2: 0.0}, {1: 0.0, 3: 0.0}, seed=1)


class Curves(unittest.TestCase):
    def test_trailing_mean(self):
        self.assertEqual(stats.trailing_mean([1, 3, 5, 7], 2), [1, 2, 4, 6])
        self.assertEqual(stats.trailing_mean([3, 6, 9], 5), [3, 4.5, 6])

    def test_samples_to_threshold(self):
        xs, ys = [64, 128, 192, 256], [-3.0, -2.5, -2.7, -2.2]
        self.assertEqual(stats.samples_to_threshold(xs, ys, -2.6), 128)
        self.assertEqual(stats.samples_to_threshold(xs, ys, -2.2), 256)  # reaching it counts
        self.assertIsNone(stats.samples_to_threshold(xs, ys, -2.0))

    def test_value_at(self):
        xs, ys = [64, 128, 192], [1.0, 2.0, 3.0]
        self.assertEqual(stats.value_at(xs, ys, 150), 2.0)
        self.assertEqual(stats.value_at(xs, ys, 192), 3.0)
        with self.assertRaises(ValueError):
            stats.value_at(xs, ys, 10)

    def test_slope_of_a_line_and_of_a_zigzag(self):
        b, se = stats.slope([0, 1, 2, 3], [1, 3, 5, 7])
        self.assertAlmostEqual(b, 2.0)
        self.assertAlmostEqual(se, 0.0)
        # x̄ 1.5, ȳ 0.5, Sxy 1, Sxx 5: slope 0.2; residuals -0.2 0.6 -0.6 0.2, SSR 0.8,
        # s² = 0.8 / 2, SE = sqrt(0.4 / 5)
        b, se = stats.slope([0, 1, 2, 3], [0, 1, 0, 1])
        self.assertAlmostEqual(b, 0.2)
        self.assertAlmostEqual(se, 0.28284271, places=7)

    def test_plateau_uses_the_last_points_only(self):
        xs = [64 * i for i in range(1, 9)]
        rising_then_flat = [-4.0, -3.5, -3.0, -2.5, -2.5, -2.5, -2.5, -2.5]
        flat = stats.plateau(xs, rising_then_flat, last=4, threshold=1e-4)
        self.assertTrue(flat["flattened"])
        self.assertAlmostEqual(flat["slope"], 0.0)
        rising = stats.plateau(xs, rising_then_flat, last=8, threshold=1e-4)
        self.assertFalse(rising["flattened"])


class Verdict(unittest.TestCase):
    def diff(self, lo, hi, t_lo, t_hi):
        return dict(lo=lo, hi=hi, t_lo=t_lo, t_hi=t_hi, n=5)

    def test_a_win_needs_both_intervals_clear_of_zero(self):
        self.assertEqual(study_report.verdict(self.diff(0.01, 0.05, 0.002, 0.06), "RTO", "PPO"), "RTO beats PPO here")
        self.assertEqual(study_report.verdict(self.diff(-0.05, -0.01, -0.06, -0.001), "RTO", "PPO"),
                         "PPO beats RTO here")
        self.assertIn("does not beat", study_report.verdict(self.diff(-0.01, 0.05, -0.02, 0.06), "RTO", "PPO"))
        self.assertIn("no reliable difference",
                      study_report.verdict(self.diff(0.01, 0.05, -0.02, 0.08), "RTO", "PPO"))


class PairAccuracy(unittest.TestCase):
    def test_labels_gold_and_ties(self):
        row = lambda s, g: {"s": s, "gold_score": g}  # noqa: E731
        pairs = [
            (row(1.0, 2.0), row(0.0, 1.0)),   # prefers chosen; gold agrees with the label
            (row(0.0, 1.0), row(1.0, 2.0)),   # prefers rejected; gold prefers rejected (label wrong)
            (row(2.0, 3.0), row(1.0, 3.0)),   # gold tie: counts for the labels only
            (row(0.0, 5.0), row(3.0, 1.0)),   # prefers rejected; gold prefers chosen
        ]
        r = stats.pair_accuracy(pairs, {"m": "s"})
        self.assertEqual((r["pairs"], r["untied"]), (4, 3))
        self.assertAlmostEqual(r["labels_agree_with_gold"], 2 / 3)  # pairs 1 and 4
        self.assertAlmostEqual(r["m_vs_labels"], 2 / 4)             # pairs 1 and 3
        self.assertAlmostEqual(r["m_vs_gold"], 2 / 3)               # pairs 1 and 2


class Tuning(unittest.TestCase):
    def test_grids_have_the_same_size_and_fold_beta1(self):
        plain, folded = tuning.grid(False), tuning.grid(True)
        self.assertEqual(len(plain), 4)
        self.assertEqual(len(folded), 4)
        lo, hi = tuning.BETA1S
        # half fraction of the 2^3 design: beta1 high exactly when one of lr, kl is high
        self.assertEqual([p["beta1"] for p in folded], [lo, hi, hi, lo])
        self.assertEqual([(p["actor_lr"], p["kl_coef"]) for p in folded],
                         [(p["actor_lr"], p["kl_coef"]) for p in plain])

    def test_flags(self):
        self.assertEqual(tuning.flags(dict(actor_lr=0.0003, kl_coef=0.05, beta1=0.15)),
                         ["--actor-lr", "0.0003", "--kl-coef", "0.05", "--beta1", "0.15"])

    def test_select_takes_the_highest_validation_gold(self):
        points = tuning.grid(True)
        scored = list(zip(points, [-3.0, -2.7, -2.9, -2.8]))
        self.assertIs(tuning.select(scored), points[1])

    def test_ties_go_to_the_smaller_lr_then_the_larger_kl(self):
        a = dict(actor_lr=3e-4, kl_coef=0.05)
        b = dict(actor_lr=1e-4, kl_coef=0.01)
        c = dict(actor_lr=1e-4, kl_coef=0.05)
        self.assertIs(tuning.select([(a, -2.5), (b, -2.5 + 1e-12), (c, -2.5)]), c)
        self.assertIs(tuning.select([(a, -2.5), (b, -2.5)]), b)

    def test_split_is_disjoint_and_keeps_the_rows(self):
        with tempfile.TemporaryDirectory() as tmp:
            rl, ev = os.path.join(tmp, "rl.jsonl"), os.path.join(tmp, "eval.jsonl")
            rows = [json.dumps({"prompt": f"p{i}"}) + "\n" for i in range(10)]
            open(rl, "w").write("".join(rows))
            open(ev, "w").write(json.dumps({"prompt": "e0"}) + "\n")
            train, val = tuning.split_prompts(rl, ev, os.path.join(tmp, "split"), validation=3)
            self.assertEqual(open(train).read(), "".join(rows[:7]))
            self.assertEqual(open(val).read(), "".join(rows[7:]))
            open(ev, "w").write(json.dumps({"prompt": "p8"}) + "\n")
            with self.assertRaisesRegex(SystemExit, "shares prompts"):
                tuning.split_prompts(rl, ev, os.path.join(tmp, "split"), validation=3)


if __name__ == "__main__":
    unittest.main()
