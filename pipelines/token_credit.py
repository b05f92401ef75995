"""Token-credit fidelity (issue 18, item 5): how well the DPO token reward tracks the gold
judge's true per-token credit, and how well the reward model's score tracks the gold score.

For each DPO model and each set of held-out responses (the generations of the SFT model, and of
the given policies, on the eval prompts: prompts no reward was trained on), runs
`token-reward-annotate --judge toy` (cached in the store), which writes per token the DPO reward
β1·log π_dpo/π_ref (clipped to ±dpo_clip, as PPO sees it) and the gold credit (each word's gold
points on the tokens spelling it). `rto-task credit` splits each word's points by judge rule.
Reports Pearson and Spearman correlations per token (overall and per rule: the DPO reward
against that rule's part of the credit) and per response (the RM's sentence reward and the DPO
return against the gold score); writes results/token_credit.{json,png}.

    pipelines/token_credit.py STORE            # the demo's store: models from STORE/latest/
    pipelines/token_credit.py STORE --sft DIR --dpo NAME=DIR --rm DIR --policy NAME=DIR

The annotate outputs go to STORE; the models and their generations may live in another store
(read only).
"""
import argparse
import glob
import json
import math
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "x86_64-unknown-linux-gnu", "release")
CFG = os.path.join(ROOT, "pipelines", "toy")
RESULTS = os.path.join(ROOT, "results")
RULES = ["topic", "avoid", "mood", "repeat", "pairing", "grammar", "unknown", "ending"]
SPECIAL = {"</s>", "<pad>", "<s>"}


