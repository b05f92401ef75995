"""The replication study's statistics (issue 18, item 4), pure Python so that they are the same
on every machine: mean and 95% t-interval over seeds, the paired difference of two methods with
a seeded bootstrap CI, samples-to-threshold on a rollout curve, and the plateau check (the
slope of a curve's last points).

Randomness: the bootstrap draws its resamples from SplitMix64, the generator every Rust stage
uses (crates/rto-rng), with the same `below` (rejection sampling), so a seed names the same
resamples on every platform and Python version (random.Random makes no such promise).

Tests: pipelines/test_study.py (hand-computed values), run by `cargo test -p rto-task --test it
pipeline_stats`.
"""
import math

MASK64 = (1 << 64) - 1
GOLDEN_GAMMA = 0x9E3779B97F4A7C15

# Two-sided 95% quantiles of Student's t, t_{0.975, df}, df = 1..30 (standard tables).
T_975 = [12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
         2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
         2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423]


class SplitMix64:
    """crates/rto-rng's SplitMix64: next_u64 and below(n) draw what the Rust one draws."""

    def __init__(self, seed):
        self.state = seed & MASK64

    def next_u64(self):
        self.state = (self.state + GOLDEN_GAMMA) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def below(self, n):
        """Uniform in 0..n without modulo bias, as SplitMix64::below."""
        if n <= 0:
            raise ValueError(f"SplitMix64.below({n}): n must be > 0")
        zone = MASK64 - (MASK64 % n)
        while True:
            x = self.next_u64()
            if x < zone:
                return x % n


def t_quantile_975(df):
    if not 1 <= df <= len(T_975):
        raise ValueError(f"t quantile for {df} degrees of freedom: the table covers 1..{len(T_975)} "
                         "(at most 31 seeds); extend T_975")
    return T_975[df - 1]


def mean_ci(values):
    """Mean, sample std and 95% t-interval of `values` (one per seed). With one value there is
    no interval: lo and hi are None."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci of no values")
    mean = sum(values) / n
    if n == 1:
        return dict(mean=mean, sd=0.0, lo=None, hi=None, n=1)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile_975(n - 1) * sd / math.sqrt(n)
    return dict(mean=mean, sd=sd, lo=mean - half, hi=mean + half, n=n)


def quantile(sorted_values, p):
    """The p-quantile of sorted values, linear between order statistics (numpy's default,
    Hyndman-Fan type 7)."""
    h = (len(sorted_values) - 1) * p
    lo = math.floor(h)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (h - lo) * (sorted_values[hi] - sorted_values[lo])


def bootstrap_means(values, seed, resamples):
    """The means of `resamples` resamples of `values` with replacement, sorted."""
    rng, n = SplitMix64(seed), len(values)
    return sorted(sum(values[rng.below(n)] for _ in range(n)) / n for _ in range(resamples))


def bootstrap_ci(values, seed, resamples=10000):
    """Percentile 95% bootstrap interval of the mean of `values`."""
    means = bootstrap_means(values, seed, resamples)
    return quantile(means, 0.025), quantile(means, 0.975)


def paired_difference(a, b, seed, resamples=10000):
    """a − b paired by seed. a: {seed: value}; b: {seed: value} over the same seeds, or one
    number (an offline model trained once: every seed of a is compared with it). Returns the
    mean difference, the per-seed differences, the seeded percentile bootstrap CI (lo, hi) and
    the t-interval of the differences (t_lo, t_hi; None with one seed). With few seeds the
    bootstrap interval cannot be wider than the range of the differences, so the t-interval is
    the check on it."""
    if isinstance(b, dict):
        if set(a) != set(b):
            raise ValueError(f"paired difference needs the same seeds on both sides: {sorted(a)} vs {sorted(b)}")
        diffs = [a[s] - b[s] for s in sorted(a)]
    else:
        diffs = [a[s] - b for s in sorted(a)]
    lo, hi = bootstrap_ci(diffs, seed, resamples)
    t = mean_ci(diffs)
    return dict(mean=t["mean"], lo=lo, hi=hi, t_lo=t["lo"], t_hi=t["hi"], n=len(diffs), diffs=diffs,
                resamples=resamples, bootstrap_seed=seed)


def trailing_mean(values, window):
    """values[i] replaced by the mean of values[i-window+1..i] (fewer at the start)."""
    return [sum(values[max(0, i - window + 1):i + 1]) / (i + 1 - max(0, i - window + 1)) for i in range(len(values))]


def value_at(xs, ys, x):
    """ys at the last point whose x is at most `x` (a curve read at a sample count)."""
    hits = [y for xi, y in zip(xs, ys) if xi <= x]
    if not hits:
        raise ValueError(f"the curve starts at {xs[0]} samples, after {x}")
    return hits[-1]


def samples_to_threshold(xs, ys, threshold):
    """The first x at which the curve reaches `threshold` (y >= threshold); None if never."""
    return next((x for x, y in zip(xs, ys) if y >= threshold), None)


def slope(xs, ys):
    """Least-squares slope of y on x and its standard error (None with fewer than 3 points)."""
    n = len(xs)
    if n < 2:
        raise ValueError(f"a slope needs at least 2 points, got {n}")
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    if n < 3:
        return b, None
    residuals = sum((y - my - b * (x - mx)) ** 2 for x, y in zip(xs, ys))
    return b, math.sqrt(residuals / (n - 2) / sxx)


def plateau(xs, ys, last, threshold):
    """Whether a curve has flattened: the least-squares slope over its `last` points, per sample,
    is below `threshold` (per sample)."""
    if len(xs) < last:
        raise ValueError(f"plateau check over the last {last} points of a {len(xs)}-point curve")
    b, se = slope(xs[-last:], ys[-last:])
    return dict(slope=b, se=se, points=last, threshold=threshold, flattened=b < threshold)


def pair_accuracy(pairs, scores):
    """How often each score in `scores` ({name: row key}) prefers the chosen row of a (chosen,
    rejected) pair: against the labels (every pair) and against the gold order (`gold_score`;
    pairs whose gold scores tie left out), with how often the labels agree with the gold order."""
    untied = [(c, r) for c, r in pairs if c["gold_score"] != r["gold_score"]]
    share = lambda hits: sum(hits) / max(len(hits), 1)  # noqa: E731
    out = dict(pairs=len(pairs), untied=len(untied),
               labels_agree_with_gold=share([c["gold_score"] > r["gold_score"] for c, r in untied]))
    for name, key in scores.items():
        out[f"{name}_vs_labels"] = share([c[key] > r[key] for c, r in pairs])
        out[f"{name}_vs_gold"] = share([(c[key] > r[key]) == (c["gold_score"] > r["gold_score"]) for c, r in untied])
    return out
