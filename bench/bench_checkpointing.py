"""Gradient checkpointing: peak memory and time of sft-train with and without it.

The same sft-train run (random 8-layer Llama, hidden 512, GQA 8/4, toy tokenizer and data, a
few steps) twice on fresh stores, once with --gradient-checkpointing. Each run is its own
process, so its `peak_rss_bytes` (VmHWM, recorded in the manifest) is that run's alone; the
plan's total is read from the plan the stage prints. Printed, never asserted: with the
layers' activations recomputed in the backward, the peak drops by about the activations of
all layers but one, for about one more forward of compute.

Standalone: .venv/bin/python bench/bench_checkpointing.py [--batch-size 16] [--steps 3]
"""
import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time

from bench_stages import BIN, DATA, THREADS, fresh_store

CONFIG = dict(model_type="llama", vocab_size=256, hidden_size=512, intermediate_size=1365, num_hidden_layers=8,
              num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=512, rms_norm_eps=1e-5,
              tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)
MIB = 1024.0 * 1024.0


def planned_total(stderr):
    """The plan's total in MiB, from the `total` line the stage prints."""
    line = next(l for l in stderr.splitlines() if l.rstrip().endswith("MiB  total"))
    return float(line.split()[0])


def sft_run(config, batch_size, steps, checkpointing):
    store = fresh_store()
    try:
        cmd = [os.path.join(BIN, "sft-train"), "--store", store, "--init-config", config, "--tokenizer", DATA,
               "--data", os.path.join(DATA, "sft.jsonl"), "--max-steps", str(steps), "--batch-size", str(batch_size),
               "--eval-every", "0", "--checkpoint-every", "0", "--max-prompt-len", "48", "--max-response-len", "48"]
        if checkpointing:
            cmd.append("--gradient-checkpointing")
        start = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS=str(THREADS)))
        secs = time.perf_counter() - start
        if out.returncode != 0:
            raise RuntimeError(f"sft-train failed:\n{out.stderr[-3000:]}")
        folder = out.stdout.strip().splitlines()[-1]
        manifest = json.load(open(os.path.join(folder, "manifest.json")))
        return dict(peak=manifest["metrics"]["peak_rss_bytes"] / MIB, plan=planned_total(out.stderr), secs=secs)
    finally:
        shutil.rmtree(store, ignore_errors=True)


def rows(batch_size=16, steps=3):
    """[(label, result)] of the two runs; a result has peak and plan (MiB) and secs."""
    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "config.json")
        json.dump(CONFIG, open(config, "w"))
        return [(label, sft_run(config, batch_size, steps, on)) for label, on in
                (("without", False), ("--gradient-checkpointing", True))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    table = rows(args.batch_size, args.steps)
    c = CONFIG
    print(f"sft-train, {c['num_hidden_layers']} layers x hidden {c['hidden_size']}, batch {args.batch_size}, "
          f"{args.steps} steps, {THREADS} threads")
    print(f"{'':<26} {'peak RSS':>10} {'plan':>10} {'wall':>8}")
    for label, r in table:
        print(f"{label:<26} {r['peak']:>6.0f} MiB {r['plan']:>6.0f} MiB {r['secs']:>7.1f}s")
    (_, off), (_, on) = table
    print(f"peak {on['peak'] - off['peak']:+.0f} MiB ({on['peak'] / off['peak'] - 1:+.0%}), "
          f"wall {on['secs'] / off['secs'] - 1:+.0%} (process start, load and save included)")


if __name__ == "__main__":
    main()
