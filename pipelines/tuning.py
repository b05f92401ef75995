"""Fair tuning for the replication study (issue 18, item 3).

- Validation prompts: the last VALIDATION_PROMPTS rows of data/toy/rl_prompts.jsonl, held out
  from RL training (the RL runs read the other rows). The generator draws every prompt of the
  task without replacement (crates/rto-task generator.rs: one `taken` set for eval, RL and SFT
  prompts), so the split is disjoint from the shipped eval prompts, which stay as they are;
  `split_prompts` checks both disjointness claims on the actual text.
- The grid: actor learning rate × KL coefficient, 2 × 2 = 4 points for every RL method. The
  methods whose reward reads the DPO model also tune β1, folded into the same 4 points as the
  half fraction of the 2³ design (β1 high exactly when one of lr, kl is high), so every method
  gets the same number of tries.
- The rule, `select`: the point with the highest mean gold score on the validation prompts
  (one tuning seed, TUNING_SEED, not among the study's seeds); ties (equal to 1e-9) go to the
  more conservative point: smaller actor lr, then larger KL coefficient, then smaller β1.
  replicate.py applies it before any policy is evaluated on the eval prompts.
"""
import json
import os

VALIDATION_PROMPTS = 256
TUNING_SEED = 100
ACTOR_LRS = (1e-4, 3e-4)
KL_COEFS = (0.01, 0.05)
BETA1S = (0.05, 0.15)
TIE_DIGITS = 9  # validation gold scores equal to this many decimals are a tie


def grid(tunes_beta1):
    """The 4 settings of a method, in grid order (actor lr, then KL coefficient, ascending)."""
    points = []
    for i, lr in enumerate(ACTOR_LRS):
        for j, kl in enumerate(KL_COEFS):
            point = dict(actor_lr=lr, kl_coef=kl)
            if tunes_beta1:
                point["beta1"] = BETA1S[(i + j) % 2]
            points.append(point)
    return points


def flags(point):
    """The ppo-train flags of a grid point."""
    names = {"actor_lr": "--actor-lr", "kl_coef": "--kl-coef", "beta1": "--beta1"}
    return [str(v) for key, value in point.items() for v in (names[key], value)]


def label(point):
    return ", ".join(f"{k} {v:g}" for k, v in point.items())


def select(scored):
    """scored: [(point, validation mean gold score)]. The winner under the rule above."""
    if not scored:
        raise ValueError("select: no grid point was scored")

    def key(entry):
        point, gold = entry
        return (-round(gold, TIE_DIGITS), point["actor_lr"], -point["kl_coef"], point.get("beta1", 0.0))

    return min(scored, key=key)[0]


def prompt_texts(path):
    return [json.loads(line)["prompt"] for line in open(path) if line.strip()]


def write_if_changed(path, text):
    """Writes through a temporary file and a rename (no half-written file under the final name);
    leaves an identical file alone."""
    if os.path.exists(path) and open(path).read() == text:
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def split_prompts(rl_path, eval_path, out_dir, validation=VALIDATION_PROMPTS):
    """Writes out_dir/rl_train_prompts.jsonl and out_dir/validation_prompts.jsonl from rl_path
    (its rows as they are, the last `validation` held out); returns their paths."""
    lines = [line for line in open(rl_path) if line.strip()]
    if not 0 < validation < len(lines):
        raise SystemExit(f"{rl_path}: {len(lines)} prompts, cannot hold out {validation} for validation")
    train, held_out = lines[:-validation], lines[-validation:]
    texts = lambda rows: {json.loads(r)["prompt"] for r in rows}  # noqa: E731
    if texts(train) & texts(held_out):
        raise SystemExit(f"{rl_path}: a prompt occurs in both the training and the validation slice")
    if (texts(train) | texts(held_out)) & set(prompt_texts(eval_path)):
        raise SystemExit(f"{rl_path} shares prompts with {eval_path}: regenerate the task data (rto-task generate)")
    os.makedirs(out_dir, exist_ok=True)
    paths = os.path.join(out_dir, "rl_train_prompts.jsonl"), os.path.join(out_dir, "validation_prompts.jsonl")
    for path, rows in zip(paths, (train, held_out)):
        write_if_changed(path, "".join(rows))
    return paths