def pearson(x, y):
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def ranks(x):
    """Ranks 1..n, ties sharing their mean rank (what Spearman's rho needs)."""
    x = np.asarray(x, float)
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    r = np.empty(len(x))
    start = 0
    while start < len(x):
        end = start
        while end + 1 < len(x) and sorted_x[end + 1] == sorted_x[start]:
            end += 1
        r[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return r


def spearman(x, y):
    return pearson(ranks(x), ranks(y)) if len(x) >= 3 else None


def both(x, y):
    return {"pearson": pearson(x, y), "spearman": spearman(x, y), "n": len(x)}


def model_key(folder):
    return json.load(open(os.path.join(folder, "manifest.json")))["key"]


def generations_of(model, prompts_name="eval_prompts.jsonl"):
    """The generate folder of `model` on the eval prompts (rto-eval made it, in the store that
    holds the model), or None."""
    key = model_key(model)
    store = os.path.dirname(os.path.dirname(os.path.realpath(model)))
    for manifest in sorted(glob.glob(os.path.join(store, "generate", "*", "manifest.json"))):
        inputs = {i["role"]: i for i in json.load(open(manifest))["inputs"]}
        if inputs.get("model", {}).get("key") == key and inputs.get("prompts", {}).get("path", "").endswith(prompts_name):
            return os.path.dirname(manifest)
    return None


def run(binary, *args, store=None):
    cmd = [os.path.join(BIN, binary), *(["--store", store] if store else []), *map(str, args)]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    return out.stdout


def annotate(store, sft, dpo, rm, data):
    out = run("token-reward-annotate", "--config", f"{CFG}/annotate.yaml", "--ref", sft, "--dpo", dpo,
              "--reward-model", rm, "--data", data, "--judge", "toy", store=store)
    return out.strip().splitlines()[-1]


def token_rows(folder):
    """Per response token: DPO reward (clipped, as written), unclipped β1·log-ratio, gold
    credit and its split by rule; per response: sentence reward, DPO return, gold score."""
    samples = pq.read_table(os.path.join(folder, "samples.parquet")).to_pylist()
    tokens = pq.read_table(os.path.join(folder, "tokens.parquet"),
                           columns=["sample_id", "position", "token", "logp_ref", "logp_dpo", "dpo_reward",
                                    "gold_credit"]).to_pylist()
    beta1 = float(pq.read_schema(os.path.join(folder, "tokens.parquet")).metadata[b"rto.beta1"])
    credit = [json.loads(line) for line in run("rto-task", "credit", "--data",
                                                os.path.join(folder, "samples.parquet")).splitlines()]
    by_sample = {}
    for t in tokens:
        by_sample.setdefault(t["sample_id"], []).append(t)
    rows = []
    for sample, words in zip(samples, credit):
        toks = sorted(by_sample.get(sample["sample_id"], []), key=lambda t: t["position"])
        word_toks = [t for t in toks if t["token"] not in SPECIAL]
        # The toy tokenizer is word-level: the judge's words are the non-special tokens.
        if [t["token"] for t in word_toks] != [w["word"] for w in words["words"]]:
            raise SystemExit(f"{folder}: sample {sample['sample_id']}: tokens do not spell the judge's words "
                             "(token_credit.py assumes the toy task's word-level tokenizer)")
        for t, w in zip(word_toks, words["words"]):
            if abs(t["gold_credit"] - w["score"]) > 1e-4:
                raise SystemExit(f"{folder}: sample {sample['sample_id']} token {t['position']}: gold_credit "
                                 f"{t['gold_credit']} but rto-task credit gives {w['score']}")
        word_of = {t["position"]: w for t, w in zip(word_toks, words["words"])}
        for t in toks:
            w = word_of.get(t["position"])
            rows.append(dict(dpo=t["dpo_reward"], raw=beta1 * (t["logp_dpo"] - t["logp_ref"]),
                             gold=t["gold_credit"], rules=(w or {}).get("rules", {})))
    return samples, rows


def analyze_one(samples, rows):
    dpo = [r["dpo"] for r in rows]
    raw = [r["raw"] for r in rows]
    gold = [r["gold"] for r in rows]
    per_rule = {}
    for rule in RULES:
        part = [r["rules"].get(rule, 0.0) for r in rows]
        fired = [i for i, p in enumerate(part) if p != 0]
        if not fired:
            continue
        entry = both(dpo, part)
        entry["tokens_fired"] = len(fired)
        # Does the sign of the DPO reward match the rule's on the tokens it touches?
        entry["sign_agreement"] = sum((dpo[i] > 0) == (part[i] > 0) for i in fired) / len(fired)
        per_rule[rule] = entry
    gold_scores = [s["gold_score"] for s in samples]
    return {
        "tokens": len(rows),
        "responses": len(samples),
        "token_dpo_reward_vs_gold_credit": both(dpo, gold),
        "token_unclipped_vs_gold_credit": both(raw, gold),
        "clipped_fraction": sum(abs(a - b) > 1e-7 for a, b in zip(dpo, raw)) / max(1, len(rows)),
        "per_rule": per_rule,
        "response_rm_vs_gold": both([s["sentence_reward"] for s in samples], gold_scores),
        "response_dpo_return_vs_gold": both([s["dpo_return"] for s in samples], gold_scores),
    }


def analyze(store, sft, rm, dpos, policies):
    """dpos / policies: name -> folder. Returns {dpo name: {response set: analysis}}."""
    report, kept = {}, {}
    for dpo_name, dpo in dpos.items():
        for set_name, model in {"sft": sft, **policies}.items():
            gen = generations_of(model)
            if gen is None:
                print(f"token_credit: no eval-prompt generations of {set_name} ({model}) (run rto-eval on it); "
                      "skipped", file=sys.stderr)
                continue
            folder = annotate(store, sft, dpo, rm, os.path.join(gen, "generations.parquet"))
            samples, rows = token_rows(folder)
            report.setdefault(dpo_name, {})[set_name] = dict(analyze_one(samples, rows), annotate_key=os.path.basename(folder))
            kept[(dpo_name, set_name)] = (samples, rows)
    return report, kept


def fmt(v):
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def markdown(report):
    lines = ["## Token-credit fidelity", "",
             "Per token: the DPO token reward (β1·log π_dpo/π_ref, clipped as PPO sees it) against the gold "
             "judge's credit of that token; per response: the RM's score and the DPO return against the gold "
             "score. Held-out responses: generations on the eval prompts. Pearson / Spearman.", "",
             "| DPO model | responses of | tokens | token: DPO reward vs gold credit | unclipped | clipped share "
             "| response: RM vs gold | response: DPO return vs gold |",
             "|---|---|---|---|---|---|---|---|"]
    for dpo_name, sets in report.items():
        for set_name, a in sets.items():
            t, u = a["token_dpo_reward_vs_gold_credit"], a["token_unclipped_vs_gold_credit"]
            r, d = a["response_rm_vs_gold"], a["response_dpo_return_vs_gold"]
            lines.append(f"| {dpo_name} | {set_name} | {a['tokens']} | {fmt(t['pearson'])} / {fmt(t['spearman'])} "
                         f"| {fmt(u['pearson'])} / {fmt(u['spearman'])} | {a['clipped_fraction']:.2f} "
                         f"| {fmt(r['pearson'])} / {fmt(r['spearman'])} | {fmt(d['pearson'])} / {fmt(d['spearman'])} |")
    lines += ["", "Per judge rule (DPO reward vs that rule's part of each token's credit, all tokens; "
              "tokens the rule touches; share of those where the DPO reward has the rule's sign):", "",
              "| DPO model | responses of | rule | tokens touched | Pearson | Spearman | sign agreement |",
              "|---|---|---|---|---|---|---|"]
    for dpo_name, sets in report.items():
        for set_name, a in sets.items():
            for rule, e in a["per_rule"].items():
                lines.append(f"| {dpo_name} | {set_name} | {rule} | {e['tokens_fired']} | {fmt(e['pearson'])} "
                             f"| {fmt(e['spearman'])} | {e['sign_agreement']:.2f} |")
    return lines


def plot(report, kept, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    (dpo_name, set_name), (samples, rows) = next(iter(kept.items()))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    ax = axes[0]
    gold = np.array([r["gold"] for r in rows])
    raw = np.array([r["raw"] for r in rows])
    levels = sorted(set(np.round(gold, 2)))
    ax.boxplot([raw[np.round(gold, 2) == g] for g in levels], positions=range(len(levels)), showfliers=False)
    ax.set_xticks(range(len(levels)), [f"{g:+.1f}" for g in levels], rotation=90, fontsize=7)
    ax.set_xlabel("gold credit of the token")
    ax.set_ylabel("β1·log π_dpo/π_ref (unclipped)")
    ax.set_title(f"DPO token reward vs gold credit ({set_name} responses)")
    ax = axes[1]
    a = report[dpo_name][set_name]["per_rule"]
    names = list(a)
    ax.bar(range(len(names)), [a[n]["spearman"] or 0 for n in names], color="tab:red", alpha=0.7, label="Spearman")
    ax.bar(range(len(names)), [a[n]["pearson"] or 0 for n in names], color="none", edgecolor="black", label="Pearson")
    ax.axhline(0, color="gray", lw=0.8)
    ax.set_xticks(range(len(names)), names, rotation=30)
    ax.set_ylabel("correlation with the rule's credit")
    ax.set_title("per judge rule")
    ax.legend(fontsize=8)
    ax = axes[2]
    ax.scatter([s["gold_score"] for s in samples], [s["sentence_reward"] for s in samples], s=6, alpha=0.5,
               label="RM score")
    ax.set_xlabel("gold score of the response")
    ax.set_ylabel("RM sentence reward")
    r = report[dpo_name][set_name]["response_rm_vs_gold"]
    ax.set_title(f"RM vs gold: Pearson {fmt(r['pearson'])}, Spearman {fmt(r['spearman'])}")
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})


