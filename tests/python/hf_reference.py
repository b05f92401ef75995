"""Independent reference numbers from transformers, for the Rust parity tests.

Subcommands (all paths are folders or files chosen by the calling test):
  make KIND DIR            tiny random model of KIND saved with save_pretrained
  logits DIR BATCH OUT [DTYPE]  logits (as float32) of a padded batch (BATCH: json with
                           input_ids, attention_mask), the model loaded in DTYPE: float32
                           (default), bfloat16, or auto (the dtype its config.json names);
                           OUT also holds `bf16`, 1 when the loaded weights are bfloat16
  scores DIR BATCH OUT     sequence-classification scores (last real token) of a padded batch
  generate DIR PROMPTS N OUT   greedy continuation of N tokens for each prompt (json list of ids)
  tokenizer DIR            a small BPE tokenizer + tokenizer_config.json with a chat template
  chat DIR MESSAGES OUT    transformers' apply_chat_template text and ids for a message list
"""
import json
import sys

import torch
from safetensors.torch import save_file

KINDS = {
    # A Llama with grouped-query attention (8 query heads share 2 kv heads).
    "llama-gqa": dict(model_type="llama", num_attention_heads=8, num_key_value_heads=2),
    # Qwen2: q/k/v biases.
    "qwen2-bias": dict(model_type="qwen2", num_attention_heads=4, num_key_value_heads=4),
    # Tied input/output embeddings.
    "tied": dict(model_type="llama", num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True),
    # Llama-3.1 style rope scaling.
    "llama3-rope": dict(model_type="llama", num_attention_heads=4, num_key_value_heads=2,
                        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                          high_freq_factor=4.0, original_max_position_embeddings=64)),
}


def make(kind, out):
    from transformers import AutoConfig, AutoModelForCausalLM
    spec = dict(KINDS[kind])
    model_type = spec.pop("model_type")
    config = AutoConfig.for_model(
        model_type, vocab_size=97, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
        max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, **spec)
    torch.manual_seed(1234)
    model = AutoModelForCausalLM.from_config(config).float()
    with torch.no_grad():  # larger than init so a random model's logits are not all ~0
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    model.save_pretrained(out)


def load_batch(path):
    batch = json.load(open(path))
    ids = torch.tensor(batch["input_ids"], dtype=torch.long)
    mask = torch.tensor(batch["attention_mask"], dtype=torch.long)
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    return ids, mask, positions


def logits(model_dir, batch_path, out, dtype="float32"):
    from transformers import AutoModelForCausalLM
    dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
    ids, mask, positions = load_batch(batch_path)
    with torch.no_grad():
        out_logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    is_bf16 = torch.tensor([int(model.dtype == torch.bfloat16)])
    save_file({"logits": out_logits.float().contiguous(), "bf16": is_bf16}, out)


def scores(model_dir, batch_path, out):
    from transformers import AutoModelForSequenceClassification
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids, mask, positions = load_batch(batch_path)
    # Right padding: the last real token is the last 1 in the mask.
    last = mask.shape[1] - 1 - mask.flip(1).argmax(1)
    with torch.no_grad():
        hidden = model.model(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
        per_position = model.score(hidden).squeeze(-1)
    save_file({"scores": per_position[torch.arange(ids.shape[0]), last].contiguous()}, out)


def generate(model_dir, prompts_path, n, out):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    results = []
    for prompt in json.load(open(prompts_path)):
        ids = torch.tensor([prompt], dtype=torch.long)
        with torch.no_grad():
            gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=int(n),
                                 min_new_tokens=int(n), do_sample=False, pad_token_id=0,
                                 eos_token_id=None)
        results.append(gen[0, ids.shape[1]:].tolist())
    json.dump(results, open(out, "w"))


CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] not in ['system', 'user', 'assistant'] %}{{ raise_exception('bad role ' + m['role']) }}{% endif %}"
    "<|{{ m['role'] }}|>\n{{ m['content'] | trim }}{{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def tokenizer(out):
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    words = ["the quick brown fox jumps over the lazy dog", "hello world", "<|user|>", "<|assistant|>",
             "token rewards are dense", "a b c d e f g h i j k l m n o p"] * 20
    trainer = trainers.BpeTrainer(vocab_size=90, special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(words, trainer)
    tok.save(f"{out}/tokenizer.json")
    json.dump({"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>",
               "chat_template": CHAT_TEMPLATE, "tokenizer_class": "PreTrainedTokenizerFast"},
              open(f"{out}/tokenizer_config.json", "w"))


def chat(model_dir, messages_path, out):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model_dir)
    messages = json.load(open(messages_path))
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    json.dump({"text": text, "ids": ids}, open(out, "w"))


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"make": make, "logits": logits, "scores": scores, "generate": generate,
     "tokenizer": tokenizer, "chat": chat}[command](*args)
