#!/usr/bin/env bash
# The toy replication chain, end to end: SFT → pairs → DPO → RM → annotate → PPO and RTO →
# eval, each stage cached in the store (a second run recomputes nothing). Settings live in
# pipelines/toy/*.yaml; extra flags for every ppo-train call can be passed in PPO_EXTRA.
# Runs in reproducible mode (CPU code paths pinned, ARCHITECTURE.md) unless RTO_REPRODUCIBLE=0,
# and lists the blake3 of every output in $STORE/demo.blake3 (results/demo.blake3 with
# RTO_PUBLISH=1; `make check-results` compares a store against the published list).
# Usage: pipelines/demo.sh [SEED]
set -euo pipefail
export RTO_REPRODUCIBLE=${RTO_REPRODUCIBLE:-1}
cd "$(dirname "$0")/.."
BIN=${BIN:-target/x86_64-unknown-linux-gnu/release}
STORE=${STORE:-runs}
SEED=${1:-1}
CFG=pipelines/toy
DATA=data/toy
common=(--store "$STORE")
last() { tail -n 1; }
step() { echo "== $*" >&2; }

step "sft-train"
SFT=$("$BIN/sft-train" --config $CFG/sft.yaml "${common[@]}" --init-config $CFG/model.json --tokenizer $DATA --data $DATA/sft.jsonl --link sft | last)
step "make-pairs"
PAIRS=$("$BIN/make-pairs" --config $CFG/pairs.yaml "${common[@]}" --model "$SFT" --prompts $DATA/sft.jsonl --link pairs | last)
step "dpo-train"
DPO=$("$BIN/dpo-train" --config $CFG/dpo.yaml "${common[@]}" --model "$SFT" --data "$PAIRS/pairs.jsonl" --link dpo | last)
step "rm-train"
RM=$("$BIN/rm-train" --config $CFG/rm.yaml "${common[@]}" --model "$SFT" --data "$PAIRS/pairs.jsonl" --link rm | last)
step "token-reward-annotate"
ANNOT=$("$BIN/token-reward-annotate" --config $CFG/annotate.yaml "${common[@]}" --ref "$SFT" --dpo "$DPO" --reward-model "$RM" --data "$PAIRS/pairs.jsonl" --link annotate | last)
results=()
outputs=("$SFT" "$PAIRS" "$DPO" "$RM" "$ANNOT")
for mode in ppo rto; do
  step "ppo-train --mode $mode (seed $SEED)"
  OUT=$("$BIN/ppo-train" --config $CFG/ppo.yaml "${common[@]}" --seed "$SEED" --mode $mode --policy "$SFT" --dpo "$DPO" --reward-model "$RM" --prompts $DATA/rl_prompts.jsonl --link "$mode" ${PPO_EXTRA:-} | last)
  outputs+=("$OUT")
  step "rto-eval $mode"
  results+=("$("$BIN/rto-eval" --config $CFG/eval.yaml "${common[@]}" --model "$OUT" --baseline "$SFT" --prompts $DATA/eval_prompts.jsonl --name "$mode" | last)")
done
step "rto-eval dpo"
results+=("$("$BIN/rto-eval" --config $CFG/eval.yaml "${common[@]}" --model "$DPO" --baseline "$SFT" --prompts $DATA/eval_prompts.jsonl --name dpo | last)")
.venv/bin/python pipelines/artifacts.py write --store "$STORE" --name demo "${outputs[@]}" "${results[@]}"
echo "token rewards: $ANNOT (view: $BIN/token-reward-annotate show $ANNOT --sample 0)"
python3 pipelines/report.py "${results[@]}"
