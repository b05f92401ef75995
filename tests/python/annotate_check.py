"""Independent checks of token-reward-annotate output, for the Rust tests in
crates/rto-stages/tests/annotate_*.rs. Only pyarrow, torch and transformers are used: nothing
of ours, so an agreement means something.

Subcommands (print one JSON line on success, exit non-zero with a message on a mismatch):
  sums TABLE_DIR
      per-sample sums of tokens.parquet against samples.parquet: float32 sums in position
      order must equal dpo_return / return / sentence_reward bit for bit, and the float64
      group-by sums a pandas/duckdb user would take must agree to 1e-5.
  reference TABLE_DIR DATA SETTINGS_JSON
      recomputes every token's log-probs with transformers (AutoModelForCausalLM, one
      unpadded sequence at a time), the reward-model score, and the RTO reward formula of
      DESIGN.md §4, and compares them with tokens.parquet (max abs error <= 1e-4). Token ids
      come from transformers' own tokenizer and chat template.
  pair_logps DATA SETTINGS_JSON OUT_JSON
      per pair, the summed response log-probs of chosen and rejected under ref and dpo (the
      inputs of DPO's reward accuracy), as JSON lists.
"""
import json
import math
import sys

import numpy as np
import pyarrow.parquet as pq
import torch


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


def read_table(table_dir):
    tokens = pq.read_table(f"{table_dir}/tokens.parquet").to_pydict()
    samples = pq.read_table(f"{table_dir}/samples.parquet").to_pydict()
    return tokens, samples


def tokens_by_sample(tokens):
    """sample_id -> list of row indices, in position order."""
    rows = {}
    for i, sid in enumerate(tokens["sample_id"]):
        rows.setdefault(sid, []).append(i)
    for sid, idx in rows.items():
        idx.sort(key=lambda i: tokens["position"][i])
    return rows


def f32_sum(values):
    # cumsum is a sequential float32 sum: the order our writer sums in.
    return float(np.cumsum(np.asarray(values, dtype=np.float32), dtype=np.float32)[-1])


def sums(table_dir):
    tokens, samples = read_table(table_dir)
    rows = tokens_by_sample(tokens)
    checked = 0
    for k, sid in enumerate(samples["sample_id"]):
        idx = rows.get(sid, [])
        if len(idx) != samples["n_tokens"][k]:
            fail(f"sample {sid}: n_tokens {samples['n_tokens'][k]} but {len(idx)} token rows")
        for token_col, sample_col in [("dpo_reward", "dpo_return"), ("reward", "return"),
                                      ("sentence_reward", "sentence_reward")]:
            expected = samples[sample_col][k]
            values = [tokens[token_col][i] for i in idx]
            if expected is None:
                if any(v is not None for v in values):
                    fail(f"sample {sid}: {sample_col} is null but tokens have {token_col}")
                continue
            exact = f32_sum(values)
            if exact != expected:
                fail(f"sample {sid}: float32 sum of {token_col} = {exact!r}, {sample_col} = {expected!r}")
            if abs(math.fsum(values) - expected) > 1e-5 * max(1.0, abs(expected)):
                fail(f"sample {sid}: float64 sum of {token_col} = {math.fsum(values)!r}, {sample_col} = {expected!r}")
        checked += 1
    print(json.dumps({"samples": checked, "tokens": len(tokens["sample_id"])}))


def load_models(settings):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    lm = lambda d: AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    models = {"ref": lm(settings["ref"]), "dpo": lm(settings["dpo"])}
    if settings.get("policy"):
        models["policy"] = lm(settings["policy"])
    if settings.get("reward_model"):
        models["rm"] = AutoModelForSequenceClassification.from_pretrained(
            settings["reward_model"], dtype=torch.float32).eval()
    return AutoTokenizer.from_pretrained(settings["ref"]), models


def encode(tok, prompt, response):
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                   add_generation_prompt=True)
    prompt_ids = tok(text, add_special_tokens=False)["input_ids"]
    response_ids = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return prompt_ids, response_ids


