"""Stage rows of `make bench`: our stage binaries against the Python stack on the same work.

  dpo       one epoch of dpo-train over the bench pairs vs TRL's DPOTrainer (trl in .venv)
  ppo       N iterations of `ppo-train --mode ppo` vs TRL 0.29.1's experimental PPOTrainer
            (installed apart, in bench/.trl-ppo, since TRL 1.x has no PPO trainer)
  rto       `ppo-train --mode rto` vs `--mode ppo` (ours only: the extra DPO forward)
  annotate  token-reward-annotate vs a PyTorch/transformers script doing the same passes

Inputs (made once, cached under runs/bench/inputs by the store): an SFT model trained for a
few steps from pipelines/toy/model.json with the toy tokenizer, pairs of its samples on the
first SFT prompts (make-pairs), a DPO model and a reward model trained on those pairs.

Timing. Ours: wall time of the binary on a fresh store (process start, model load and the
final save included; for dpo the reference log-prob stage `dpo-ref-logps` runs too, so both
sides do the reference forward). Theirs: a child Python process per run (each peer has its
own trl on sys.path); it imports, loads the models and builds the trainer untimed, then
times trainer.train() (dpo, ppo) or the whole annotate work (tokenization, forwards, token
rewards, Parquet write). Both sides use every core (--threads N sets OMP_NUM_THREADS for ours
and torch.set_num_threads for theirs). Sides alternate, `reps` rounds, medians. Each row also
carries the CPU-time ratio (child rusage for ours, process_time around the timed work for
theirs), which moves less than wall time when other jobs share the cores; the PPO row also the
iteration-loop ratio (ours Σ time/total against their train(), startup excluded on both sides).

Precision: the PPO, RTO and annotate rows run both sides in --precision (default: bf16 on a
CPU with bf16 instructions, fp32 elsewhere; see PRECISION). Rows marked "(ours)" compare two
runs of ours: with the speed flags vs without, and the bench's precision vs the other one, so
each change's share of the ratio is in the same run.

Standalone: .venv/bin/python bench/bench_stages.py --reps 3
"""
import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("RTO_BIN") or os.path.join(ROOT, "target", "x86_64-unknown-linux-gnu", "release")
STORE = os.path.join(ROOT, "runs", "bench")
TRL_PPO = os.path.join(ROOT, "bench", ".trl-ppo")  # pip install --no-deps --target bench/.trl-ppo trl==0.29.1
TOY = os.path.join(ROOT, "pipelines", "toy")
DATA = os.path.join(ROOT, "data", "toy")

# The settings both sides share (toy pipeline values unless said otherwise).
NUM_PAIRS = 768          # make-pairs on the first 768 SFT prompts
MAX_PROMPT, MAX_RESPONSE = 48, 64
DPO = dict(batch_size=32, beta=0.1, lr=2e-4, warmup_ratio=0.03, min_lr_ratio=0.1, adam_beta2=0.95, max_grad_norm=1.0)
PPO = dict(iterations=5, rollout=64, train=64, micro=32, epochs=1, max_new_tokens=64, actor_lr=1e-4,
           kl_coef=0.01, eps_clip=0.2, value_clip=0.2, gamma=1.0, lam=0.95)
THREADS = os.cpu_count()  # intra-op threads of both sides; --threads changes it
# The precision of both sides' PPO and annotate rows (--precision). bf16: ours runs --bf16 (bf16
# weights and matmuls, fp32 master weights and Adam moments, fp32 log-probs); theirs loads the
# frozen models (reference, reward model, DPO model) in bf16 and runs the trained ones (policy,
# value model) under CPU autocast to bf16 over fp32 weights, log-softmax in fp32. The default is
# the precision that is the faster for ours on this CPU, and the peers get it too: bf16 where the
# CPU has bf16 instructions (AVX-512 BF16, AMX; measured 1.24x PPO and 1.46x annotate over fp32
# on a 2-core AMD EPYC with AVX-512 BF16, 2026-12-03), fp32 elsewhere (on a 2-core AMD EPYC
# with AVX2 only, libtorch's bf16 matmuls fall back to unblocked loops: 9-10x slower than fp32,
# the same day; rto_model::precision::Bf16Matmuls). The rows "PPO A vs B" and "annotate A vs B"
# measure the other precision in the same run. The DPO row is fp32 on both sides.
def cpuinfo_value(*keys):
    """The value of the first /proc/cpuinfo line starting with one of `keys` ("" if none)."""
    try:
        line = next(l for l in open("/proc/cpuinfo") if l.startswith(keys))
    except (OSError, StopIteration):
        return ""
    return line.split(":", 1)[-1].strip()


