"""`make bench-scale`: a real model size through every stage on this CPU, fp32 vs bf16 vs LoRA.

A random Qwen2.5-0.5B-shaped model (vocab 151936, hidden 896, 24 layers, 14 query / 2 key-value
heads, intermediate 4864, tied embeddings, q/k/v biases) goes through sft-train (from random
weights), dpo-train (its reference pass included), rm-train, token-reward-annotate and a few
ppo-train iterations in RTO mode, once in fp32 and once with --bf16. Every stage starts from the
same fp32 SFT folder (made once, by the fp32 sft run) and uses the toy tokenizer and data: the
model is random, so the numbers are about speed and memory, not quality.

The third setting, bf16-lora, is bf16 with LoRA adapters (rank 16, alpha 32, every projection)
in dpo-train, rm-train and ppo-train; the SFT row is not repeated for it (sft-train makes the base
every later stage starts from). With LoRA the reference of DPO and PPO is the adapter's base with
the adapters off (no second copy), and the DPO model of ppo-train stands on the actor's base.

Per stage it prints the optimizer steps (or rows, iterations), seconds per step, tokens per
second, the memory plan's total (printed by the stage before it loads anything) and the peak
RSS the stage recorded in its manifest. It asserts nothing: a measurement, not a test.

ppo-train runs critic-free (--advantage-estimator reinforce++): a 0.5B actor with a critic, both
with fp32 AdamW state (16 bytes per parameter each), plus three frozen models, would not leave
room on a 24 GiB machine; the memory plan says so (try it with --dry-run).

Standalone: .venv/bin/python bench/bench_scale.py [--threads N] [--json bench/scale.json]
            [--settings fp32,bf16,bf16-lora] [--shapes qwen2.5-0.5b,qwen2.5-1.5b,qwen2.5-3b,llama3.2-1b,llama3.2-3b] [--device cuda]
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("RTO_BIN") or os.path.join(ROOT, "target", "x86_64-unknown-linux-gnu", "release")
TOY = os.path.join(ROOT, "data", "toy")

QWEN_0_5B = {
    "model_type": "qwen2",
    "architectures": ["Qwen2ForCausalLM"],
    "vocab_size": 151936,
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": True,
    "hidden_act": "silu",
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}

QWEN_1_5B = dict(QWEN_0_5B, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12)
QWEN_3B = dict(QWEN_0_5B, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16)
LLAMA_3_2_1B = {
    "model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 128256, "hidden_size": 2048,
    "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
    "max_position_embeddings": 131072, "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "tie_word_embeddings": True,
    "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192},
    "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
}
LLAMA_3_2_3B = dict(LLAMA_3_2_1B, hidden_size=3072, num_hidden_layers=28, num_attention_heads=24)
SHAPES = {"qwen2.5-0.5b": QWEN_0_5B, "qwen2.5-1.5b": QWEN_1_5B, "qwen2.5-3b": QWEN_3B,
          "llama3.2-1b": LLAMA_3_2_1B, "llama3.2-3b": LLAMA_3_2_3B}

# Short sequences and tiny batches: the point is the cost of one step of a real model size.
LIMITS = ["--max-prompt-len", "48", "--max-response-len", "48"]
TRAIN = ["--max-steps", "3", "--batch-size", "2", "--micro-batch-size", "1", "--eval-every", "0",
         "--checkpoint-every", "0", "--warmup-ratio", "0"]
PAIRS = 10


DEVICE = ["--device", "cpu"]
# Each setting's flags: (flags for every stage, extra flags for the stages that train over the SFT
# model, whether sft-train runs in it).
LORA = ["--lora-rank", "16", "--lora-alpha", "32"]
SETTINGS = {"fp32": ([], [], True), "bf16": (["--bf16"], [], True), "bf16-lora": (["--bf16"], LORA, False)}


def run_stage(name, args, store, threads):
    """Runs a stage binary on a fresh store; returns (output folder, wall seconds, stderr)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    start = time.monotonic()
    proc = subprocess.run([os.path.join(BIN, name), "--store", store, *DEVICE, *args], env=env,
                          capture_output=True, text=True)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1], wall, proc.stderr


