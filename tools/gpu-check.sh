#!/usr/bin/env bash
# The CUDA check, run on a lent GPU machine (see README "GPU"): binaries built on the CPU
# machine, libtorch from that machine's own torch 2.11. Prints what it sees; asserts nothing.
# Usage: tools/gpu-check.sh BIN_DIR TINY_MODEL_DIR
set -u
bin=${1:-target/x86_64-unknown-linux-gnu/release}
tiny=${2:-.devcarry/tiny}
torch_lib=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib
export LD_LIBRARY_PATH=$torch_lib:${LD_LIBRARY_PATH:-}
export RTO_BENCH_BIN=$bin/rto-bench PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch; print("python torch", torch.__version__, "cuda", torch.cuda.is_available())'
echo "== CUDA visible to our binary, CPU vs CUDA log-probs (tiny transformers model)"
$bin/rto-bench parity --model "$tiny" --device cuda
echo "== sampling on the GPU"
$bin/rto-sample --random-init --device cuda --max-new-tokens 8
echo "== bench config on CUDA (ours vs transformers, same run)"
python3 bench/bench_model.py --device cuda --reps 2
echo "== ~0.5B model, bf16 generation 64x128 -> 128 tokens, f32 DPO step 8 pairs x 512"
python3 bench/bench_model.py --device cuda --size large --dtype bf16 --gen-batch 64 --prompt-len 128 \
  --new-tokens 128 --pairs 8 --seq-len 512 --reps 2
echo "== real model shapes in bf16 through every stage (memory plan vs CUDA peak in each manifest)"
python3 bench/bench_scale.py --device cuda --precisions bf16 --shapes qwen2.5-0.5b,qwen2.5-1.5b,qwen2.5-3b
echo "== c10d NCCL at world size 1 (binaries built with --features nccl)"
[ -x "$bin/rto-dist-check" ] && torchrun --standalone --nproc-per-node 1 --no-python "$bin/rto-dist-check" --device cuda