def native_bf16():
    """Whether the CPU has bf16 instructions (rto_model::precision::Bf16Matmuls::Native)."""
    return bool({"avx512_bf16", "amx_bf16", "bf16"} & set(cpuinfo_value("flags", "Features").split()))


def cpu_model():
    return cpuinfo_value("model name") or "an unknown CPU"


PRECISION = "bf16" if native_bf16() else "fp32"
OURS_ROUNDS = 7  # rounds of the ours-only PPO comparisons (RTO mode, speed flags)
ANNOTATE = dict(batch_size=64, beta1=0.05, clip=0.05)  # sequences per forward (a pair is two)


def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_bin(name, *args, store=None):
    """Runs one of our binaries; returns (last stdout line, wall seconds, CPU seconds)."""
    cmd = [os.path.join(BIN, name), "--store", store or os.path.join(STORE, "inputs"), *map(str, args)]
    cpu, start = child_cpu(), time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS=str(THREADS)))
    secs = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{out.stderr[-3000:]}")
    return out.stdout.strip().splitlines()[-1], secs, child_cpu() - cpu


def prepare():
    """The bench inputs, computed on the first run and reused after (the store's cache)."""
    sft, *_ = run_bin("sft-train", "--config", f"{TOY}/sft.yaml", "--init-config", f"{TOY}/model.json",
                     "--tokenizer", DATA, "--data", f"{DATA}/sft.jsonl", "--epochs", 1, "--max-steps", 100,
                     "--checkpoint-every", 0, "--eval-every", 0)
    pairs, *_ = run_bin("make-pairs", "--config", f"{TOY}/pairs.yaml", "--model", sft, "--prompts",
                       f"{DATA}/sft.jsonl", "--num-prompts", NUM_PAIRS)
    pairs = os.path.join(pairs, "pairs.jsonl")
    dpo, *_ = run_bin("dpo-train", "--config", f"{TOY}/dpo.yaml", "--model", sft, "--data", pairs,
                     "--checkpoint-every", 0, "--eval-every", 0)
    rm, *_ = run_bin("rm-train", "--config", f"{TOY}/rm.yaml", "--model", sft, "--data", pairs,
                    "--checkpoint-every", 0, "--eval-every", 0)
    return dict(sft=sft, pairs=pairs, dpo=dpo, rm=rm)


def fresh_store():
    os.makedirs(os.path.join(STORE, "tmp"), exist_ok=True)
    return tempfile.mkdtemp(dir=os.path.join(STORE, "tmp"))


def ours(name, args):
    """Wall seconds of one run of binary `name` on a fresh store (removed afterwards)."""
    time.sleep(1.0)  # let the parent's OpenMP workers stop spinning
    store = fresh_store()
    try:
        out, secs, cpu = run_bin(name, *args, store=store)
        result = dict(secs=secs, cpu=cpu)
        metrics = os.path.join(out, "metrics.jsonl")
        if name == "ppo-train" and os.path.exists(metrics):  # per-iteration time split, summed
            records = [json.loads(line) for line in open(metrics)]
            keys = {k for r in records for k in r if k.startswith("time/")}
            for key in keys:
                result[key] = sum(r.get(key, 0.0) for r in records)
            for key in ("scoring_padding_share", "scoring_padding_share_unpacked"):
                result[key] = statistics.mean(r[key] for r in records)
        return result
    finally:
        shutil.rmtree(store, ignore_errors=True)


