"""The replication study's numbers and its report: summarize() turns the runs into the table
(replication.json), write() writes it with replication.md, whose conclusion is generated from
the numbers, and the plots. The statistics themselves live in pipelines/stats.py.
"""
import json
import os

import stats
import token_credit
import tuning

BOOTSTRAP_SEED = 20261126  # every paired-difference CI draws its resamples from this seed
SMOOTHING = 5  # iterations in the trailing mean of a rollout gold curve
# A curve has flattened when the least-squares slope of its seed-mean over the last half of the
# run is below this many gold points per 1000 rollout samples (the early rise is about 0.5).
PLATEAU_PER_1000 = 0.15
HEADLINE = ("rto", "ppo")  # the pair samples-to-threshold compares


def eval_values(seeds, key):
    return {seed: result[key] for seed, (_, result) in seeds.items()}


def method_row(name, seeds, curves):
    win, gold = (stats.mean_ci(list(eval_values(seeds, k).values())) for k in ("win_rate", "mean_gold_score"))
    length = stats.mean_ci(list(eval_values(seeds, "mean_length").values()))["mean"]
    samples = next(iter(curves.values()))[0][-1]
    return dict(method=name, win=win, gold=gold, length=length, samples=samples, seeds=sorted(seeds))


def offline_row(name, result):
    one = lambda v: stats.mean_ci([v])  # noqa: E731
    return dict(method=name, win=one(result["win_rate"]), gold=one(result["mean_gold_score"]),
                length=result["mean_length"], samples=0, seeds=[])


def differences(runs, offline):
    """RTO − PPO paired by seed, RTO − DPO against DPO's one model, on win rate and gold."""
    out = []
    for metric in ("win_rate", "mean_gold_score"):
        rto = eval_values(runs["rto"], metric)
        ppo = eval_values(runs["ppo"], metric)
        common = sorted(set(rto) & set(ppo))
        for other, b in [("ppo", {s: ppo[s] for s in common}), ("dpo", offline["dpo"][metric])]:
            a = {s: rto[s] for s in (common if other == "ppo" else rto)}
            out.append(dict(comparison=f"rto - {other}", metric=metric,
                            **stats.paired_difference(a, b, BOOTSTRAP_SEED)))
    return out


def mean_curve(curves, smooth=True):
    """(samples, mean over seeds) of a method's rollout gold curves, each smoothed first."""
    per_seed = [stats.trailing_mean(ys, SMOOTHING) if smooth else ys for _, ys in curves.values()]
    n = min(map(len, per_seed))
    xs = next(iter(curves.values()))[0][:n]
    return xs, [sum(c[i] for c in per_seed) / len(per_seed) for i in range(n)]


