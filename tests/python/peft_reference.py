"""Independent reference numbers from PEFT (LoRA adapters), for the Rust LoRA parity tests.

Subcommands (paths chosen by the calling test; BATCH is json with input_ids, attention_mask):
  make BASE OUT TARGETS      a LoRA adapter (r=4, alpha=8) on the causal LM in BASE for the
                             comma-separated TARGETS, A and B random (B non-zero), saved with
                             save_pretrained; with TARGETS prefixed `score:` a SEQ_CLS adapter
  logits BASE ADAPTER BATCH OUT   logits (float32) of base + adapter, loaded by PeftModel
  scores BASE ADAPTER BATCH OUT   scores at every position of a SEQ_CLS base + adapter
  merge BASE ADAPTER OUT     merge_and_unload of base + adapter, saved as a full HF folder
"""
import json
import sys

import torch
from safetensors.torch import save_file

from hf_reference import load_batch


def causal_lm(base):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()


def seq_cls(base):
    from transformers import AutoModelForSequenceClassification
    return AutoModelForSequenceClassification.from_pretrained(base, dtype=torch.float32, num_labels=1).eval()


def make(base, out, targets):
    from peft import LoraConfig, get_peft_model
    score = targets.startswith("score:")
    targets = targets.removeprefix("score:").split(",")
    model = seq_cls(base) if score else causal_lm(base)
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets,
                        task_type="SEQ_CLS" if score else "CAUSAL_LM")
    model = get_peft_model(model, config)
    torch.manual_seed(99)
    with torch.no_grad():  # non-zero B, so the adapter changes the outputs
        for name, p in model.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                p.normal_(0.0, 0.3)
    model.save_pretrained(out)


def with_adapter(model, adapter):
    from peft import PeftModel
    return PeftModel.from_pretrained(model, adapter).eval()


def logits(base, adapter, batch_path, out):
    model = with_adapter(causal_lm(base), adapter)
    ids, mask, positions = load_batch(batch_path)
    with torch.no_grad():
        result = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    save_file({"logits": result.float().contiguous()}, out)


def scores(base, adapter, batch_path, out):
    model = with_adapter(seq_cls(base), adapter)
    ids, mask, positions = load_batch(batch_path)
    inner = model.base_model.model
    with torch.no_grad():
        hidden = inner.model(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
        per_position = inner.score(hidden).squeeze(-1)
    save_file({"scores": per_position.float().contiguous()}, out)


def merge(base, adapter, out):
    with_adapter(causal_lm(base), adapter).merge_and_unload().save_pretrained(out)


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"make": make, "logits": logits, "scores": scores, "merge": merge}[command](*args)
    if command == "make":
        print(json.dumps({"saved": args[1]}))