def theirs(peer, inputs):
    """Seconds of one peer run in a child process (see the module docstring)."""
    time.sleep(1.0)
    env = dict(os.environ, TRL_EXPERIMENTAL_SILENCE="1", TOKENIZERS_PARALLELISM="false")
    if peer == "ppo":
        env["PYTHONPATH"] = TRL_PPO + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--peer", peer, "--inputs", json.dumps(inputs),
                          "--threads", str(THREADS), "--iterations", str(PPO["iterations"]),
                          "--precision", PRECISION],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"peer {peer} failed:\n{out.stderr[-3000:]}")
    line = [l for l in out.stdout.splitlines() if l.startswith("{")][-1]
    return json.loads(line)


# ---------------------------------------------------------------- our command lines

def dpo_args(inp):
    d = DPO
    return ["--model", inp["sft"], "--data", inp["pairs"], "--loss", "sigmoid", "--beta", d["beta"],
            "--learning-rate", d["lr"], "--epochs", 1, "--batch-size", d["batch_size"], "--ref-batch-size",
            d["batch_size"], "--eval-fraction", 0, "--eval-every", 0, "--checkpoint-every", 0,
            "--warmup-ratio", d["warmup_ratio"], "--min-lr-ratio", d["min_lr_ratio"], "--adam-beta2",
            d["adam_beta2"], "--max-grad-norm", d["max_grad_norm"],
            "--max-prompt-len", MAX_PROMPT, "--max-response-len", MAX_RESPONSE]


# Ours runs the padding-free forwards and takes the old log-probs from the sampler (no policy
# forward in the scoring); the peers do what they do by default (TRL pads, and recomputes the
# old log-probs with a forward).
FAST_PPO = ["--packing-samples", "--sampler-logprobs"]
FAST_ANNOTATE = ["--packing-samples"]


def precision_flags(precision=None):
    return ["--bf16"] if (precision or PRECISION) == "bf16" else []


def frozen_dtype():
    """The dtype the peers load their frozen models in (see PRECISION)."""
    import torch
    return torch.bfloat16 if PRECISION == "bf16" else torch.float32


def ppo_args(inp, mode, fast=True, precision=None):
    p = PPO
    args = ["--mode", mode, "--policy", inp["sft"], "--reward-model", inp["rm"], "--prompts", f"{DATA}/rl_prompts.jsonl",
            "--iterations", p["iterations"], "--rollout-batch-size", p["rollout"], "--train-batch-size", p["train"],
            "--micro-batch-size", p["micro"], "--ppo-epochs", p["epochs"], "--max-new-tokens", p["max_new_tokens"],
            "--actor-lr", p["actor_lr"], "--critic-lr", p["actor_lr"], "--kl-coef", p["kl_coef"],
            "--eps-clip", p["eps_clip"], "--value-clip", p["value_clip"], "--gamma", p["gamma"], "--lambda", p["lam"],
            "--save-rollouts-every", 0, "--checkpoint-every", 0,
            "--max-prompt-len", MAX_PROMPT, "--max-response-len", MAX_RESPONSE, *(FAST_PPO if fast else []), *precision_flags(precision)]
    if mode != "ppo":
        args += ["--dpo", inp["dpo"]]
    return args


def annotate_args(inp, precision=None):
    a = ANNOTATE
    return ["--ref", inp["sft"], "--dpo", inp["dpo"], "--data", inp["pairs"], "--mode", "rto", "--beta1", a["beta1"],
            "--dpo-clip", a["clip"], "--batch-size", a["batch_size"],
            "--max-prompt-len", MAX_PROMPT, "--max-response-len", MAX_RESPONSE, *FAST_ANNOTATE, *precision_flags(precision)]


# ---------------------------------------------------------------- the peers (child processes)

def encode_pairs(tokenizer, path):
    """The pairs as our Encoder makes them: chat-template prompt (skipped when longer than
    MAX_PROMPT), response + EOS cut to MAX_RESPONSE, equal pairs and empty responses skipped."""
    out = []
    for line in open(path):
        r = json.loads(line)
        if r["chosen"].strip() == r["rejected"].strip() or not r["chosen"].strip() or not r["rejected"].strip():
            continue
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": r["prompt"]}], add_generation_prompt=True,
                                               tokenize=True, return_dict=False)
        if len(prompt) > MAX_PROMPT:
            continue
        resp = [(tokenizer(r[k], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])[:MAX_RESPONSE]
                for k in ("chosen", "rejected")]
        out.append(dict(prompt_ids=list(prompt), chosen_ids=resp[0], rejected_ids=resp[1]))
    return out


