#!/usr/bin/env python3
"""Reference outputs from HF transformers for a model directory (used by policy/tests/hf_reference.rs).

usage: hf_reference.py MODEL_DIR < requests.json > outputs.json

requests.json: {"sequences": [[token ids], ...]}
outputs.json:  {"transformers": version, "outputs": [{"hidden": [[f32 x hidden] x len],
                "next_token_logprobs": [f32 x (len - 1)]}, ...]}

Each sequence runs alone (batch 1, no padding) in float32 with eager attention. `hidden` is the
last-layer hidden state after the final norm; log-probs are log_softmax(fp32 logits) of the
next token.
"""
import json
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM


def main() -> None:
    model_dir = sys.argv[1]
    request = json.load(sys.stdin)
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, torch_dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    outputs = []
    with torch.no_grad():
        for seq in request["sequences"]:
            ids = torch.tensor([seq], dtype=torch.long)
            hidden = model.model(input_ids=ids).last_hidden_state  # after the final norm
            logits = model.lm_head(hidden).float()
            logp = torch.log_softmax(logits[0, :-1], dim=-1)
            picked = logp.gather(1, ids[0, 1:].unsqueeze(1)).squeeze(1)
            outputs.append(
                {"hidden": hidden[0].tolist(), "next_token_logprobs": picked.tolist()}
            )
    json.dump({"transformers": transformers.__version__, "outputs": outputs}, sys.stdout)


if __name__ == "__main__":
    main()
