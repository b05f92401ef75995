"""make bench: our model core against PyTorch/transformers on the same work, in one run.

Pairs (workspace issue, config vocab 4096 / hidden 256 / intermediate 688 / 4 layers / 8 heads /
4 kv heads, random weights):
  generate  32 prompts x 32 tokens -> 64 sampled tokens: rto KV-cache sampler vs HF generate
  dpo_step  policy fwd+bwd on 2x16 sequences of 128 tokens + reference fwd + AdamW:
            rto vs PyTorch eager
  mfu       model FLOPs utilisation of both rows above against the fp32 GEMM peak measured
            here (a 2048^3 matmul in the same libtorch/MKL both sides use)
  stages    dpo-train vs TRL DPOTrainer, ppo-train vs TRL PPO, token-reward-annotate vs a
            PyTorch script (bench/bench_stages.py; skipped with --no-stages)
  scaling   a DPO epoch and PPO iterations on 2 Gloo ranks vs 1 process, one thread each
            (bench/bench_scaling.py; skipped with --no-stages or --no-scaling)
Each side runs `--reps` times after a warm-up, alternating, in this process pool; we print
medians and the ratio ours/theirs. Timings are printed, never asserted.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_BIN = os.environ.get("RTO_BENCH_BIN") or os.path.join(
    ROOT, "target", "x86_64-unknown-linux-gnu", "release", "rto-bench")
# Shapes as in crates/rto-cli/src/bench.rs (bench_config / large_config).
SIZES = {
    "bench": dict(vocab_size=4096, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                  num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=2048),
    "large": dict(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=16,
                  num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=4096),
}
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}
ARGS = None


def gemm_peak(reps=5, n=2048):
    """Median fp32 FLOP/s of an n^3 matmul: the ceiling MFU is measured against."""
    a, b = torch.randn(n, n, device=ARGS.device), torch.randn(n, n, device=ARGS.device)
    a @ b
    rates = []
    for _ in range(reps):
        sync()
        start = time.perf_counter()
        a @ b
        sync()
        rates.append(2 * n ** 3 / (time.perf_counter() - start))
    return statistics.median(rates)


def matmul_params(size):
    """Weights that take part in matrix products for every token (the embedding lookup does not)."""
    c = SIZES[size]
    head_dim = c["hidden_size"] // c["num_attention_heads"]
    attention = c["hidden_size"] * head_dim * (2 * c["num_attention_heads"] + 2 * c["num_key_value_heads"])
    mlp = 3 * c["hidden_size"] * c["intermediate_size"]
    return c["num_hidden_layers"] * (attention + mlp) + c["vocab_size"] * c["hidden_size"]


def attention_flops(size, context):
    """Forward FLOPs of q·k and p·v for one query over `context` keys, all layers."""
    c = SIZES[size]
    return 4 * c["num_hidden_layers"] * c["hidden_size"] * context


def generate_flops_per_token(args):
    # Each generated token: a full forward (lm head included) over a context that grows from
    # the prompt; the prefill's prompt tokens add their decoder forward, spread over the output.
    mean_context = args.prompt_len + args.new_tokens / 2
    per_token = 2 * matmul_params(args.size) + attention_flops(args.size, mean_context)
    c = SIZES[args.size]
    prefill = args.prompt_len * (2 * (matmul_params(args.size) - c["vocab_size"] * c["hidden_size"])
                                 + attention_flops(args.size, args.prompt_len / 2))
    return per_token + prefill / args.new_tokens


def dpo_flops_per_token(args):
    # Policy forward + backward (3x forward) and the reference forward: 4 forwards per token.
    return 4 * (2 * matmul_params(args.size) + attention_flops(args.size, args.seq_len / 2))


def hf_model(seed, dtype=torch.float32):
    torch.manual_seed(seed)
    config = LlamaConfig(rms_norm_eps=1e-5, pad_token_id=0, bos_token_id=1, eos_token_id=2, **SIZES[ARGS.size])
    return LlamaForCausalLM(config).to(device=ARGS.device, dtype=dtype).eval()


def sync():
    if ARGS.device.startswith("cuda"):
        torch.cuda.synchronize()


def torch_generate(batch=None, prompt_len=None, new_tokens=None):
    batch, prompt_len, new_tokens = batch or ARGS.gen_batch, prompt_len or ARGS.prompt_len, new_tokens or ARGS.new_tokens
    model = hf_model(0, DTYPES[ARGS.dtype])
    vocab = model.config.vocab_size
    prompts = torch.randint(3, vocab, (batch, prompt_len), device=ARGS.device)
    sync()
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=True,
                             temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, pad_token_id=0, eos_token_id=None)
    sync()
    secs = time.perf_counter() - start
    return (out.shape[1] - prompt_len) * batch / secs


class TorchDpoStep:
    def __init__(self):
        pairs, seq_len = ARGS.pairs, ARGS.seq_len
        self.policy = hf_model(0).train()
        self.reference = hf_model(1)
        self.optimizer = torch.optim.AdamW(self.policy.parameters(), lr=1e-5)
        self.prompt_len = seq_len // 4
        vocab = self.policy.config.vocab_size
        self.ids = torch.randint(3, vocab, (2 * pairs, seq_len), device=ARGS.device)
        self.mask = torch.ones_like(self.ids)
        self.pairs = pairs

    def logps(self, model):
        logits = model(input_ids=self.ids, attention_mask=self.mask).logits[:, self.prompt_len - 1:-1]
        targets = self.ids[:, self.prompt_len:]
        return torch.gather(logits.log_softmax(-1), 2, targets.unsqueeze(-1)).squeeze(-1).sum(-1)

    def step(self):
        with torch.no_grad():
            ref = self.logps(self.reference)
        delta = (self.logps(self.policy) - ref).view(2, self.pairs)
        loss = -torch.nn.functional.logsigmoid(0.1 * (delta[0] - delta[1])).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        sync()
        return self.ids.numel()


def ours(what, reps, extra=()):
    # Let this process's OpenMP workers stop spinning (they busy-wait after torch work) so they
    # do not steal the cores the subprocess is about to use.
    time.sleep(1.0)
    common = ["--reps", str(reps), "--device", ARGS.device, "--size", ARGS.size]
    shape = {"generate": ["--batch", str(ARGS.gen_batch), "--prompt-len", str(ARGS.prompt_len),
                          "--new-tokens", str(ARGS.new_tokens), "--dtype", ARGS.dtype],
             "dpo-step": ["--pairs", str(ARGS.pairs), "--seq-len", str(ARGS.seq_len)]}[what]
    out = subprocess.run([BENCH_BIN, what, *common, *shape, *extra], check=True, capture_output=True, text=True)
    return [json.loads(line)["tokens_per_s"] for line in out.stdout.splitlines() if line.startswith("{")]


def theirs_generate(reps):
    torch_generate(2, 32, 4)  # warm-up
    return [torch_generate() for _ in range(reps)]


def theirs_dpo(reps):
    bench = TorchDpoStep()
    bench.step()  # two warm-up steps, as rto-bench does: allocator and thread pools settle
    bench.step()
    results = []
    for _ in range(reps):
        start = time.perf_counter()
        tokens = bench.step()
        results.append(tokens / (time.perf_counter() - start))
    return results


def scaling_rows():
    """bench/bench_scaling.py's rows, run in a process of its own: a rank's ru_maxrss starts at
    its parent's resident set (exec keeps the high-water mark), and this process holds torch."""
    out = os.path.join(ROOT, "runs", "bench", "scaling.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    subprocess.run([sys.executable, os.path.join(ROOT, "bench", "bench_scaling.py"), "--json", out], check=True)
    return json.load(open(out))


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3, help="rounds; each times 3 runs per side")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", default="bench", choices=sorted(SIZES))
    parser.add_argument("--dtype", default="f32", choices=sorted(DTYPES), help="generation dtype")
    parser.add_argument("--gen-batch", type=int, default=32)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--no-stages", action="store_true", help="only the model-core rows")
    parser.add_argument("--cuda-graph", action="store_true",
                        help="also time our generation with its decode steps replayed from a CUDA graph "
                             "(a build with `make build-cuda`), in the same rounds")
    parser.add_argument("--no-scaling", action="store_true", help="no 2-ranks-vs-1 rows")
    ARGS = args = parser.parse_args()
    torch.set_num_threads(os.cpu_count())
    rows = []
    peak = gemm_peak()
    for name, mine, peer, peer_name in [
        ("generate (tok/s)", "generate", theirs_generate, "transformers generate"),
        ("dpo_step (tok/s)", "dpo-step", theirs_dpo, "PyTorch eager"),
    ]:
        a, b, graphed = [], [], []
        with_graph = args.cuda_graph and mine == "generate"
        for _ in range(args.reps):  # alternate rounds so drift in machine load hits both sides
            a += ours(mine, 3)
            b += peer(3)
            if with_graph:
                graphed += ours(mine, 3, ["--cuda-graph"])
        rows.append((name, statistics.median(a), statistics.median(b), peer_name))
        if with_graph:
            rows.append(("generate, CUDA graph (tok/s)", statistics.median(graphed), statistics.median(b), peer_name))
            rows.append(("generate: CUDA graph vs eager (tok/s)", statistics.median(graphed), statistics.median(a),
                         "ours without --cuda-graph"))
    flops_per_token = {"generate (tok/s)": generate_flops_per_token(args), "dpo_step (tok/s)": dpo_flops_per_token(args)}
    for name, rto, peer, _ in [r for r in rows if r[0] in flops_per_token]:
        flops = flops_per_token[name]
        rows.append((f"MFU {name.split()[0]} (%)", 100 * rto * flops / peak, 100 * peer * flops / peak,
                     f"same FLOPs at the peer's speed; peak {peak / 1e9:.0f} GFLOP/s"))
    if not args.no_stages and args.device == "cpu":
        import bench_stages
        for row in bench_stages.rows(args.reps):
            rows.append((f"{row['bench']} ({row['unit']})", row["rto"], row["peer"], row["peer_name"], row["note"]))
    if not (args.no_stages or args.no_scaling) and args.device == "cpu":
        for row in scaling_rows():
            rows.append((f"{row['bench']} ({row['unit']})", row["rto"], row["peer"], row["peer_name"], row["note"]))
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else "no GPU"
    import bench_stages
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores of {bench_stages.cpu_model()} (bf16 instructions: "
          f"{'yes' if bench_stages.native_bf16() else 'no'}), {gpu}, torch {torch.__version__}; device {args.device}, "
          f"size {args.size}, generation dtype {args.dtype}, stage rows in {bench_stages.PRECISION}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    print(f"{'bench':<52} {'rto':>10} {'peer':>10} {'ratio':>7}  peer")
    for name, a, b, peer_name, *note in rows:
        print(f"{name:<52} {a:>10.4g} {b:>10.4g} {a / b:>6.2f}x  {peer_name}")
    for name, *_, note in [r for r in rows if len(r) == 5]:
        print(f"  {name}: {note}")
    if args.json:
        json.dump([dict(bench=r[0], rto=r[1], peer=r[2], ratio=r[1] / r[2], peer_name=r[3], note=(r[4:] or [""])[0])
                   for r in rows], open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