def response_logps(model, prompt_ids, response_ids):
    ids = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    logp = torch.log_softmax(logits[len(prompt_ids) - 1:-1], dim=-1)
    return logp.gather(-1, torch.tensor(response_ids)[:, None])[:, 0]


def rm_score(model, ids):
    with torch.no_grad():
        hidden = model.model(input_ids=torch.tensor([ids])).last_hidden_state
        return float(model.score(hidden)[0, -1, 0])


def responses_of(data_path):
    """(sample_id, prompt, response) per sequence, with our sample-id rule (pairs: 2r, 2r+1)."""
    rows = [json.loads(line) for line in open(data_path) if line.strip()]
    if "response" in rows[0]:
        return [(r, row["prompt"], row["response"]) for r, row in enumerate(rows)]
    out = []
    for r, row in enumerate(rows):
        out += [(2 * r, row["prompt"], row["chosen"]), (2 * r + 1, row["prompt"], row["rejected"])]
    return out


def expected_rewards(s, models, prompt_ids, response_ids):
    lp = {name: response_logps(m, prompt_ids, response_ids) for name, m in models.items() if name != "rm"}
    c = math.inf if s["clip"] is None else s["clip"]
    out = {"logp_ref": lp["ref"], "logp_dpo": lp["dpo"]}
    out["dpo_reward"] = torch.clamp(s["beta1"] * (lp["dpo"] - lp["ref"]), -c, c)
    reward = out["dpo_reward"].clone()
    if "policy" in lp:
        out["logp_policy"] = lp["policy"]
        out["kl_penalty"] = -s["beta2"] * (lp["policy"] - lp["ref"])
        reward += out["kl_penalty"]
    if "rm" in models:
        sentence = torch.zeros(len(response_ids))
        raw = rm_score(models["rm"], prompt_ids + response_ids)
        sentence[-1] = s["beta3"] * max(-s["rm_clamp"], min(s["rm_clamp"], raw))
        out["sentence_reward"] = sentence
        reward += sentence
    out["reward"] = reward
    return out


def reference(table_dir, data_path, settings_path):
    s = json.load(open(settings_path))
    tok, models = load_models(s)
    tokens, _ = read_table(table_dir)
    rows = tokens_by_sample(tokens)
    worst = {}
    for sid, prompt, response in responses_of(data_path):
        prompt_ids, response_ids = encode(tok, prompt, response)
        idx = rows[sid]
        ours_ids = [tokens["token_id"][i] for i in idx]
        if ours_ids != response_ids:
            fail(f"sample {sid}: token ids {ours_ids} but transformers encodes {response_ids}")
        for column, values in expected_rewards(s, models, prompt_ids, response_ids).items():
            ours = torch.tensor([tokens[column][i] for i in idx], dtype=torch.float32)
            err = float((ours - values).abs().max())
            worst[column] = max(worst.get(column, 0.0), err)
    bad = {k: v for k, v in worst.items() if not v <= 1e-4}
    if bad:
        fail(f"max abs errors above 1e-4: {bad}")
    print(json.dumps({"max_abs_error": worst, "samples": len(rows)}))


def pair_logps(data_path, settings_path, out_path):
    s = json.load(open(settings_path))
    tok, models = load_models(s)
    sums = {"ref_chosen": [], "ref_rejected": [], "dpo_chosen": [], "dpo_rejected": []}
    for row in (json.loads(line) for line in open(data_path) if line.strip()):
        for side in ["chosen", "rejected"]:
            prompt_ids, response_ids = encode(tok, row["prompt"], row[side])
            for name in ["ref", "dpo"]:
                sums[f"{name}_{side}"].append(float(response_logps(models[name], prompt_ids, response_ids).sum()))
    json.dump(sums, open(out_path, "w"))
    print(json.dumps({"pairs": len(sums["ref_chosen"])}))


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"sums": sums, "reference": reference, "pair_logps": pair_logps}[command](*args)
