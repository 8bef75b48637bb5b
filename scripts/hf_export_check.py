#!/usr/bin/env python3
"""Loads a `grail export` directory with transformers and reports what it computes (used by
policy/tests/hf_export.rs).

usage: hf_export_check.py MODEL_DIR < request.json > outputs.json

request.json: {"texts": [str], "sequences": [[token ids]], "chat": [{"role", "content"}]}
outputs.json: {"transformers": version, "torch": version,
               "tokens": [[ids] per text]          (AutoTokenizer, no special tokens added),
               "decoded": [str per text]            (decode of those ids),
               "logits": [[f32 x len*vocab] per sequence] (AutoModelForCausalLM, float32),
               "chat": str                          (apply_chat_template, generation prompt)}

Each sequence runs alone (batch 1, no padding) in float32 with eager attention.
"""
import json
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer


def main() -> None:
    model_dir = sys.argv[1]
    request = json.load(sys.stdin)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    tokens = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in request["texts"]]
    decoded = [tokenizer.decode(ids) for ids in tokens]
    logits = []
    with torch.no_grad():
        for seq in request["sequences"]:
            ids = torch.tensor([seq], dtype=torch.long)
            logits.append(model(input_ids=ids).logits[0].float().flatten().tolist())
    chat = None
    if request.get("chat") and tokenizer.chat_template:
        chat = tokenizer.apply_chat_template(
            request["chat"], tokenize=False, add_generation_prompt=True
        )
    json.dump(
        {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "tokens": tokens,
            "decoded": decoded,
            "logits": logits,
            "chat": chat,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
