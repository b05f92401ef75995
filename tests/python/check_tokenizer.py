"""Reference side of tests/tokenizer.rs: what transformers does with the task tokenizer folder.

usage: check_tokenizer.py TOKENIZER_DIR INPUT_JSON OUTPUT_JSON
INPUT_JSON: {"messages": [{role, content}, ...], "texts": [str, ...]}
OUTPUT_JSON: {"chat_text", "chat_ids", "text_ids": [[int]], "decoded": [str],
              "bos_token", "eos_token", "pad_token", "eos_token_id", "pad_token_id", "vocab_size"}
"""
import json
import sys

from transformers import AutoTokenizer

tok_dir, in_path, out_path = sys.argv[1:4]
inp = json.load(open(in_path))
tok = AutoTokenizer.from_pretrained(tok_dir)
msgs = inp["messages"]
chat_text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
chat_ids = tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True)
# transformers 5 returns a BatchEncoding here, 4.x a plain list.
if not isinstance(chat_ids, list):
    chat_ids = chat_ids["input_ids"]
text_ids = [tok(t, add_special_tokens=False)["input_ids"] for t in inp["texts"]]
decoded = [tok.decode(ids, skip_special_tokens=True) for ids in text_ids]
out = {
    "chat_text": chat_text,
    "chat_ids": list(chat_ids),
    "text_ids": text_ids,
    "decoded": decoded,
    "bos_token": tok.bos_token,
    "eos_token": tok.eos_token,
    "pad_token": tok.pad_token,
    "eos_token_id": tok.eos_token_id,
    "pad_token_id": tok.pad_token_id,
    "vocab_size": len(tok),
}
json.dump(out, open(out_path, "w"))