def named(values):
    out = {}
    for v in values or []:
        name, _, folder = v.partition("=")
        if not folder:
            raise SystemExit(f"expected NAME=FOLDER, got {v}")
        out[name] = folder
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("store")
    p.add_argument("--sft")
    p.add_argument("--rm")
    p.add_argument("--dpo", action="append", help="NAME=FOLDER of a DPO model (default: dpo=STORE/latest/dpo)")
    p.add_argument("--policy", action="append",
                   help="NAME=FOLDER of a policy whose eval generations to score too (default: dpo, ppo, rto "
                        "from STORE/latest)")
    p.add_argument("--out", default=RESULTS)
    a = p.parse_args()
    latest = os.path.join(a.store, "latest")
    sft = a.sft or os.path.realpath(os.path.join(latest, "sft"))
    rm = a.rm or os.path.realpath(os.path.join(latest, "rm"))
    dpos = named(a.dpo) or {"dpo": os.path.realpath(os.path.join(latest, "dpo"))}
    policies = named(a.policy) or {n: os.path.realpath(os.path.join(latest, n)) for n in ["dpo", "ppo", "rto"]
                                   if os.path.exists(os.path.join(latest, n))}
    report, kept = analyze(a.store, sft, rm, dpos, policies)
    if not kept:
        raise SystemExit(f"no eval-prompt generations found in {a.store}: run `make demo` first")
    os.makedirs(a.out, exist_ok=True)
    json.dump(report, open(os.path.join(a.out, "token_credit.json"), "w"), indent=1)
    plot(report, kept, os.path.join(a.out, "token_credit.png"))
    lines = markdown(report)
    with open(os.path.join(a.out, "token_credit.md"), "w") as f:
        f.write("\n".join(lines + ["", "![token credit](token_credit.png)", ""]))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
