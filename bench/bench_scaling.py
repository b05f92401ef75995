"""Data-parallel scaling: one DPO epoch on a small random Llama, 1 process vs 2 (Gloo, one
intra-op thread each), and the peak RSS of each rank at world 2 with --zero-stage 0 and 1.

Steps: sft-train makes the starting model (1 step from a random init), make-pairs a pairs file
from the toy prompts, then dpo-train runs one epoch per setting on a fresh store. Each rank is
its own process, so os.wait4's ru_maxrss is that rank's peak. Printed, never asserted.

Standalone (about 2 minutes on 2 cores): .venv/bin/python bench/bench_scaling.py
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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "config.json")
        json.dump(CONFIG, open(config, "w"))
        base = fresh_store()
        try:
            sft = run([os.path.join(BIN, "sft-train"), "--store", base, "--init-config", config, "--tokenizer", DATA,
                       "--data", os.path.join(DATA, "sft.jsonl"), "--max-steps", "1", *LIMITS])
            pairs = run([os.path.join(BIN, "make-pairs"), "--store", base, "--model", sft, "--prompts",
                         os.path.join(DATA, "sft.jsonl"), "--num-prompts", "64", "--max-new-tokens", "24", *LIMITS])
            dpo = [os.path.join(BIN, "dpo-train"), "--model", sft, "--data", os.path.join(pairs, "pairs.jsonl"),
                   "--epochs", "1", "--batch-size", "8", "--micro-batch-size", "2", "--eval-every", "0",
                   "--checkpoint-every", "0", *LIMITS]
            results = {}
            for label, world, extra in (("1 process", 1, []), ("2 ranks", 2, []),
                                        ("2 ranks --zero-stage 1", 2, ["--zero-stage", "1"])):
                store = fresh_store()
                try:
                    secs, peaks = ranks(dpo + ["--store", store] + extra, world)
                finally:
                    shutil.rmtree(store, ignore_errors=True)
                results[label] = dict(secs=secs, peak_rss_mib=peaks)
                print(f"{label:24s} {secs:7.2f} s   peak RSS per rank: {', '.join(f'{p:.0f} MiB' for p in peaks)}")
        finally:
            shutil.rmtree(base, ignore_errors=True)
    ratio = results["1 process"]["secs"] / results["2 ranks"]["secs"]
    print(f"DPO epoch throughput, 2 ranks / 1 process: {ratio:.2f}x")
    results["throughput_ratio"] = ratio
    if args.json:
        json.dump(results, open(args.json, "w"), indent=2)


if __name__ == "__main__":
    main()