def plan_total_mib(stderr):
    """The total line of the memory plan the stage printed (the last plan, for dpo's)."""
    totals = re.findall(r"^\s*([0-9.]+) MiB\s+total$", stderr, re.M)
    return float(totals[-1]) if totals else float("nan")


def summary(out):
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    return manifest["metrics"]


def metrics(out):
    path = os.path.join(out, "metrics.jsonl")
    return [json.loads(line) for line in open(path)] if os.path.exists(path) else []


def median_of(rows, key, skip_first=True):
    values = [r[key] for r in rows if key in r]
    if skip_first and len(values) > 1:
        values = values[1:]  # the first step also pays for warm-up (page faults, kernel selection)
    return statistics.median(values) if values else float("nan")


def write_inputs(work, shape):
    config = os.path.join(work, f"{shape}-shape.json")
    json.dump(SHAPES[shape], open(config, "w"), indent=1)
    rows = [json.loads(line) for line in open(os.path.join(TOY, "sft.jsonl"))][: 2 * PAIRS]
    pairs = os.path.join(work, "pairs.jsonl")
    with open(pairs, "w") as f:
        for a, b in zip(rows[0::2], rows[1::2]):
            f.write(json.dumps({"prompt": a["prompt"], "chosen": a["response"], "rejected": b["response"]}) + "\n")
    return config, pairs


def bench_setting(precision, config, pairs, sft, store, threads):
    """One pass over the stages in the setting `precision` (SETTINGS); returns (rows, sft folder)."""
    flag, adapters, runs_sft = SETTINGS[precision]
    rows = []

    def record(stage, out, wall, stderr, steps, tokens_per_s, unit):
        peak = summary(out).get("peak_rss_bytes", 0) / 2**30
        rows.append(dict(stage=stage, precision=precision, steps=steps, unit=unit, wall_s=wall,
                         s_per_step=wall / max(steps, 1), tokens_per_s=tokens_per_s,
                         plan_gib=plan_total_mib(stderr) / 1024, peak_gib=peak))
        print(f"  {stage:9} {precision}: {wall:7.1f} s, {tokens_per_s:8.1f} tok/s, plan {rows[-1]['plan_gib']:.2f} GiB, "
              f"peak {peak:.2f} GiB", flush=True)

    if runs_sft:
        out, wall, err = run_stage("sft-train", [*flag, "--init-config", config, "--tokenizer", TOY,
                                                 "--data", os.path.join(TOY, "sft.jsonl"), "--eval-fraction", "0.001",
                                                 *TRAIN, *LIMITS], store, threads)
        lines = metrics(out)
        record("sft", out, wall, err, len(lines), median_of(lines, "train/tokens_per_s"), "step")
        sft = sft or out  # every later stage starts from the first setting's SFT folder
    if sft is None:
        sys.exit(f"setting {precision} trains over an SFT folder: list fp32 or bf16 before it in --settings")
    for stage, binary in [("dpo", "dpo-train"), ("rm", "rm-train")]:
        out, wall, err = run_stage(binary, [*flag, *adapters, "--model", sft, "--data", pairs, "--eval-fraction", "0.2",
                                            *TRAIN, *LIMITS], store, threads)
        lines = metrics(out)
        record(stage, out, wall, err, len(lines), median_of(lines, "train/tokens_per_s"), "step")
        if stage == "dpo":
            dpo = out
        else:
            rm = out
    out, wall, err = run_stage("token-reward-annotate", [*flag, "--ref", sft, "--dpo", dpo, "--reward-model", rm,
                                                         "--data", pairs, *LIMITS], store, threads)
    scored = summary(out)
    record("annotate", out, wall, err, scored["samples"], scored["tokens_per_s"], "response")
    out, wall, err = run_stage("ppo-train", [*flag, *adapters, "--mode", "rto", "--advantage-estimator", "reinforce++",
                                             "--policy", sft, "--dpo", dpo, "--reward-model", rm,
                                             "--prompts", os.path.join(TOY, "rl_prompts.jsonl"),
                                             "--iterations", "2", "--rollout-batch-size", "4",
                                             "--train-batch-size", "4", "--micro-batch-size", "2",
                                             "--max-new-tokens", "32", "--save-rollouts-every", "0",
                                             "--checkpoint-every", "0", *LIMITS], store, threads)
    lines = metrics(out)
    record("ppo", out, wall, err, len(lines), median_of(lines, "generation_tokens_per_s", skip_first=False),
           "iteration")
    split = {k: median_of(lines, f"time/{k}", skip_first=False) for k in ("generation", "scoring", "training")}
    rows[-1]["time_split_s"] = split
    return rows, sft


