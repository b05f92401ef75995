#!/usr/bin/env bash
# The CUDA check, run on a lent GPU machine (see README "GPU"): binaries built on the CPU
# machine, libtorch from that machine's own torch 2.11. Prints what it sees; asserts nothing.
# Usage: tools/gpu-check.sh BIN_DIR TINY_MODEL_DIR (tools/gpu-carry.sh assembles both in .devcarry)
# BIN_DIR: `make build-cuda`'s target/cuda/x86_64-unknown-linux-gnu/release for the CUDA-graph
# and NCCL lines (those binaries link libtorch_cuda and libcudart); the plain build skips them.
set -u
bin=${1:-target/x86_64-unknown-linux-gnu/release}
tiny=${2:-.devcarry/tiny}
torch_dir=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')
# libcudart and libnccl for the `make build-cuda` binaries, which name them directly.
export LD_LIBRARY_PATH=$torch_dir/lib:$torch_dir/../nvidia/cu13/lib:$torch_dir/../nvidia/nccl/lib:${LD_LIBRARY_PATH:-}
graphs=no
ldd "$bin/rto-sample" | grep -q libtorch_cuda && graphs=yes
export RTO_BENCH_BIN=$bin/rto-bench PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch; print("python torch", torch.__version__, "cuda", torch.cuda.is_available())'
echo "== CUDA visible to our binary, CPU vs CUDA log-probs (tiny transformers model)"
$bin/rto-bench parity --model "$tiny" --device cuda
echo "== sampling on the GPU"
$bin/rto-sample --random-init --device cuda --max-new-tokens 8
if [ $graphs = yes ]; then
  echo "== decode steps replayed from a CUDA graph sample what eager steps sample (same seed)"
  for how in --greedy "--temperature 0.9"; do
    if ! eager=$($bin/rto-sample --random-init --device cuda --max-new-tokens 48 $how) ||
       ! graph=$($bin/rto-sample --random-init --device cuda --max-new-tokens 48 $how --cuda-graph); then
      echo "FAILED to sample ($how)"
    elif [ "$eager" = "$graph" ]; then echo "same tokens ($how)"
    else echo "DIFFERENT ($how)"; diff <(echo "$eager") <(echo "$graph"); fi
  done
  $bin/rto-bench graph-parity --device cuda
  $bin/rto-bench graph-parity --device cuda --size large --dtype bf16
  graph_rows=--cuda-graph
else
  echo "== no CUDA graph lines: $bin was not built by make build-cuda"
  graph_rows=
fi
echo "== bench config on CUDA (ours vs transformers, same run; with and without the CUDA graph)"
python3 bench/bench_model.py --device cuda --reps 2 $graph_rows
echo "== ~0.5B model, bf16 generation 64x128 -> 128 tokens, f32 DPO step 8 pairs x 512"
python3 bench/bench_model.py --device cuda --size large --dtype bf16 --gen-batch 64 --prompt-len 128 \
  --new-tokens 128 --pairs 8 --seq-len 512 --reps 2 $graph_rows
echo "== real model shapes in bf16 through every stage (memory plan vs CUDA peak in each manifest)"
if [ -x "$bin/ppo-train" ]; then
  RTO_BIN=$bin python3 bench/bench_scale.py --device cuda --precisions bf16 --shapes qwen2.5-0.5b,qwen2.5-1.5b,qwen2.5-3b
else
  echo "skipped: $bin has no stage binaries (tools/gpu-carry.sh carries only rto-bench, rto-sample, rto-dist-check)"
fi
echo "== c10d NCCL at world size 1 (binaries of make build-cuda)"
[ -x "$bin/rto-dist-check" ] && torchrun --standalone --nproc-per-node 1 --no-python "$bin/rto-dist-check" --device cuda
