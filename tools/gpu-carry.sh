#!/usr/bin/env bash
# Assembles .devcarry/ for a lent GPU machine (the device tool's carry is 64 MiB): `make
# build-cuda`'s rto-bench, rto-sample and rto-dist-check, and a small model folder for
# `rto-bench parity`. Then, on the device: tools/gpu-check.sh .devcarry/bin .devcarry/tiny
# (the stage rows of bench_scale.py need the stage binaries too: add them when there is room).
set -eu
src=target/cuda/x86_64-unknown-linux-gnu/release
[ -x "$src/rto-bench" ] || { echo "no $src/rto-bench: run make build-cuda first" >&2; exit 1; }
model=$(ls -d runs/bench/inputs/sft/*/ runs/sft/*/ 2>/dev/null | head -n 1 || true)
[ -n "$model" ] || { echo "no model folder under runs/: run make bench (or make demo) first" >&2; exit 1; }
rm -rf .devcarry && mkdir -p .devcarry/bin
cp "$src/rto-bench" "$src/rto-sample" "$src/rto-dist-check" .devcarry/bin/
cp -r "$model" .devcarry/tiny
du -sh .devcarry