def tokenizer_of(folder):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(folder)


def peer_dpo(inp):
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    import trl
    from trl import DPOConfig, DPOTrainer

    class PreTokenized(DPOTrainer):
        # The dataset already holds prompt_ids/chosen_ids/rejected_ids, encoded as ours are.
        def _prepare_dataset(self, dataset, *args, **kwargs):
            return dataset

    tok = tokenizer_of(inp["sft"])
    data = Dataset.from_list(encode_pairs(tok, inp["pairs"]))
    model = AutoModelForCausalLM.from_pretrained(inp["sft"], dtype=torch.float32)
    d = DPO
    out = tempfile.mkdtemp()
    config = DPOConfig(output_dir=out, per_device_train_batch_size=d["batch_size"], num_train_epochs=1,
                       learning_rate=d["lr"], beta=d["beta"], loss_type=["sigmoid"], max_length=MAX_PROMPT + MAX_RESPONSE,
                       lr_scheduler_type="cosine", warmup_steps=d["warmup_ratio"], adam_beta2=d["adam_beta2"],
                       weight_decay=0.0, max_grad_norm=d["max_grad_norm"], optim="adamw_torch", report_to="none",
                       save_strategy="no", eval_strategy="no", logging_strategy="no", disable_tqdm=True,
                       use_cpu=True, bf16=False, fp16=False, dataloader_num_workers=0, seed=42)
    trainer = PreTokenized(model=model, args=config, train_dataset=data, processing_class=tok)
    start, cpu = time.perf_counter(), time.process_time()
    trainer.train()  # fp32, as ours in this row (--precision is for the PPO, RTO and annotate rows)
    secs = time.perf_counter() - start
    cpu = time.process_time() - cpu
    shutil.rmtree(out, ignore_errors=True)
    return dict(secs=secs, cpu=cpu, steps=trainer.state.global_step, pairs=len(data), trl=trl.__version__)


def peer_ppo(inp):
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    import trl
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    p = PPO
    tok = tokenizer_of(inp["sft"])
    tok.padding_side = "left"
    prompts = []
    for line in open(f"{DATA}/rl_prompts.jsonl"):
        ids = tok.apply_chat_template([{"role": "user", "content": json.loads(line)["prompt"]}],
                                      add_generation_prompt=True, tokenize=True, return_dict=False)
        if len(ids) <= MAX_PROMPT:
            prompts.append(dict(input_ids=list(ids)))
        if len(prompts) == p["iterations"] * p["rollout"]:
            break
    data = Dataset.from_list(prompts)
    policy = AutoModelForCausalLM.from_pretrained(inp["sft"], dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(inp["sft"], dtype=frozen_dtype())
    reward = AutoModelForSequenceClassification.from_pretrained(inp["rm"], dtype=frozen_dtype(), num_labels=1)
    value = AutoModelForSequenceClassification.from_pretrained(inp["rm"], dtype=torch.float32, num_labels=1)
    out = tempfile.mkdtemp()
    config = PPOConfig(output_dir=out, per_device_train_batch_size=p["micro"],
                       gradient_accumulation_steps=p["train"] // p["micro"], num_mini_batches=p["rollout"] // p["train"],
                       num_ppo_epochs=p["epochs"], total_episodes=p["iterations"] * p["rollout"],
                       local_rollout_forward_batch_size=p["rollout"], response_length=p["max_new_tokens"],
                       stop_token="eos", temperature=1.0, learning_rate=p["actor_lr"], kl_coef=p["kl_coef"],
                       cliprange=p["eps_clip"], cliprange_value=p["value_clip"], gamma=p["gamma"], lam=p["lam"],
                       lr_scheduler_type="cosine", warmup_steps=0.03, adam_beta2=0.95, weight_decay=0.0,
                       max_grad_norm=1.0, num_sample_generations=0, report_to="none", save_strategy="no",
                       logging_steps=10_000, disable_tqdm=True, use_cpu=True, bf16=False, fp16=False, seed=42)
    trainer = PPOTrainer(args=config, processing_class=tok, model=policy, ref_model=reference, reward_model=reward,
                         value_model=value, train_dataset=data, eval_dataset=data)
    start, cpu = time.perf_counter(), time.process_time()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=PRECISION == "bf16"):
        trainer.train()
    secs = time.perf_counter() - start
    cpu = time.process_time() - cpu
    shutil.rmtree(out, ignore_errors=True)
    return dict(secs=secs, cpu=cpu, iterations=p["iterations"], trl=trl.__version__)