def threshold_both_ways(curves_a, curves_b, names):
    """Samples B needs to reach A's smoothed gold at N, and A to reach B's, N = half the budget
    (so each has the other half to catch up); on the seed-mean curves and per seed."""
    (xa, ya), (xb, yb) = mean_curve(curves_a), mean_curve(curves_b)
    n = xa[len(xa) // 2 - 1] if len(xa) > 1 else xa[0]

    def one(x1, y1, x2, y2):
        target = stats.value_at(x1, y1, n)
        return dict(target=target, needed=stats.samples_to_threshold(x2, y2, target))

    a, b = names
    per_seed = []
    for seed in sorted(set(curves_a) & set(curves_b)):
        (x1, y1), (x2, y2) = ((c[seed][0], stats.trailing_mean(c[seed][1], SMOOTHING)) for c in (curves_a, curves_b))
        per_seed.append(dict(seed=seed, **{f"{b}_to_{a}": one(x1, y1, x2, y2), f"{a}_to_{b}": one(x2, y2, x1, y1)}))
    return dict(reference_samples=n, budget=xa[-1], **{f"{b}_to_{a}": one(xa, ya, xb, yb),
                                                       f"{a}_to_{b}": one(xb, yb, xa, ya)}, per_seed=per_seed)


def plateaus(curves, iterations):
    last = min(iterations, max(3, iterations // 2))
    out = {}
    for name, seeds in curves.items():
        xs, ys = mean_curve(seeds, smooth=False)
        out[name] = stats.plateau(xs, ys, last=min(last, len(xs)), threshold=PLATEAU_PER_1000 / 1000)
    return out


def summarize(runs, offline, curves, selection, rewards, iterations):
    rows = [method_row(name, seeds, curves[name]) for name, seeds in runs.items()]
    rows += [offline_row(name, result) for name, result in offline.items()]
    return dict(rows=rows, sft_gold=offline["dpo"]["baseline_mean_gold_score"], differences=differences(runs, offline),
                samples_to_threshold=threshold_both_ways(curves[HEADLINE[0]], curves[HEADLINE[1]], HEADLINE),
                plateau=plateaus(curves, iterations), selection=selection, rewards=rewards,
                bootstrap_seed=BOOTSTRAP_SEED, iterations=iterations,
                runs=dict(ppo_train=sum(len(s) for s in runs.values()) + 4 * len(selection),
                          tuning=4 * len(selection)))


def ci(entry, digits=3):
    if entry["lo"] is None:
        return f"{entry['mean']:.{digits}f}"
    return f"{entry['mean']:.{digits}f} [{entry['lo']:.{digits}f}, {entry['hi']:.{digits}f}]"


def verdict(diff, a, b):
    """A win needs both intervals clear of 0: the bootstrap CI and the t-interval of the
    per-seed differences (with few seeds the bootstrap one is too narrow on its own)."""
    t_lo = diff["t_lo"] if diff["t_lo"] is not None else diff["lo"]
    t_hi = diff["t_hi"] if diff["t_hi"] is not None else diff["hi"]
    if diff["lo"] > 0 and t_lo > 0:
        return f"{a} beats {b} here"
    if diff["hi"] < 0 and t_hi < 0:
        return f"{b} beats {a} here"
    if diff["lo"] > 0 or diff["hi"] < 0:
        return (f"the bootstrap CI excludes 0 but the paired t-interval [{t_lo:.3f}, {t_hi:.3f}] does not: "
                f"with {diff['n']} seeds, no reliable difference between {a} and {b}")
    return f"the CI contains 0: {a} does not beat {b} here"


def compare(x, y, close=0.05):
    """'about as well as', 'better than' or 'worse than': correlation x against y."""
    if x is None or y is None or abs(x - y) <= close:
        return "about as well as"
    return "better than" if x > y else "worse than"


def needed_text(entry, budget):
    return f"{entry['needed']} samples" if entry["needed"] is not None else f"more than the budget ({budget})"


def conclusion(table):
    diff = {(d["comparison"], d["metric"]): d for d in table["differences"]}
    rp, rd = diff[("rto - ppo", "win_rate")], diff[("rto - dpo", "win_rate")]
    gp = diff[("rto - ppo", "mean_gold_score")]
    st = table["samples_to_threshold"]
    lines = [f"RTO − PPO in win rate vs SFT = {ci(rp)} (paired by seed, {rp['n']} seeds, bootstrap 95%): "
             f"{verdict(rp, 'RTO', 'PPO')}; in mean gold score {ci(gp)}: {verdict(gp, 'RTO', 'PPO')}. "
             f"RTO − DPO in win rate = {ci(rd)}: {verdict(rd, 'RTO', 'DPO')}. "
             f"At N = {st['reference_samples']} rollout samples PPO needs "
             f"{needed_text(st['ppo_to_rto'], st['budget'])} to reach RTO's smoothed rollout gold score "
             f"({st['ppo_to_rto']['target']:.3f}), and RTO needs {needed_text(st['rto_to_ppo'], st['budget'])} "
             f"to reach PPO's ({st['rto_to_ppo']['target']:.3f})."]
    credit = table["token_credit"].get("dpo", {})
    if "sft" in credit and "rto" in credit:
        s_sft = credit["sft"]["token_dpo_reward_vs_gold_credit"]["spearman"]
        s_rto = credit["rto"]["token_dpo_reward_vs_gold_credit"]["spearman"]
        rm = credit["sft"]["response_rm_vs_gold"]["pearson"]
        dret = credit["sft"]["response_dpo_return_vs_gold"]["pearson"]
        how = "only weakly" if max(s_sft or 0, s_rto or 0) < 0.3 else "clearly"
        r = table["rewards"]
        lines.append(
            f"Why: RTO's one difference from PPO is the dense DPO token reward, and it tracks the judge's true "
            f"per-token credit {how} (Spearman {token_credit.fmt(s_sft)} on SFT responses, "
            f"{token_credit.fmt(s_rto)} on RTO's); per response the DPO return tracks the gold score "
            f"{compare(dret, rm)} the RM score does (Pearson {token_credit.fmt(dret)} vs {token_credit.fmt(rm)}). "
            f"The rewards were trained on labels that agree with the gold order "
            f"{r['labels_agree_with_gold']:.1%} of the time and reach {r['dpo_accuracy']:.3f} (DPO) and "
            f"{r['rm_accuracy']:.3f} (RM) held-out accuracy on them. RTO should help where the token reward "
            f"carries credit the sentence reward cannot: a DPO model trained to its plateau (issue 18 item 1), "
            f"so that the token correlation rises well above the sentence-level one.")
    return lines


def selection_lines(table):
    lines = ["## Tuning (selected on the validation prompts before any eval prompt is used)", "",
             f"Grid: actor lr {tuning.ACTOR_LRS} × KL coefficient {tuning.KL_COEFS}, 4 points for every RL method; "
             f"methods whose reward reads the DPO model fold β1 {tuning.BETA1S} in (β1 high exactly when one of "
             f"lr, kl is high). One tuning seed ({tuning.TUNING_SEED}), RL prompts minus "
             f"{tuning.VALIDATION_PROMPTS} held-out validation prompts. Rule: highest mean gold score on the "
             "validation prompts; ties go to the smaller lr, then the larger KL coefficient, then the smaller β1.",
             "", "| method | setting | validation gold | validation win rate | chosen |", "|---|---|---|---|---|"]
    for name, sel in table["selection"].items():
        for t in sel["tried"]:
            mark = "**yes**" if t["point"] == sel["chosen"] else ""
            lines.append(f"| {name} | {tuning.label(t['point'])} | {t['validation_gold']:.3f} "
                         f"| {t['validation_win']:.3f} | {mark} |")
    return lines


def result_lines(table):
    lines = ["## Results on the eval prompts", "",
             f"SFT mean gold score on the eval prompts: {table['sft_gold']:.3f}. Win rate = share of eval prompts "
             "where the method's response has a higher gold score than the SFT model's (ties count half). "
             "Mean [95% t-interval over seeds]; offline models are trained once.", "",
             "| method | win rate vs SFT | mean gold score | mean length | rollout samples | seeds | curve flattened |",
             "|---|---|---|---|---|---|---|"]
    for r in table["rows"]:
        p = table["plateau"].get(r["method"])
        flat = "–" if p is None else ("yes" if p["flattened"] else "no")
        lines.append(f"| {r['method']} | {ci(r['win'])} | {ci(r['gold'])} | {r['length']:.1f} | {r['samples']} "
                     f"| {len(r['seeds']) or 1} | {flat} |")
    lines += ["", "Paired differences (per seed; DPO is one offline model, so each seed is compared with its one "
              f"value), percentile bootstrap over seeds, 10000 resamples, seed {table['bootstrap_seed']}:", "",
              "| comparison | metric | mean | 95% bootstrap CI | 95% t-interval | per seed |", "|---|---|---|---|---|---|"]
    for d in table["differences"]:
        t = "–" if d["t_lo"] is None else f"[{d['t_lo']:.3f}, {d['t_hi']:.3f}]"
        lines.append(f"| {d['comparison']} | {d['metric']} | {d['mean']:.3f} | [{d['lo']:.3f}, {d['hi']:.3f}] "
                     f"| {t} | {', '.join(f'{v:+.3f}' for v in d['diffs'])} |")
    return lines


def curve_lines(table):
    st = table["samples_to_threshold"]
    lines = ["## Samples to threshold", "",
             f"On the rollout gold curves ({SMOOTHING}-iteration trailing mean, mean over seeds): the target is one "
             f"method's score at N = {st['reference_samples']} samples (half the budget of {st['budget']}); the "
             "other method's first sample count at or above it.", "",
             "| | target | samples needed |", "|---|---|---|",
             f"| PPO to reach RTO's score at N | {st['ppo_to_rto']['target']:.3f} "
             f"| {needed_text(st['ppo_to_rto'], st['budget'])} |",
             f"| RTO to reach PPO's score at N | {st['rto_to_ppo']['target']:.3f} "
             f"| {needed_text(st['rto_to_ppo'], st['budget'])} |", "", "Per seed:", ""]
    for s in st["per_seed"]:
        lines.append(f"- seed {s['seed']}: PPO {needed_text(s['ppo_to_rto'], st['budget'])} to reach "
                     f"{s['ppo_to_rto']['target']:.3f}; RTO {needed_text(s['rto_to_ppo'], st['budget'])} to reach "
                     f"{s['rto_to_ppo']['target']:.3f}")
    lines += ["", "![samples to threshold](samples_to_threshold.png)", "",
              f"Plateau check: least-squares slope of the seed-mean rollout gold curve over the last iterations; "
              f"flattened when below {PLATEAU_PER_1000} gold points per 1000 samples.", "",
              "| method | last iterations | slope per 1000 samples | SE | flattened |", "|---|---|---|---|---|"]
    for name, p in table["plateau"].items():
        se = "–" if p["se"] is None else f"{p['se'] * 1000:.3f}"
        lines.append(f"| {name} | {p['points']} | {p['slope'] * 1000:.3f} | {se} | {'yes' if p['flattened'] else 'no'} |")
    return lines


def reward_lines(table):
    r = table["rewards"]
    return ["## Rewards being optimized", "",
            f"Held-out accuracy on the noisy labels ({r['pairs']} pairs; the labels agree with the gold order "
            f"{r['labels_agree_with_gold']:.3f} of the time): DPO {r['dpo_accuracy']:.3f}, SimPO "
            f"{r['simpo_accuracy']:.3f}, RM {r['rm_accuracy']:.3f}.", *fresh_pair_lines(r.get("fresh_pairs"))]


def fresh_pair_lines(f):
    """The rewards on pairs of the validation prompts, which no reward was trained on."""
    if not f:
        return []
    return ["", f"On {f['pairs']} fresh pairs (two SFT samples for each validation prompt, labelled the same way; "
            f"{f['untied']} without a gold tie, where the labels agree with the gold order {f['labels_agree_with_gold']:.3f} "
            f"of the time):", "",
            "| reward | accuracy vs the labels | accuracy vs the gold order |", "|---|---|---|",
            f"| DPO (Σ log π_dpo/π_ref) | {f['dpo_vs_labels']:.3f} | {f['dpo_vs_gold']:.3f} |",
            f"| RM score | {f['rm_vs_labels']:.3f} | {f['rm_vs_gold']:.3f} |"]


def markdown(table):
    mode = "on (RTO_REPRODUCIBLE=1)" if table["reproducible"] else "off"
    head = ["# Replication on the toy task (machine scale)", "",
            f"Profile: {table['profile']}; {table['iterations']} PPO iterations per run; "
            f"{table['runs']['ppo_train']} ppo-train runs ({table['runs']['tuning']} of them tuning). "
            f"Wall time of this run: {table['wall_time_s'] / 60:.1f} min ("
            f"{', '.join(f'{k} {v / 60:.1f}' for k, v in table['phases_s'].items())}; stages already in the store "
            f"are reused, not recomputed, so a run from scratch takes longer). Reproducible mode: {mode}; "
            "the blake3 of every artifact is in replication.blake3 (`make check-results` compares yours).", "",
            "## Conclusion", "", *conclusion(table), ""]
    body = [*result_lines(table), "", "![gold score vs samples](gold_vs_samples.png)", "", *curve_lines(table), "",
            *selection_lines(table), "", *reward_lines(table), "", "![DPO reward](dpo_reward.png)", "",
            *token_credit.markdown(table["token_credit"]), "", "![token credit](token_credit.png)", ""]
    return "\n".join(head + body)


def write(results, table, curves, runs, kept):
    json.dump(table["token_credit"], open(os.path.join(results, "token_credit.json"), "w"), indent=1)
    token_credit.plot(table["token_credit"], kept, os.path.join(results, "token_credit.png"))
    json.dump(table, open(os.path.join(results, "replication.json"), "w"), indent=1)
    open(os.path.join(results, "replication.md"), "w").write(markdown(table))
    plot_curves(results, curves, table)
    plot_dpo_reward(results, runs)


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


COLORS = {"ppo": "tab:blue", "rto": "tab:red", "dpo-only": "tab:green", "ddpo": "tab:purple", "rs-ppo": "tab:brown",
          "reinforce++-rto": "tab:pink", "grpo": "tab:cyan", "rto-grpo": "tab:orange"}


def band(seeds):
    """Per iteration: (samples, mean, lo, hi) of the smoothed curves over seeds."""
    per_seed = [stats.trailing_mean(ys, SMOOTHING) for _, ys in seeds.values()]
    n = min(map(len, per_seed))
    xs = next(iter(seeds.values()))[0][:n]
    cis = [stats.mean_ci([c[i] for c in per_seed]) for i in range(n)]
    return xs, [c["mean"] for c in cis], [c["lo"] if c["lo"] is not None else c["mean"] for c in cis], \
        [c["hi"] if c["hi"] is not None else c["mean"] for c in cis]


def plot_curves(results, curves, table):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, seeds in curves.items():
        xs, mean, lo, hi = band(seeds)
        ax.plot(xs, mean, color=COLORS.get(name), label=f"{name} ({len(seeds)} seeds)")
        ax.fill_between(xs, lo, hi, color=COLORS.get(name), alpha=0.1)
    ax.set_xlabel("rollout samples")
    ax.set_ylabel(f"gold score of rollouts ({SMOOTHING}-iteration mean)")
    ax.set_title("Gold score vs samples (mean and 95% CI over seeds)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(results, "gold_vs_samples.png"), dpi=110)
    st = table["samples_to_threshold"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, other in [("rto", "ppo"), ("ppo", "rto")]:
        xs, mean, lo, hi = band(curves[name])
        ax.plot(xs, mean, color=COLORS[name], label=name)
        ax.fill_between(xs, lo, hi, color=COLORS[name], alpha=0.12)
        entry = st[f"{other}_to_{name}"]
        ax.axhline(entry["target"], color=COLORS[name], ls="--", lw=0.8)
        if entry["needed"] is not None:
            ax.axvline(entry["needed"], color=COLORS[other], ls=":", lw=1)
    ax.axvline(st["reference_samples"], color="gray", lw=0.8, label="N")
    ax.set_xlabel("rollout samples")
    ax.set_ylabel("smoothed rollout gold score")
    ax.set_title("Samples to threshold: dashed = a method's score at N, dotted = the other reaching it")
    ax.title.set_fontsize(8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(results, "samples_to_threshold.png"), dpi=110)


def plot_dpo_reward(results, runs):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in ("rto", "ppo"):
        for seed, (folder, _) in sorted(runs[name].items()):
            values = [json.loads(line).get("dpo_return") for line in open(os.path.join(folder, "metrics.jsonl"))]
            if any(v is not None for v in values):
                ax.plot(range(1, len(values) + 1), values, color=COLORS[name], alpha=0.6, label=f"{name} seed {seed}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("mean DPO return of rollouts")
    ax.set_title("DPO token reward (Σ clipped β1·log π_dpo/π_ref) per iteration")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(results, "dpo_reward.png"), dpi=110)
