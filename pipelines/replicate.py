"""make replicate: the paper's comparison at machine scale, on the toy task with a gold judge.

Shared stages (cached, computed once): SFT, preference pairs, DPO, SimPO, reward model.
Per seed (3 seeds), with the same rollout budget: PPO, RTO, dpo-only, DDPO, and the critic-free
group estimator GRPO on the sentence reward (`--mode ppo`) and on RTO's token reward
(RTO-GRPO), at equal samples: GROUP_K responses to each of rollout_batch_size / GROUP_K prompts;
plus PPO with three times the budget, to ask how many samples PPO needs to reach RTO's score.
Every policy is evaluated against the SFT model on the held-out prompts (win rate under the gold
judge).
Writes results/replication.md, results/replication.json, PNG plots, the token-credit analysis
(pipelines/token_credit.py) and replication.blake3, the hashes of every artifact, in the store
(in results/ with RTO_PUBLISH=1: pipelines/artifacts.py; `make check-results` compares a store
against the published list).

Runs in reproducible mode (RTO_REPRODUCIBLE=1: CPU code paths pinned, see ARCHITECTURE.md)
unless RTO_REPRODUCIBLE is set otherwise in the environment.
"""
import json
import os
import statistics
import subprocess
import sys
import time

import artifacts
import token_credit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "x86_64-unknown-linux-gnu", "release")
CFG = os.path.join(ROOT, "pipelines", "toy")
DATA = os.path.join(ROOT, "data", "toy")
STORE = os.environ.get("STORE", os.path.join(ROOT, "runs"))
RESULTS = os.path.join(ROOT, "results")
SEEDS = [1, 2, 3]
METHODS = ["ppo", "rto", "dpo-only", "ddpo"]
# Group estimators: name -> reward mode. GRPO sees the sentence reward only (the PPO baseline's
# reward); RTO-GRPO the dense token reward, with PRIME-style separate baselines.
GROUP_METHODS = {"grpo": "ppo", "rto-grpo": "rto"}
GROUP_K = 4  # responses per prompt; the prompt count is divided by it, so samples stay equal
LONG_FACTOR = 3  # the PPO run with LONG_FACTOR x the rollout budget
# The stage binaries inherit it: every stage pins libtorch's CPU code paths, so the published
# hashes can be reproduced on another x86-64 machine.
os.environ.setdefault("RTO_REPRODUCIBLE", "1")
EVAL_FOLDERS = []  # every rto-eval output, for the artifact list


def stage(binary, *args):
    """Runs a stage binary; returns its output folder (the last line it prints)."""
    cmd = [os.path.join(BIN, binary), "--store", STORE, *map(str, args)]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    return out.stdout.strip().splitlines()[-1]


def metrics(folder):
    return [json.loads(line) for line in open(os.path.join(folder, "metrics.jsonl"))]


def evaluate(model, sft, name):
    folder = stage("rto-eval", "--config", f"{CFG}/eval.yaml", "--model", model, "--baseline", sft,
                   "--prompts", f"{DATA}/eval_prompts.jsonl", "--name", name)
    EVAL_FOLDERS.append(folder)
    return json.load(open(os.path.join(folder, "results.json")))


def ppo_setting(key):
    for line in open(f"{CFG}/ppo.yaml"):
        if line.startswith(f"{key}:"):
            return int(line.split(":")[1])
    raise SystemExit(f"pipelines/toy/ppo.yaml has no {key}")


