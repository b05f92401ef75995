"""Data-parallel scaling on a small random Llama, 1 process vs 2 ranks (Gloo, one intra-op
thread each): one DPO epoch (and each rank's peak RSS with --zero-stage 0 and 1), and PPO
iterations. Each figure is a whole run of the binary (start, loading, the DPO reference pass),
so it is what a user waits for, not the step time alone.

Steps: sft-train makes the starting model (1 step from a random init), make-pairs a pairs file
from the toy prompts, rm-train a reward model for PPO (a few steps), then each setting runs on a
fresh store. Each rank is its own process, so os.wait4's ru_maxrss is that rank's peak. A stage
that refuses a launch of 2 ranks (ppo-train before it ran data-parallel) is skipped with the
reason. Printed, never asserted; `make bench` (bench/bench_model.py) adds the rows to its table.

Standalone (about 3 minutes on 2 cores): .venv/bin/python bench/bench_scaling.py [--stages dpo,ppo]
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time

from bench_stages import BIN, DATA, fresh_store

CONFIG = dict(model_type="llama", vocab_size=256, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5,
              tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)
LIMITS = ["--max-prompt-len", "48", "--max-response-len", "48"]


def run(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed:\n{out.stderr[-3000:]}")
    return out.stdout.strip().splitlines()[-1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ranks(cmd, world):
    """Runs `world` ranks of cmd; returns (seconds, [peak RSS MiB per rank])."""
    port = str(free_port())
    start = time.perf_counter()
    procs = []
    for rank in range(world):
        env = dict(os.environ, OMP_NUM_THREADS="1")
        if world > 1:
            env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                       MASTER_PORT=port)
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    peaks = []
    for p in procs:
        _, status, usage = os.wait4(p.pid, 0)
        if status != 0:
            raise RuntimeError(f"rank failed:\n{p.stderr.read().decode()[-3000:]}")
        peaks.append(usage.ru_maxrss / 1024.0)
    return time.perf_counter() - start, peaks


def prepare(tmp, stages):
    """The starting model, the pairs, and for PPO a reward model, in a store of their own."""
    config = os.path.join(tmp, "config.json")
    json.dump(CONFIG, open(config, "w"))
    base = fresh_store()
    sft = run([os.path.join(BIN, "sft-train"), "--store", base, "--init-config", config, "--tokenizer", DATA,
               "--data", os.path.join(DATA, "sft.jsonl"), "--max-steps", "1", *LIMITS])
    pairs = run([os.path.join(BIN, "make-pairs"), "--store", base, "--model", sft, "--prompts",
                 os.path.join(DATA, "sft.jsonl"), "--num-prompts", "64", "--max-new-tokens", "24", *LIMITS])
    inputs = dict(base=base, sft=sft, pairs=os.path.join(pairs, "pairs.jsonl"))
    if "ppo" in stages:
        inputs["rm"] = run([os.path.join(BIN, "rm-train"), "--store", base, "--model", sft, "--data", inputs["pairs"],
                            "--max-steps", "4", "--batch-size", "8", "--eval-every", "0", "--checkpoint-every", "0",
                            *LIMITS])
    return inputs


def timed(cmd, world):
    """ranks() on a fresh store (removed afterwards)."""
    time.sleep(1.0)  # let a parent's OpenMP workers (bench_model.py) stop spinning
    store = fresh_store()
    try:
        return ranks(cmd + ["--store", store], world)
    finally:
        shutil.rmtree(store, ignore_errors=True)


def dpo_row(inp):
    dpo = [os.path.join(BIN, "dpo-train"), "--model", inp["sft"], "--data", inp["pairs"],
           "--epochs", "1", "--batch-size", "8", "--micro-batch-size", "2", "--eval-every", "0",
           "--checkpoint-every", "0", *LIMITS]
    results = {}
    for label, world, extra in (("1 process", 1, []), ("2 ranks", 2, []),
                                ("2 ranks --zero-stage 1", 2, ["--zero-stage", "1"])):
        secs, peaks = timed(dpo + extra, world)
        results[label] = dict(secs=secs, peak_rss_mib=peaks)
        print(f"DPO epoch, {label:24s} {secs:7.2f} s   peak RSS per rank: {', '.join(f'{p:.0f} MiB' for p in peaks)}")
    peaks = ", ".join(f"{label}: {max(r['peak_rss_mib']):.0f} MiB" for label, r in results.items())
    return dict(bench="DPO epoch, 2 ranks vs 1 process", unit="epochs/min", rto=60 / results["2 ranks"]["secs"],
                peer=60 / results["1 process"]["secs"], peer_name="1 process",
                note=f"1 thread each, whole runs; peak RSS per rank {peaks}", results=results)


PPO_ITERATIONS = 3


def ppo_row(inp):
    ppo = [os.path.join(BIN, "ppo-train"), "--mode", "ppo", "--policy", inp["sft"], "--reward-model", inp["rm"],
           "--prompts", os.path.join(DATA, "rl_prompts.jsonl"), "--iterations", str(PPO_ITERATIONS),
           "--rollout-batch-size", "16", "--train-batch-size", "16", "--micro-batch-size", "4",
           "--generation-batch-size", "8", "--max-new-tokens", "24", "--save-rollouts-every", "0",
           "--checkpoint-every", "0", *LIMITS]
    try:
        two, _ = timed(ppo, 2)
    except RuntimeError as error:
        if "does not run data-parallel" not in str(error):
            raise
        print("PPO iteration, 2 ranks vs 1: skipped: ppo-train refuses a launch of 2 ranks (not data-parallel in "
              "this build)")
        return None
    one, _ = timed(ppo, 1)
    print(f"PPO, {PPO_ITERATIONS} iterations: 1 process {one:.2f} s, 2 ranks {two:.2f} s")
    return dict(bench="PPO iteration, 2 ranks vs 1 process", unit="iterations/min", rto=60 * PPO_ITERATIONS / two,
                peer=60 * PPO_ITERATIONS / one, peer_name="1 process",
                note=f"1 thread each, whole runs of {PPO_ITERATIONS} iterations", results=dict(one=one, two=two))


def rows(stages=("dpo", "ppo")):
    """The scaling rows of `stages` (dpo, ppo) for bench_model's table; a skipped stage has none."""
    with tempfile.TemporaryDirectory() as tmp:
        inp = prepare(tmp, stages)
        try:
            made = [row(inp) for name, row in (("dpo", dpo_row), ("ppo", ppo_row)) if name in stages]
        finally:
            shutil.rmtree(inp["base"], ignore_errors=True)
    for row in made:
        if row:
            print(f"{row['bench']}: {row['rto'] / row['peer']:.2f}x throughput")
    return [row for row in made if row]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--stages", default="dpo,ppo", help="comma-separated: dpo, ppo")
    parser.add_argument("--json")
    args = parser.parse_args()
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in ("dpo", "ppo")]
    if unknown:
        parser.error(f"--stages: unknown {', '.join(unknown)} (known: dpo, ppo)")
    made = rows(stages)
    if args.json:
        json.dump(made, open(args.json, "w"), indent=2)


if __name__ == "__main__":
    main()
