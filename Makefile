# Everything a fresh machine needs (Rust, Python 3.11, pip) is set up from here.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
TORCH_VERSION := 2.11.0
CARGO_CONFIG := .cargo/config.toml
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: all setup build test demo replicate bench clean-runs

all: build

# The venv holds libtorch (from the torch wheel) and the peers tests compare against.
$(VENV)/.ready:
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --disable-pip-version-check \
		torch==$(TORCH_VERSION) transformers pyarrow safetensors
	touch $@

# Generated, not committed: it holds this checkout's absolute libtorch path, so that
# `cargo build/test` work inside the repo and binaries find libtorch without LD_LIBRARY_PATH.
$(CARGO_CONFIG): $(VENV)/.ready tools/write-cargo-config.sh
	bash tools/write-cargo-config.sh $(VPY) $@

setup: $(VENV)/.ready $(CARGO_CONFIG)

build: setup
	cargo build --release

# One test thread: libtorch's random generator is process-global, so tests that seed it and
# sample must not interleave with tests that draw from it (e.g. random model init).
test: build
	cargo test --release -- --test-threads=1

# The toy replication chain on the shipped data: SFT → pairs → DPO → RM → annotate → PPO and
# RTO → eval, ending with a table. Every stage is cached in runs/: a second run is a no-op.
demo: build
	pipelines/demo.sh 1

# PPO, RTO, dpo-only, DDPO and DPO over 3 seeds with equal rollout budgets; writes
# results/replication.md and PNG plots (matplotlib is installed into the venv for this only).
replicate: build
	$(VPY) -m pip install --quiet --disable-pip-version-check matplotlib
	$(VPY) pipelines/replicate.py

bench: build
	$(VPY) bench/bench_model.py

clean-runs:
	rm -rf runs