def table(rows, settings):
    """One row per stage; per setting, seconds per unit, tokens/s, plan and peak (— where the
    setting did not run the stage)."""
    by = {(r["stage"], r["precision"]): r for r in rows}
    names = " / ".join(settings)
    out = [f"| stage | unit | s/unit {names} | tok/s {names} | plan GiB {names} | peak GiB {names} |",
           "|---|---|---|---|---|---|"]

    def cells(stage, fmt):
        return " / ".join(fmt(by[(stage, s)]) if (stage, s) in by else "—" for s in settings)

    for stage in ["sft", "dpo", "rm", "annotate", "ppo"]:
        present = [by[(stage, s)] for s in settings if (stage, s) in by]
        if not present:
            continue
        tok = lambda r: "—" if r["tokens_per_s"] != r["tokens_per_s"] else f"{r['tokens_per_s']:.0f}"
        per_unit = lambda r: f"{r['s_per_step']:.1f}"
        plan = lambda r: f"{r['plan_gib']:.1f}"
        peak = lambda r: f"{r['peak_gib']:.1f}"
        out.append(f"| {stage} | {present[0]['unit']} | {cells(stage, per_unit)} | {cells(stage, tok)} "
                   f"| {cells(stage, plan)} | {cells(stage, peak)} |")
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--settings", "--precisions", dest="settings", default="fp32,bf16,bf16-lora",
                        help=f"comma-separated, from {', '.join(SETTINGS)}; a LoRA setting needs one before it")
    parser.add_argument("--shapes", default="qwen2.5-0.5b", help=f"comma-separated, from {', '.join(SHAPES)}")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (the GPU check uses cuda)")
    args = parser.parse_args()
    DEVICE[1] = args.device
    settings = args.settings.split(",")
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        sys.exit(f"--settings: unknown {', '.join(unknown)}; choose from {', '.join(SETTINGS)}")
    all_rows = []
    for shape in args.shapes.split(","):
        work = tempfile.mkdtemp(prefix="rto-bench-scale-")
        try:
            config, pairs = write_inputs(work, shape)
            rows, sft = [], None
            for precision in settings:
                print(f"{shape} {precision}:", flush=True)
                store = os.path.join(work, f"runs-{precision}")
                found, sft = bench_setting(precision, config, pairs, sft, store, args.threads)
                rows += [dict(r, shape=shape, device=args.device) for r in found]
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print()
        print(f"{shape} shape (random weights), {args.device}, {args.threads} threads; sequences ≤ 96 tokens; "
              "s/unit is wall time per step (sft/dpo/rm: 3 steps of 2 sequences or pairs; annotate: per scored "
              "response; ppo: per iteration of 4 responses), process start, loading and saving included.")
        print(table(rows, settings))
        for r in rows:
            if "time_split_s" in r:
                split = ", ".join(f"{k} {v:.1f} s" for k, v in r["time_split_s"].items())
                print(f"ppo {r['precision']} per iteration: {split}")
        all_rows += rows
    if args.json:
        json.dump(all_rows, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