def peer_annotate(inp):
    """What token-reward-annotate does (rto mode, no reward model): encode the pairs, reference
    and DPO log-probs of every response token in batches, the clipped token reward
    clip(β1·(lp_dpo − lp_ref), ±c), one Parquet row per token."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(inp["sft"], dtype=frozen_dtype()).eval()
    dpo = AutoModelForCausalLM.from_pretrained(inp["dpo"], dtype=frozen_dtype()).eval()
    tok = tokenizer_of(inp["sft"])
    a, pad = ANNOTATE, tok.pad_token_id
    out = tempfile.mkdtemp()
    start, cpu = time.perf_counter(), time.process_time()
    pairs = encode_pairs(tok, inp["pairs"])
    seqs = [(i, side, p["prompt_ids"], p[f"{side}_ids"]) for i, p in enumerate(pairs) for side in ("chosen", "rejected")]
    cols = {k: [] for k in ("pair", "side", "position", "token_id", "token", "logp_ref", "logp_dpo", "reward")}
    tokens = 0
    with torch.inference_mode():
        for b in range(0, len(seqs), a["batch_size"]):
            chunk = seqs[b:b + a["batch_size"]]
            plen, rlen = max(len(s[2]) for s in chunk), max(len(s[3]) for s in chunk)
            # [left-padded prompt | right-padded response], as ours lays a batch out
            ids = torch.tensor([[pad] * (plen - len(s[2])) + s[2] + s[3] + [pad] * (rlen - len(s[3])) for s in chunk])
            mask = torch.tensor([[0] * (plen - len(s[2])) + [1] * (len(s[2]) + len(s[3])) + [0] * (rlen - len(s[3]))
                                 for s in chunk])
            position_ids = (mask.cumsum(1) - 1).clamp(min=0)
            targets = ids[:, plen:]
            lps = []
            for model in (ref, dpo):
                hidden = model.model(input_ids=ids, attention_mask=mask, position_ids=position_ids).last_hidden_state
                logits = model.lm_head(hidden[:, plen - 1:-1])  # the head on response positions only
                lps.append(torch.gather(logits.float().log_softmax(-1), 2, targets.unsqueeze(-1)).squeeze(-1))
            reward = (a["beta1"] * (lps[1] - lps[0])).clamp(-a["clip"], a["clip"])
            for row, (pair, side, _, resp) in enumerate(chunk):
                n = len(resp)
                tokens += n
                cols["pair"] += [pair] * n
                cols["side"] += [side] * n
                cols["position"] += list(range(n))
                cols["token_id"] += resp
                cols["token"] += tok.convert_ids_to_tokens(resp)
                cols["logp_ref"] += lps[0][row, :n].tolist()
                cols["logp_dpo"] += lps[1][row, :n].tolist()
                cols["reward"] += reward[row, :n].tolist()
    pq.write_table(pa.table(cols), os.path.join(out, "tokens.parquet"))
    secs = time.perf_counter() - start
    cpu = time.process_time() - cpu
    shutil.rmtree(out, ignore_errors=True)
    return dict(secs=secs, cpu=cpu, tokens=tokens, sequences=len(seqs))


def other_precision():
    return "fp32" if PRECISION == "bf16" else "bf16"


def response_tokens(inp):
    """Response tokens (chosen + rejected, EOS included) of the usable pairs: the annotate work."""
    pairs = encode_pairs(tokenizer_of(inp["sft"]), inp["pairs"])
    return sum(len(p["chosen_ids"]) + len(p["rejected_ids"]) for p in pairs), len(pairs)


# ---------------------------------------------------------------- rows

def rows(reps: int) -> list:
    inp = prepare()
    tokens, pairs = response_tokens(inp)
    # (ours, theirs) result dicts; the *_plain and *_other keys are ours only: the same run without
    # the speed flags, and in the other precision, to say what each one moved.
    other = other_precision()
    keys = ("dpo", "ppo", "rto", "annotate", "ppo_self", "ppo_plain", "ppo_other", "annotate_other")
    runs = {k: ([], []) for k in keys}
    for _ in range(reps):  # alternate: each round runs every pair, ours then theirs
        runs["dpo"][0].append(ours("dpo-train", dpo_args(inp)))
        runs["dpo"][1].append(theirs("dpo", inp))
        runs["ppo"][0].append(ours("ppo-train", ppo_args(inp, "ppo")))
        runs["ppo"][1].append(theirs("ppo", inp))
        # `reps` rounds, not OURS_ROUNDS: where bf16 matmuls fall back to loops these runs are 10x longer.
        runs["ppo_other"][0].append(ours("ppo-train", ppo_args(inp, "ppo", precision=other)))
        runs["annotate_other"][0].append(ours("token-reward-annotate", annotate_args(inp, precision=other)))
        runs["annotate"][0].append(ours("token-reward-annotate", annotate_args(inp)))
        runs["annotate"][1].append(theirs("annotate", inp))
    # The ours-only PPO comparisons are cheap, and RTO's extra forward is ~5 % of an iteration,
    # the size of the run-to-run spread: they get OURS_ROUNDS interleaved rounds of their own,
    # against their own PPO-mode runs (ppo_self).
    for _ in range(max(reps, OURS_ROUNDS)):
        runs["ppo_self"][0].append(ours("ppo-train", ppo_args(inp, "ppo")))
        runs["rto"][0].append(ours("ppo-train", ppo_args(inp, "rto")))
        runs["ppo_plain"][0].append(ours("ppo-train", ppo_args(inp, "ppo", fast=False)))
    med = {k: tuple(statistics.median(r[what] for r in side) if side else None for side in v for what in ("secs", "cpu"))
           for k, v in runs.items()}  # k -> (ours wall, ours cpu, theirs wall, theirs cpu)
    # The ours-only rows: (the row's "rto" side, its "peer" side), both runs of ours.
    sides = {"rto": ("rto", "ppo_self"), "ppo_plain": ("ppo_self", "ppo_plain"),
             "ppo_other": ("ppo_self", "ppo_other"), "annotate_other": ("annotate", "annotate_other")}
    for key, (a, b) in sides.items():
        med[key] = med[a][:2] + med[b][:2]
    info = {k: v[1][-1] for k, v in runs.items() if v[1]}
    n = PPO["iterations"]

    def split(key):
        """The median per-run time split of `key`'s ppo-train runs, scoring per model, and the
        scoring forwards' padding share before (padded layout) and after packing."""
        side = runs[key][0]
        med_of = lambda k: statistics.median(r.get(k, 0.0) for r in side)
        parts = [f"{k.split('/')[1]} {med_of(k):.1f}s" for k in ("time/generation", "time/scoring", "time/training",
                                                                   "time/total")]
        models = sorted(k for k in side[0] if k.startswith("time/scoring/"))
        parts.append("scoring by model: " + ", ".join(f"{k.split('/')[2]} {med_of(k):.2f}s" for k in models))
        parts.append(f"padding share of the scoring slots {med_of('scoring_padding_share_unpacked'):.2f} -> "
                     f"{med_of('scoring_padding_share'):.2f}")
        return "; ".join(parts)

    def loop_ratio():
        """Ours Σ time/total (the iteration loop, as their train() times it: no process start
        and no model loading on either side) against their train()."""
        loop = statistics.median(r["time/total"] for r in runs["ppo"][0])
        return f"iteration-loop ratio {med['ppo'][2] / loop:.2f}x ({loop:.1f}s vs {med['ppo'][2]:.1f}s)"

    def row(key, bench, unit, work, peer_name, note):
        w = med[key]
        return dict(bench=bench, unit=unit, rto=work / w[0], peer=work / w[2], ratio=w[2] / w[0],
                    peer_name=peer_name, cpu_ratio=w[3] / w[1],
                    note=f"{note}; wall {w[0]:.1f}s vs {w[2]:.1f}s, CPU {w[1]:.1f}s vs {w[3]:.1f}s "
                         f"(CPU-time ratio {w[3] / w[1]:.2f}x)",
                    runs={side: [r["secs"] for r in runs[k][0]] for side, k in zip(("ours", "theirs"), sides[key])}
                    if key in sides else {"ours": [r["secs"] for r in runs[key][0]],
                                          "theirs": [r["secs"] for r in runs[key][1]]})

    ours_rows = [
        row("ppo_plain", f"PPO with {' '.join(FAST_PPO)} vs without, {n} it", "it/s", n,
            "ppo-train --mode ppo without them (ours)", f"without: {split('ppo_plain')}"),
        row("ppo_other", f"PPO {PRECISION} vs {other}, {n} it", "it/s", n, f"ppo-train --mode ppo in {other} (ours)",
            f"{other}: {split('ppo_other')}; {len(runs['ppo_other'][0])} rounds"),
        row("annotate_other", f"annotate {PRECISION} vs {other}", "tok/s", tokens,
            f"token-reward-annotate in {other} (ours)", "both with --packing-samples"),
    ]
    return [
        row("dpo", f"DPO epoch, {pairs} pairs, batch {DPO['batch_size']}", "pairs/s", pairs,
            f"TRL {info['dpo']['trl']} DPOTrainer",
            f"ours dpo-ref-logps + dpo binary wall; theirs train() ({info['dpo']['steps']} steps)"),
        row("ppo", f"PPO, {n} it of {PPO['rollout']} x {PPO['max_new_tokens']} tok", "it/s", n,
            f"TRL {info['ppo']['trl']} PPOTrainer",
            f"ours ppo-train --mode ppo {' '.join(FAST_PPO + precision_flags())} binary wall ({split('ppo')}); "
            f"theirs train(); {loop_ratio()}"),
        row("rto", f"RTO mode vs PPO mode, {n} it", "it/s", n, "ppo-train --mode ppo (ours)",
            f"the DPO model's extra forward ({split('rto')}); iteration-loop ratio "
            f"{statistics.median(r['time/total'] for r in runs['ppo_self'][0]) / statistics.median(r['time/total'] for r in runs['rto'][0]):.2f}x; "
            f"{len(runs['rto'][0])} rounds"),
        row("annotate", f"annotate, {2 * pairs} seqs, batch {ANNOTATE['batch_size']}", "tok/s", tokens,
            "PyTorch/transformers script", f"{tokens} response tokens; ours binary wall; theirs the script's work"),
        *ours_rows,
    ]


