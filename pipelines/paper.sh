#!/usr/bin/env bash
# The paper chain of a pipeline config (default pipelines/paper-llama3-8b.yaml): its dpo, rm,
# ppo and rto sections, in that order (those the config has), each through torchrun on
# NPROC × NNODES ranks. Run it from the folder holding the config's models/, data/ and runs/
# (the config's paths are relative to the working directory), on every node of a multi-node job.
#
# Usage: pipelines/paper.sh [--dry-run] [SECTION...]
#   --dry-run  no torchrun, no weights: each stage prints its memory plan for NPROC × NNODES
#              ranks on GPUs of PLAN_MEMORY_GIB GiB (needs only the models' config.json and
#              tokenizer files) and says whether it fits; exit 1 when a stage does not. Stages
#              that read an earlier stage's output (ppo/rto's dpo and reward_model under
#              runs/latest/) are planned with that stage's input model in its place (same shapes;
#              a LoRA DPO adapter adds its adapters, 42 M parameters at r = 16 on Llama-3-8B).
# Environment:
#   CONFIG           pipeline config [pipelines/paper-llama3-8b.yaml]
#   NPROC            ranks (GPUs) per node [8]; NNODES nodes [1]
#   NODE_RANK        this node's index [0]; MASTER_ADDR, MASTER_PORT: node 0's address
#                    [127.0.0.1, 29500] (several nodes: torchrun's static rendezvous)
#   PLAN_MEMORY_GIB  --dry-run: the GPU size checked against [80]
#   BIN              the stage binaries [target/x86_64-unknown-linux-gnu/release]; several
#                    ranks on CUDA need a build with `--features rto-dist/nccl`
#   TORCHRUN         [.venv/bin/torchrun]; PYTHON (reads the config) [.venv/bin/python]
#   EXTRA            flags added to every stage (e.g. "--store /shared/runs")
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CONFIG=${CONFIG:-$ROOT/pipelines/paper-llama3-8b.yaml}
NPROC=${NPROC:-8}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
PLAN_MEMORY_GIB=${PLAN_MEMORY_GIB:-80}
BIN=${BIN:-$ROOT/target/x86_64-unknown-linux-gnu/release}
TORCHRUN=${TORCHRUN:-$ROOT/.venv/bin/torchrun}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
read -r -a extra <<<"${EXTRA:-}"

dry_run=0
if [[ ${1:-} == --dry-run ]]; then
  dry_run=1
  shift
fi

# One flat config per section (the binaries take flat --config files), in $work/<section>.yaml;
# `sections` lists those present, in chain order.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sections=$("$PYTHON" - "$CONFIG" "$work" "$@" <<'EOF'
import sys, yaml
config, work, wanted = sys.argv[1], sys.argv[2], sys.argv[3:]
with open(config) as f:
    doc = yaml.safe_load(f)
chain = ["dpo", "rm", "annotate", "ppo", "rto"]
unknown = [s for s in wanted if s not in doc]
if unknown:
    sys.exit(f"{config}: no section {', '.join(unknown)} (it has {', '.join(doc)})")
for name in wanted or [s for s in chain if s in doc]:
    with open(f"{work}/{name}.yaml", "w") as f:
        yaml.safe_dump(doc[name], f)
    print(name)
EOF
)

binary() {
  case $1 in
    dpo) echo dpo-train ;;
    rm) echo rm-train ;;
    annotate) echo token-reward-annotate ;;
    *) echo ppo-train ;;
  esac
}

# The value of `key` in section file $1 (empty when unset).
value() { "$PYTHON" -c 'import sys, yaml; print((yaml.safe_load(open(sys.argv[1])) or {}).get(sys.argv[2]) or "")' "$@"; }

# --dry-run stand-ins for earlier stages' outputs that do not exist yet.
stand_ins() {
  local section=$1 flag key from
  for pair in dpo:dpo reward_model:rm; do
    key=${pair%%:*} from=${pair##*:}
    local path
    path=$(value "$work/$section.yaml" "$key")
    if [[ -n $path && ! -e $path && -f $work/$from.yaml ]]; then
      flag=--${key//_/-}
      local model
      model=$(value "$work/$from.yaml" model)
      echo "paper.sh: $section: $path does not exist yet; planning $flag as $model (its $from stage's input)" >&2
      printf '%s\n%s\n' "$flag" "$model"
    fi
  done
}

world=$((NPROC * NNODES))
if ((dry_run)); then
  failed=()
  for section in $sections; do
    echo "== $section ($(binary "$section")): memory plan for $world ranks, $PLAN_MEMORY_GIB GiB per GPU" >&2
    mapfile -t swaps < <(stand_ins "$section")
    if ! "$BIN/$(binary "$section")" --config "$work/$section.yaml" "${swaps[@]}" "${extra[@]}" \
      --dry-run --plan-world-size "$world" --plan-memory-gib "$PLAN_MEMORY_GIB"; then
      failed+=("$section")
    fi
  done
  if ((${#failed[@]})); then
    echo "paper.sh: does not fit (or failed): ${failed[*]}" >&2
    exit 1
  fi
  echo "paper.sh: every stage fits $world ranks with $PLAN_MEMORY_GIB GiB per GPU" >&2
  exit 0
fi

if ((NNODES == 1)); then
  launch=("$TORCHRUN" --standalone --nproc-per-node "$NPROC")
else
  launch=("$TORCHRUN" --nnodes "$NNODES" --node-rank "$NODE_RANK" --nproc-per-node "$NPROC"
    --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT")
fi
for section in $sections; do
  echo "== $section ($(binary "$section")) on $world ranks" >&2
  "${launch[@]}" --no-python "$BIN/$(binary "$section")" --config "$work/$section.yaml" "${extra[@]}"
done
