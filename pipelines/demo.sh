#!/usr/bin/env bash
# The toy replication chain, end to end: SFT → pairs → DPO → RM → annotate → PPO and RTO →
# eval, each stage cached in the store (a second run recomputes nothing). Settings live in
# pipelines/toy/*.yaml; extra flags for every ppo-train call can be passed in PPO_EXTRA.
# Runs in reproducible mode (CPU code paths pinned, ARCHITECTURE.md) unless RTO_REPRODUCIBLE=0,
# and lists the blake3 of every output in $STORE/demo.blake3 (results/demo.blake3 with
# RTO_PUBLISH=1; `make check-results` compares a store against the published list).
# With LORA=1 (`make demo LORA=1`) DPO, the reward model and PPO's actor and critic train LoRA
# adapters over the SFT model (PEFT adapter folders; the reference and the DPO model of the token
# reward stand on the policy's base weights), linked as dpo-lora, rm-lora, ...; the list of
# outputs goes to $STORE/demo-lora.blake3.
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
# LoRA: rank 16, alpha 32 on every projection; adapters learn slower than full weights, so
# their learning rates are 5x the full-weight ones of pipelines/toy/*.yaml.
suffix="" name=demo dpo_lora=() rm_lora=() ppo_lora=()
if [ "${LORA:-0}" = 1 ]; then
  suffix=-lora name=demo-lora
  lora=(--lora-rank 16 --lora-alpha 32)
  dpo_lora=("${lora[@]}" --learning-rate 0.001)
  rm_lora=("${lora[@]}" --learning-rate 0.0025)
  ppo_lora=("${lora[@]}" --actor-lr 0.0005 --critic-lr 0.0025)
fi
last() { tail -n 1; }
step() { echo "== $*" >&2; }

step "sft-train"
SFT=$("$BIN/sft-train" --config $CFG/sft.yaml "${common[@]}" --init-config $CFG/model.json --tokenizer $DATA --data $DATA/sft.jsonl --link sft | last)
step "make-pairs"
PAIRS=$("$BIN/make-pairs" --config $CFG/pairs.yaml "${common[@]}" --model "$SFT" --prompts $DATA/sft.jsonl --link pairs | last)
step "dpo-train"
DPO=$("$BIN/dpo-train" --config $CFG/dpo.yaml "${common[@]}" --model "$SFT" --data "$PAIRS/pairs.jsonl" --link dpo$suffix ${dpo_lora[@]+"${dpo_lora[@]}"} | last)
step "rm-train"
RM=$("$BIN/rm-train" --config $CFG/rm.yaml "${common[@]}" --model "$SFT" --data "$PAIRS/pairs.jsonl" --link rm$suffix ${rm_lora[@]+"${rm_lora[@]}"} | last)
step "token-reward-annotate"
ANNOT=$("$BIN/token-reward-annotate" --config $CFG/annotate.yaml "${common[@]}" --ref "$SFT" --dpo "$DPO" --reward-model "$RM" --data "$PAIRS/pairs.jsonl" --link annotate$suffix | last)
results=()
outputs=("$SFT" "$PAIRS" "$DPO" "$RM" "$ANNOT")
for mode in ppo rto; do
  step "ppo-train --mode $mode (seed $SEED)"
  OUT=$("$BIN/ppo-train" --config $CFG/ppo.yaml "${common[@]}" --seed "$SEED" --mode $mode --policy "$SFT" --dpo "$DPO" --reward-model "$RM" --prompts $DATA/rl_prompts.jsonl --link "$mode$suffix" ${ppo_lora[@]+"${ppo_lora[@]}"} ${PPO_EXTRA:-} | last)
  outputs+=("$OUT")
  step "rto-eval $mode"
  results+=("$("$BIN/rto-eval" --config $CFG/eval.yaml "${common[@]}" --model "$OUT" --baseline "$SFT" --prompts $DATA/eval_prompts.jsonl --name "$mode$suffix" | last)")
done
step "rto-eval dpo"
results+=("$("$BIN/rto-eval" --config $CFG/eval.yaml "${common[@]}" --model "$DPO" --baseline "$SFT" --prompts $DATA/eval_prompts.jsonl --name "dpo$suffix" | last)")
.venv/bin/python pipelines/artifacts.py write --store "$STORE" --name "$name" "${outputs[@]}" "${results[@]}"
echo "token rewards: $ANNOT (view: $BIN/token-reward-annotate show $ANNOT --sample 0)"
python3 pipelines/report.py "${results[@]}"
