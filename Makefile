# Everything a fresh machine needs (Rust, Python 3.11, pip) is set up from here.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
TORCH_VERSION := 2.11.0
# The version the parity tests were written against; pinned so a fresh machine gets the same.
TRANSFORMERS_VERSION := 5.24.0
# peft: the LoRA parity tests (tests/python/peft_reference.py); 0.21.2 imports with transformers 5.24 and torch 2.11.
PEFT_VERSION := 0.21.2
CARGO_CONFIG := .cargo/config.toml
GLOO_DIR := .deps/gloo
GLOO_HEADERS := $(GLOO_DIR)/usr/include/gloo/context.h
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: all setup build lint test demo replicate replicate-quick check-results bench bench-scale bench-pins build-cuda clean-runs

all: build

# The venv holds libtorch (from the torch wheel) and the peers tests compare against
# (tensorboard: its event reader checks the files --tensorboard writes).
$(VENV)/.ready:
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --disable-pip-version-check \
		torch==$(TORCH_VERSION) transformers==$(TRANSFORMERS_VERSION) pyarrow safetensors tensorboard blake3 \
		peft==$(PEFT_VERSION)
	touch $@

# Generated, not committed: it holds this checkout's absolute libtorch path, so that
# `cargo build/test` work inside the repo and binaries find libtorch without LD_LIBRARY_PATH.
$(CARGO_CONFIG): $(VENV)/.ready tools/write-cargo-config.sh
	bash tools/write-cargo-config.sh $(VPY) $@ $(CURDIR)/$(GLOO_DIR)/usr/include

# The gloo headers crates/rto-dist compiles against (ProcessGroupGloo.hpp includes them; the torch
# wheel lacks them), from Debian's libgloo-dev (bookworm 0.0~git20220518.5b14351-3 is the one
# checked against torch 2.11), unpacked without root. Gloo itself is compiled into
# libtorch_cpu.so: the package's libgloo.so is deleted so that nothing can link it.
$(GLOO_HEADERS):
	rm -rf $(GLOO_DIR) && mkdir -p $(GLOO_DIR)/deb
	cd $(GLOO_DIR)/deb && { apt-get download libgloo-dev || { apt-get update && apt-get download libgloo-dev; }; }
	dpkg -x $(GLOO_DIR)/deb/libgloo-dev_*.deb $(GLOO_DIR)
	rm -rf $(GLOO_DIR)/deb $(GLOO_DIR)/usr/lib
	touch $@

setup: $(VENV)/.ready $(CARGO_CONFIG) $(GLOO_HEADERS)

build: setup
	cargo build --release

# The GPU build, for a lent GPU machine (README "GPU"; not part of `make test`): CUDA graphs
# (rto-cuda/graphs) and NCCL (rto-dist/nccl) compile against CUDA headers that the torch wheel's
# cu13 runtime lacks; these two header-only wheels, of that runtime's release, provide them. Its
# own target folder, so the CPU build stays as it is (its binaries do not load CUDA's libraries).
CUDA_HEADERS := $(VENV)/.cuda-headers
$(CUDA_HEADERS): $(VENV)/.ready
	$(VPY) -m pip install --quiet --disable-pip-version-check --no-deps \
		nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85
	touch $@

build-cuda: setup $(CUDA_HEADERS)
	cargo build --release --target-dir target/cuda --features rto-cuda/graphs,rto-dist/nccl

# The gate `make test` starts with: the tree as rustfmt.toml formats it, and no clippy warning.
lint: setup
	cargo fmt --check
	cargo clippy --release --all-targets -- -D warnings

# Tests run in parallel (cargo's default, one test thread per core): nothing draws from a
# process-global generator (rto-rng). One libtorch intra-op thread per test process, so two
# test threads keep two cores busy instead of oversubscribing them.
# No `build` first: `cargo test` builds the binaries itself, with the dev-dependencies' features,
# so a plain `cargo build` before it would compile the heavy dependencies a second time.
test: lint
	OMP_NUM_THREADS=1 cargo test --release

# The toy replication chain on the shipped data: SFT → pairs → DPO → RM → annotate → PPO and
# RTO → eval, ending with a table. Every stage is cached in runs/: a second run is a no-op.
# demo and replicate run in reproducible mode (the scripts default RTO_REPRODUCIBLE to 1: CPU code
# paths pinned, so the bytes match results/*.blake3 on any x86-64 machine with AVX2);
# RTO_REPRODUCIBLE=0 make demo runs with the CPU's own kernels. `make demo LORA=1`: the same chain
# with LoRA adapters for DPO, the reward model and PPO (pipelines/demo.sh).
demo: build
	LORA=$(or $(LORA),0) pipelines/demo.sh 1

# The study (pipelines/replicate.py): every RL method tuned on a 4-point grid against validation
# prompts, then 5 seeds (PPO, RTO) or 3 (the other methods) at equal rollout budgets, plus DPO and
# SimPO; writes results/replication.{md,json} with CIs, paired differences, samples-to-threshold
# and PNG plots (matplotlib is installed into the venv for this only). About 45 minutes on 2 quiet
# cores. replicate-quick: the same code with tiny settings (a few minutes), results in
# STORE/replicate-quick/ (STORE: default runs/), never in results/.
replicate: build
	$(VPY) -m pip install --quiet --disable-pip-version-check matplotlib
	$(VPY) pipelines/replicate.py

replicate-quick: build
	$(VPY) -m pip install --quiet --disable-pip-version-check matplotlib
	$(VPY) pipelines/replicate.py --quick

# Recomputes the blake3 of every artifact listed in results/*.blake3 (the published lists, which
# RTO_PUBLISH=1 make demo / replicate regenerate) in the store (STORE, default runs/) and says
# which differ or are missing.
check-results:
	$(VPY) -m pip install --quiet --disable-pip-version-check blake3
	$(VPY) pipelines/artifacts.py check --store $(or $(STORE),runs)

# Which CPU pins change the bytes of sft/dpo/rm/ppo-train, and the reproducible mode's speed cost.
bench-pins: build
	$(VPY) bench/bench_pins.py --timing 3 --json bench/pins.json

# TRL is for the bench only. 1.16 (DPOTrainer) goes into the venv with torch and transformers
# pinned, so the peers the tests compare against stay as they are; 0.29.1, the last release
# with a PPO trainer, goes apart into bench/.trl-ppo (no deps) for the PPO row only.
$(VENV)/.bench-ready: $(VENV)/.ready
	$(VPY) -m pip install --quiet --disable-pip-version-check \
		trl==1.16.0 torch==$(TORCH_VERSION) transformers==$(TRANSFORMERS_VERSION)
	$(VPY) -m pip install --quiet --disable-pip-version-check --no-deps --target bench/.trl-ppo trl==0.29.1
	touch $@

# Model-core rows (sampling, DPO-shaped step, MFU) and stage rows (dpo/ppo/annotate vs TRL and
# PyTorch), each pair measured in this one run; about 15 minutes on 2 cores.
bench: build $(VENV)/.bench-ready
	$(VPY) bench/bench_model.py --json bench/latest.json

# A random Qwen2.5-0.5B-shaped model through sft/dpo/rm/annotate/ppo on this CPU, fp32 vs bf16:
# seconds per step, tokens/s, memory plan vs peak RSS. Prints, never asserts; needs ~15 GiB of
# RAM and about 20 minutes on 2 cores.
bench-scale: build
	$(VPY) bench/bench_scale.py --json bench/scale.json

clean-runs:
	rm -rf runs