def variants(iterations):
    """(name, reward mode, iterations, extra ppo-train flags) of every per-seed run."""
    prompts = ppo_setting("rollout_batch_size")
    if prompts % GROUP_K:
        raise SystemExit(f"rollout_batch_size {prompts} is not a multiple of GROUP_K {GROUP_K}")
    group = ["--advantage-estimator", "grpo", "--n-samples-per-prompt", GROUP_K,
             "--rollout-batch-size", prompts // GROUP_K]
    out = [(m, m, iterations, []) for m in METHODS]
    out += [(name, mode, iterations, group) for name, mode in GROUP_METHODS.items()]
    return out + [("ppo-long", "ppo", iterations * LONG_FACTOR, [])]


def mean_std(values):
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main():
    start = time.time()
    os.makedirs(RESULTS, exist_ok=True)
    sft = stage("sft-train", "--config", f"{CFG}/sft.yaml", "--init-config", f"{CFG}/model.json",
                "--tokenizer", DATA, "--data", f"{DATA}/sft.jsonl")
    pairs = stage("make-pairs", "--config", f"{CFG}/pairs.yaml", "--model", sft, "--prompts", f"{DATA}/sft.jsonl")
    pairs_file = os.path.join(pairs, "pairs.jsonl")
    dpo = stage("dpo-train", "--config", f"{CFG}/dpo.yaml", "--model", sft, "--data", pairs_file)
    simpo = stage("dpo-train", "--config", f"{CFG}/dpo.yaml", "--model", sft, "--data", pairs_file,
                  "--loss", "simpo", "--beta", "2.5", "--simpo-gamma", "0.5")
    rm = stage("rm-train", "--config", f"{CFG}/rm.yaml", "--model", sft, "--data", pairs_file)
    iterations = ppo_setting("iterations")
    runs = {}  # method -> seed -> (ppo folder, eval results)
    for seed in SEEDS:
        for name, mode, iters, extra in variants(iterations):
            print(f"== {name} seed {seed}", file=sys.stderr)
            folder = stage("ppo-train", "--config", f"{CFG}/ppo.yaml", "--seed", seed, "--mode", mode,
                           "--iterations", iters, "--policy", sft, "--dpo", dpo, "--reward-model", rm,
                           "--prompts", f"{DATA}/rl_prompts.jsonl", *extra)
            runs.setdefault(name, {})[seed] = (folder, evaluate(folder, sft, f"{name}-s{seed}"))
    offline = {"dpo": evaluate(dpo, sft, "dpo"), "simpo": evaluate(simpo, sft, "simpo")}
    rollout = metrics(runs["ppo"][SEEDS[0]][0])[0]
    samples_per_iter = round(rollout["samples"]) if "samples" in rollout else None
    table = summarize(runs, offline, samples_per_iter)
    policies = {"dpo": dpo, "ppo": runs["ppo"][SEEDS[0]][0], "rto": runs["rto"][SEEDS[0]][0]}
    credit, kept = token_credit.analyze(STORE, sft, rm, {"dpo": dpo}, policies)
    json.dump(credit, open(os.path.join(RESULTS, "token_credit.json"), "w"), indent=1)
    token_credit.plot(credit, kept, os.path.join(RESULTS, "token_credit.png"))
    table["reproducible"] = os.environ["RTO_REPRODUCIBLE"] == "1"
    table["wall_time_s"] = time.time() - start
    json.dump(table, open(os.path.join(RESULTS, "replication.json"), "w"), indent=1)
    write_markdown(table, token_credit.markdown(credit))
    plot(runs, samples_per_iter)
    published = [sft, pairs, dpo, simpo, rm, *EVAL_FOLDERS, *(f for seeds in runs.values() for f, _ in seeds.values())]
    annotated = [os.path.join(STORE, "annotate", sets[s]["annotate_key"]) for sets in credit.values() for s in sets]
    artifacts.write(STORE, "replication", published + annotated)
    print(open(os.path.join(RESULTS, "replication.md")).read())


def summarize(runs, offline, samples_per_iter):
    rows = []
    for name, seeds in runs.items():
        evals = [r for _, r in seeds.values()]
        win, win_sd = mean_std([e["win_rate"] for e in evals])
        gold, gold_sd = mean_std([e["mean_gold_score"] for e in evals])
        length = statistics.mean(e["mean_length"] for e in evals)
        # responses generated, from the run itself (a group run samples K per prompt)
        samples = metrics(next(iter(seeds.values()))[0])[-1].get("samples")
        rows.append(dict(method=name, win=win, win_sd=win_sd, gold=gold, gold_sd=gold_sd, length=length,
                         samples=samples, seeds=len(evals)))
    for name, e in offline.items():
        rows.append(dict(method=name, win=e["win_rate"], win_sd=0.0, gold=e["mean_gold_score"], gold_sd=0.0,
                         length=e["mean_length"], samples=0, seeds=1))
    baseline_gold = next(iter(offline.values()))["baseline_mean_gold_score"]
    return dict(rows=rows, sft_gold=baseline_gold, catch_up=catch_up(runs, samples_per_iter))


def smoothed_curve(folder, key="judge_score", window=5):
    values = [m.get(key) for m in metrics(folder)]
    values = [v for v in values if v is not None]
    return [statistics.mean(values[max(0, i - window + 1):i + 1]) for i in range(len(values))]


def catch_up(runs, samples_per_iter):
    """Per seed: rollout samples PPO-long needs for its smoothed gold score to reach RTO's final one."""
    out = []
    for seed in SEEDS:
        target = smoothed_curve(runs["rto"][seed][0])[-1]
        long = smoothed_curve(runs["ppo-long"][seed][0])
        hit = next((i + 1 for i, v in enumerate(long) if v >= target), None)
        rto_iters = len(smoothed_curve(runs["rto"][seed][0]))
        out.append(dict(seed=seed, rto_final=target, ppo_iterations_needed=hit, rto_iterations=rto_iters,
                        samples_needed=hit * samples_per_iter if hit and samples_per_iter else None))
    return out


def write_markdown(table, credit_lines):
    lines = ["# Replication on the toy task (machine scale)", "",
             f"SFT mean gold score on the held-out prompts: {table['sft_gold']:.3f}. "
             f"Win rate = fraction of held-out prompts where the method's response has a higher gold "
             f"score than the SFT model's (ties count half); mean ± std over seeds.", "",
             "| method | win rate vs SFT | mean gold score | mean length | rollout samples | seeds |",
             "|---|---|---|---|---|---|"]
    for r in table["rows"]:
        lines.append(f"| {r['method']} | {r['win']:.3f} ± {r['win_sd']:.3f} | {r['gold']:.3f} ± {r['gold_sd']:.3f} "
                     f"| {r['length']:.1f} | {r['samples']} | {r['seeds']} |")
    lines += ["", "PPO samples to reach RTO's final (smoothed) rollout gold score:", ""]
    for c in table["catch_up"]:
        need = c["samples_needed"] if c["samples_needed"] else f"not within {LONG_FACTOR}x the budget"
        lines.append(f"- seed {c['seed']}: RTO reached {c['rto_final']:.3f} in {c['rto_iterations']} iterations; "
                     f"PPO needed {need}")
    mode = "on (RTO_REPRODUCIBLE=1)" if table["reproducible"] else "off"
    lines += ["", f"Total wall time: {table['wall_time_s'] / 60:.1f} min. Reproducible mode: {mode}; "
              "the blake3 of every artifact is in replication.blake3 (`make check-results` compares yours).", "",
              "![gold score vs samples](gold_vs_samples.png)", "", "![DPO reward](dpo_reward.png)", ""]
    lines += [*credit_lines, "", "![token credit](token_credit.png)", ""]
    open(os.path.join(RESULTS, "replication.md"), "w").write("\n".join(lines))


def plot(runs, samples_per_iter):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, color in [("rto", "tab:red"), ("ppo-long", "tab:blue"), ("dpo-only", "tab:green"), ("ddpo", "tab:purple"),
                        ("grpo", "tab:cyan"), ("rto-grpo", "tab:orange")]:
        curves = [smoothed_curve(runs[name][s][0]) for s in SEEDS]
        n = min(map(len, curves))
        xs = [(i + 1) * (samples_per_iter or 1) for i in range(n)]
        mean = [statistics.mean(c[i] for c in curves) for i in range(n)]
        sd = [statistics.stdev(c[i] for c in curves) if len(curves) > 1 else 0 for i in range(n)]
        label = "ppo" if name == "ppo-long" else name
        ax.plot(xs, mean, color=color, label=label)
        ax.fill_between(xs, [m - s for m, s in zip(mean, sd)], [m + s for m, s in zip(mean, sd)], color=color, alpha=0.15)
    ax.set_xlabel("rollout samples")
    ax.set_ylabel("gold score of rollouts (5-iteration mean)")
    ax.set_title("Gold score vs samples (mean ± std over 3 seeds)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, "gold_vs_samples.png"), dpi=110)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, color in [("rto", "tab:red"), ("ppo", "tab:blue")]:
        for s in SEEDS:
            values = [m.get("dpo_return") for m in metrics(runs[name][s][0])]
            if any(v is not None for v in values):
                ax.plot(range(1, len(values) + 1), values, color=color, alpha=0.6, label=f"{name} seed {s}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("mean DPO return of rollouts")
    ax.set_title("DPO token reward (Σ clipped β1·log π_dpo/π_ref) per iteration")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, "dpo_reward.png"), dpi=110)


if __name__ == "__main__":
    main()