def main():
    global THREADS, PRECISION
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads, both sides")
    parser.add_argument("--iterations", type=int, default=PPO["iterations"], help="PPO iterations")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default=PRECISION,
                        help="both sides' precision in the PPO, RTO and annotate rows (see PRECISION; "
                             f"this CPU's default: {PRECISION})")
    parser.add_argument("--peer", choices=["dpo", "ppo", "annotate"], help=argparse.SUPPRESS)
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    THREADS, PRECISION = args.threads, args.precision
    PPO["iterations"] = args.iterations
    import torch
    torch.set_num_threads(THREADS)
    if args.peer:
        result = dict(dpo=peer_dpo, ppo=peer_ppo, annotate=peer_annotate)[args.peer](json.loads(args.inputs))
        print(json.dumps(result))
        return
    start = time.perf_counter()
    table = rows(args.reps)
    print(f"{'bench':<40} {'rto':>9} {'peer':>9} {'ratio':>7}  {'unit':<8} peer / note")
    for r in table:
        print(f"{r['bench']:<40} {r['rto']:>9.4g} {r['peer']:>9.4g} {r['ratio']:>6.2f}x  {r['unit']:<8} {r['peer_name']}; {r['note']}")
    print(f"({args.reps} rounds, medians; {THREADS} threads each side; {os.cpu_count()} cores of {cpu_model()}; "
          f"{PRECISION} (bf16 instructions: {'yes' if native_bf16() else 'no'}); load average {os.getloadavg()[0]:.1f} at the end; {time.perf_counter() - start:.0f}s)")
    if args.json:
        json.dump(table, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
