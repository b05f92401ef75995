"""Which CPU code-path pins change results, and what pinning costs (issue 18, item 7).

Runs one short sft-train, dpo-train and ppo-train (--mode rto) on the toy task under each
environment setting below, each setting in its own store (same settings, so the same keys),
and compares the output bytes (the manifest's file hashes, minus the .jsonl logs that hold wall
time). dpo and ppo start from the default setting's models, so each stage's row shows that
stage's own sensitivity. With --timing N, also times the chain N times with and without the
reproducible pins (alternating, to spread machine load over both).

    .venv/bin/python bench/bench_pins.py [--out DIR] [--timing 3] [--json bench/pins.json]
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "x86_64-unknown-linux-gnu", "release")
DATA = os.path.join(ROOT, "data", "toy")
MODEL = os.path.join(ROOT, "pipelines", "toy", "model.json")
PINNED = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
SETTINGS = {
    "default": {},
    "aten=avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "aten=default": {"ATEN_CPU_CAPABILITY": "default"},
    "mkl_cbwr=AVX2": {"MKL_CBWR": "AVX2"},
    "mkl_cbwr=COMPATIBLE": {"MKL_CBWR": "COMPATIBLE"},
    "mkl_instr=AVX2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "onednn=AVX2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "omp=1": {"OMP_NUM_THREADS": "1"},
    "all three avx2": PINNED,
    "all three avx2 + omp=1": {**PINNED, "OMP_NUM_THREADS": "1"},
    "--reproducible": {"RTO_FLAGS": "--reproducible"},
}
LIMITS = ["--max-prompt-len", "48", "--max-response-len", "64"]
# The variables a setting may set; cleared from the inherited environment so that only the
# setting's own values are in effect.
CONTROLLED = ["ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA",
              "DNNL_MAX_CPU_ISA", "OMP_NUM_THREADS", "RTO_REPRODUCIBLE"]


def small_inputs(work):
    """The first rows of the shipped SFT data, and pairs made from them (sft-train's own rows
    as chosen, a shuffled response as rejected: enough for a DPO step to have gradients)."""
    os.makedirs(work, exist_ok=True)
    rows = [json.loads(line) for line in open(os.path.join(DATA, "sft.jsonl"))][:320]
    sft = os.path.join(work, "sft.jsonl")
    with open(sft, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    pairs = os.path.join(work, "pairs.jsonl")
    with open(pairs, "w") as f:
        for i, r in enumerate(rows):
            other = rows[(i * 7 + 3) % len(rows)]["response"]
            f.write(json.dumps({"prompt": r["prompt"], "chosen": r["response"], "rejected": other}) + "\n")
    return sft, pairs


def stage(env, store, binary, *args):
    cmd = [os.path.join(BIN, binary), "--store", store, *args]
    flags = env.get("RTO_FLAGS")
    if flags:
        cmd += flags.split()
    run_env = {k: v for k, v in os.environ.items() if k not in CONTROLLED}
    run_env.update({k: v for k, v in env.items() if k != "RTO_FLAGS"})
    out = subprocess.run(cmd, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if out.returncode:
        raise SystemExit(f"{binary} failed: {out.stderr.strip().splitlines()[-1]}")
    return out.stdout.strip().splitlines()[-1]


def output_hashes(folder):
    files = json.load(open(os.path.join(folder, "manifest.json")))["files"]
    return {name: h for name, h in files.items() if not name.endswith(".jsonl")}


def chain(env, store, inputs, base=None, stages=("sft", "dpo", "rm", "ppo")):
    """sft → dpo → rm → ppo(rto) under `env`; dpo/rm/ppo start from `base`'s models if given."""
    sft_rows, pairs = inputs
    out = {}
    out["sft"] = stage(env, store, "sft-train", "--init-config", MODEL, "--tokenizer", DATA, "--data", sft_rows,
                       "--epochs", "1", "--batch-size", "32", "--learning-rate", "0.003", "--eval-every", "100",
                       *LIMITS)
    if stages == ("sft",):
        return out
    sft = (base or out)["sft"]
    out["dpo"] = stage(env, store, "dpo-train", "--model", sft, "--data", pairs, "--epochs", "1", "--batch-size", "32",
                       "--learning-rate", "0.0002", "--eval-every", "100", *LIMITS)
    out["rm"] = stage(env, store, "rm-train", "--model", sft, "--data", pairs, "--epochs", "1", "--batch-size", "32",
                      "--learning-rate", "0.0005", "--eval-every", "100", *LIMITS)
    dpo, rm = (base or out)["dpo"], (base or out)["rm"]
    out["ppo"] = stage(env, store, "ppo-train", "--mode", "rto", "--policy", sft, "--dpo", dpo, "--reward-model", rm,
                       "--prompts", os.path.join(DATA, "rl_prompts.jsonl"), "--iterations", "2",
                       "--rollout-batch-size", "32", "--train-batch-size", "16", "--micro-batch-size", "16",
                       "--max-new-tokens", "32", "--judge", "toy", *LIMITS)
    return out


def compare(work, inputs, names, stages):
    results = {}
    base = None
    for name in ["default"] + [n for n in names if n != "default"]:
        env = SETTINGS[name]
        store = os.path.join(work, "store-" + name.replace(" ", "_").replace(",", "").replace("=", "-"))
        shutil.rmtree(store, ignore_errors=True)
        t = time.time()
        folders = chain(env, store, inputs, base, stages)
        hashes = {s: output_hashes(f) for s, f in folders.items()}
        if base is None:
            base, base_hashes = folders, hashes
        same = {s: hashes[s] == base_hashes[s] for s in hashes}
        results[name] = dict(env=env, same_as_default=same, wall_s=time.time() - t)
        print(f"{name:<24} " + " ".join(f"{s}={'same' if v else 'DIFF'}" for s, v in same.items())
              + f"  ({time.time() - t:.0f} s)", flush=True)
    return results


def timing(work, inputs, repeats):
    times = {"default": [], "pinned": []}
    for i in range(repeats):
        for name, env in [("default", {}), ("pinned", PINNED)]:
            store = os.path.join(work, f"time-{name}")
            shutil.rmtree(store, ignore_errors=True)
            load = os.getloadavg()[0]
            t = time.time()
            chain(env, store, inputs)
            times[name].append(time.time() - t)
            print(f"timing {name} #{i}: {times[name][-1]:.1f} s (load before: {load:.2f})", flush=True)
    return times


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="/tmp/rto-bench-pins")
    p.add_argument("--timing", type=int, default=0, help="repeats of the with/without timing")
    p.add_argument("--skip-compare", action="store_true")
    p.add_argument("--settings", help="comma-separated names of SETTINGS to compare (default: all)")
    p.add_argument("--stages", default="sft,dpo,rm,ppo", help="sft alone, or the whole chain (default)")
    p.add_argument("--json")
    a = p.parse_args()
    inputs = small_inputs(a.out)
    report = {"cpu": cpu_model(), "load_at_start": os.getloadavg()}
    if not a.skip_compare:
        names = a.settings.split(",") if a.settings else list(SETTINGS)
        report["settings"] = compare(a.out, inputs, names, tuple(a.stages.split(",")))
    if a.timing:
        report["timing"] = timing(a.out, inputs, a.timing)
    if a.json:
        json.dump(report, open(a.json, "w"), indent=1)


def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())
