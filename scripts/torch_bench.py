#!/usr/bin/env python3
"""PyTorch + transformers on the same model and batch as `grail bench policy`, for comparison.

    python3 scripts/torch_bench.py MODEL [--threads N] [--group 16] [--prompt-len 128]
                                         [--new-tokens 128] [--device cpu|cuda] [--dtype f32|bf16]
                                         [--groups K --reps N]  (generation only, K groups)

MODEL is an HF directory (e.g. from `grail model tiny --out DIR`), `small` (our bench's seeded
~48M Llama-style shape), `smollm2-shape` (SmolLM2-135M's
architecture, random weights), or a .gguf file (loaded with
transformers' `gguf_file=`, dequantised; needs `pip install gguf`). Measures, like ours:
  * generation: one group of G completions of one prompt (KV cache, temperature 0.7, top-k 50,
    top-p 0.9, eos ignored so every row runs the full budget): generated tokens / s;
  * proof forward, miner: one batched forward over the G full sequences, final-norm hidden
    states + f32 next-token log-probs at every position;
  * proof forward, trunk: the decoder layers alone (hidden states; the verifier's cost);
  * GRPO-like training step: forward + token-level policy-gradient loss + backward over
    micro-batches (default 8), then AdamW; all tokens of the batch / step time.
The prompt is the same deterministic id pattern `(i * 7919 + 13) % vocab` as ours.
"""

import argparse
import os
import resource
import sys
import time

import torch


def smollm2_shape():
    """SmolLM2-135M's architecture with random weights (matches `grail bench policy --model
    smollm2-shape`): the real model's throughput without its file."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, head_dim=64, rms_norm_eps=1e-5,
        rope_theta=100000.0, max_position_embeddings=8192, tie_word_embeddings=True))


def small():
    """`grail bench policy --model small`'s seeded ~48M Llama-style model, random weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=32000, hidden_size=512, intermediate_size=1536, num_hidden_layers=10,
        num_attention_heads=8, num_key_value_heads=4, head_dim=64, rms_norm_eps=1e-6,
        rope_theta=10000.0, max_position_embeddings=4096, tie_word_embeddings=True))


def load(path, device, dtype):
    from transformers import AutoModelForCausalLM

    if path == "smollm2-shape":
        model = smollm2_shape().to(dtype)
    elif path == "small":
        model = small().to(dtype)
    elif path.endswith(".gguf"):
        folder, name = os.path.split(os.path.abspath(path))
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    return model.to(device).eval()


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t


def compare_groups(model, a, gen_kwargs, vocab):
    """K groups (a different prompt each, same length) generated one generate() call per group
    and in one call over all rows; prints tok/s of every repetition and the medians."""
    prompts = [torch.tensor([[(i * 7919 + 13 + g) % vocab for i in range(a.prompt_len)]],
                            device=a.device).repeat(a.group, 1) for g in range(a.groups)]
    tokens = a.groups * a.group * a.new_tokens
    per_group, batched = [], []
    with torch.no_grad():
        for rep in range(a.reps):
            _, s = timed(lambda: [model.generate(p, **gen_kwargs) for p in prompts], a.device)
            per_group.append(tokens / s)
            _, s = timed(lambda: model.generate(torch.cat(prompts), **gen_kwargs), a.device)
            batched.append(tokens / s)
            print(f"rep {rep}: per group {per_group[-1]:.0f} tok/s, batched {batched[-1]:.0f} tok/s",
                  file=sys.stderr)
    med = lambda v: sorted(v)[len(v) // 2]
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads): {a.groups} groups x "
          f"{a.group} rows, prompt {a.prompt_len}, {a.new_tokens} new")
    print(f"per group: {' '.join(f'{x:.0f}' for x in per_group)} tok/s (median {med(per_group):.0f})")
    print(f"batched:   {' '.join(f'{x:.0f}' for x in batched)} tok/s (median {med(batched):.0f})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--group", type=int, default=16)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--groups", type=int, default=0,
                    help="generation only: K groups one generate() each vs one generate() over "
                         "all K x G rows (as `generation_bench --groups K`), interleaved")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dtype = torch.float32 if a.dtype == "f32" else torch.bfloat16
    model = load(a.model, a.device, dtype)
    cfg = model.config
    vocab = cfg.vocab_size
    params = sum(p.numel() for p in model.parameters())
    prompt = torch.tensor(
        [[(i * 7919 + 13) % vocab for i in range(a.prompt_len)]], device=a.device
    )
    rows = []

    def row(name, value, unit, note=""):
        rows.append((name, value, unit, note))

    # Warm-up (allocator, kernels) on small shapes.
    with torch.no_grad():
        model.generate(prompt[:, :8], max_new_tokens=4, min_new_tokens=4, do_sample=True,
                       pad_token_id=0)

    # Generation: one group of G completions, batched with a KV cache.
    gen_kwargs = dict(
        do_sample=True, temperature=0.7, top_k=50, top_p=0.9,
        max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens, pad_token_id=0,
    )
    if a.groups:
        return compare_groups(model, a, gen_kwargs, vocab)
    with torch.no_grad():
        out, gen_s = timed(
            lambda: model.generate(prompt.repeat(a.group, 1), **gen_kwargs), a.device
        )
    generated = (out.shape[1] - a.prompt_len) * a.group
    row("generation", generated / gen_s, "tok/s",
        f"group of {a.group}, prompt {a.prompt_len}, {a.new_tokens} new each (HF generate)")

    seqs = out  # [G, prompt + new]
    tokens = seqs.numel()

    def miner():
        o = model(seqs, output_hidden_states=True)
        logits = o.logits[:, :-1].float()
        logp = torch.log_softmax(logits, dim=-1)
        picked = logp.gather(2, seqs[:, 1:].unsqueeze(2)).squeeze(2)
        return o.hidden_states[-1], picked

    with torch.no_grad():
        _, trunk_s = timed(lambda: model.model(seqs).last_hidden_state, a.device)
        _, miner_s = timed(miner, a.device)
    row("proof forward, trunk (hidden only)", tokens / trunk_s, "tok/s",
        f"{a.group} × {seqs.shape[1]} tokens")
    row("proof forward, miner", tokens / miner_s, "tok/s",
        "hidden + f32 next-token log-probs at every position")
    row("proof (miner) / generation", tokens / miner_s / (generated / gen_s), "×")

    # GRPO-like step: token-level PG loss on completion tokens, micro-batches of 8, AdamW.
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, betas=(0.9, 0.95),
                            weight_decay=0.1)
    adv = torch.tensor([1.0 if i % 2 == 0 else -1.0 for i in range(a.group)], device=a.device)

    def train_step():
        opt.zero_grad(set_to_none=True)
        mb = a.micro_batch
        for start in range(0, a.group, mb):
            batch = seqs[start:start + mb]
            logits = model(batch).logits[:, a.prompt_len - 1:-1].float()
            logp = torch.log_softmax(logits, dim=-1)
            picked = logp.gather(2, batch[:, a.prompt_len:].unsqueeze(2)).squeeze(2)
            ratio = torch.exp(picked - picked.detach())
            loss = -(ratio * adv[start:start + mb, None]).sum() / picked.numel()
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()

    train_step()  # warm-up (optimizer state allocation)
    _, train_s = timed(train_step, a.device)
    row("GRPO-like training", tokens / train_s, "tok/s",
        f"{a.group} sequences/step, micro-batches of {a.micro_batch}, {train_s * 1e3:.0f} ms/step")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row("peak RSS", rss, "MiB", "whole process")

    print(f"torch bench: {a.model} ({params / 1e6:.2f}M params) on {a.device} {a.dtype}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"| {'measure':<36} | {'value':>12} | {'unit':<6} | note")
    print(f"|{'-' * 38}|{'-' * 14}|{'-' * 8}|------")
    for name, value, unit, note in rows:
        print(f"| {name:<36} | {value:>12.2f} | {unit:<6} | {note}")


if __name__ == "__main__":
    sys.exit(main())
