#!/usr/bin/env python3
"""PyTorch's masked AdamW step on the batch `maskscape bench train --dump-batch FILE`
wrote: the reference the train step's speed goal is stated against.

The paper's dense-mask formulation: the trained q/v weights are W + M * D with M the
0/1 mask (the dumped `mask_idx` over the flat parameter vector, named_parameters()
order) and D a dense tensor per masked weight that AdamW steps; every other
parameter is frozen (requires_grad off), so autograd forms the input adjoints and
the gradients of the D tensors only. The loss is the paper's candidate scoring: each
candidate's mean token log-probability (logits at positions answer_start-1 ..
answer_end-1), cross-entropy over a question's candidates. Logits are computed at
every position, as HuggingFace's forward does in training. One step: zero_grad,
forward, loss, backward, clip_grad_norm_ to 1, AdamW.step.

    VENV/bin/python scripts/torch_train_step_bench.py --batch batch.safetensors \\
        --config opt-125m --dtype float32 --reps 5

Prints `step_ms <median>` (and each run's time). Random weights from a fixed seed.
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import OPTConfig, OPTForCausalLM

CONFIGS = {
    "opt-mini": dict(hidden_size=256, num_hidden_layers=4, ffn_dim=1024, num_attention_heads=4,
                     vocab_size=2048, max_position_embeddings=512, word_embed_proj_dim=256),
    "opt-125m": dict(hidden_size=768, num_hidden_layers=12, ffn_dim=3072, num_attention_heads=12,
                     vocab_size=50272, max_position_embeddings=2048, word_embed_proj_dim=768),
}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", required=True, help="the file `maskscape bench train --dump-batch` wrote")
    p.add_argument("--config", default="opt-125m", choices=sorted(CONFIGS))
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    cfg = OPTConfig(**CONFIGS[args.config], do_layer_norm_before=True)
    cfg._attn_implementation = "eager"
    dev = torch.device(args.device)
    model = OPTForCausalLM(cfg).to(dtype).to(dev).eval()
    for q in model.parameters():
        q.requires_grad_(False)

    b = {k: v.to(dev) for k, v in load_file(args.batch).items()}
    ids, am = b["input_ids"], b["attention_mask"]
    start, end, question, gold = b["answer_start"], b["answer_end"], b["question"], b["gold"]
    flat = b["mask_idx"]

    # the dense masks of the masked tensors
    names = [n for n, _ in model.named_parameters()]
    base = dict(model.named_parameters())
    masks, offset = {}, 0
    for n in names:
        size = base[n].numel()
        inside = flat[(flat >= offset) & (flat < offset + size)] - offset
        if inside.numel():
            m = torch.zeros(size, dtype=dtype, device=dev)
            m[inside] = 1.0
            masks[n] = m.view(base[n].shape)
        offset += size
    if int(flat.max()) >= offset:
        raise SystemExit(f"--batch: its mask indexes {int(flat.max()) + 1} parameters, --config {args.config} has {offset}")
    deltas = {n: torch.zeros_like(base[n], requires_grad=True) for n in masks}
    opt = torch.optim.AdamW(deltas.values(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)

    rows = ids.shape[0]
    # the positions whose log-probabilities make each row's candidate score
    pick = torch.zeros(rows, ids.shape[1] - 1, dtype=dtype, device=dev)
    for r in range(rows):
        pick[r, start[r] - 1:end[r] - 1] = 1.0 / float(end[r] - start[r])
    questions = int(question.max()) + 1

    def step():
        opt.zero_grad(set_to_none=True)
        params = {n: (base[n] + masks[n] * deltas[n]) if n in deltas else base[n] for n in names}
        logits = torch.func.functional_call(model, params, (ids,), {"attention_mask": am}).logits
        lp = F.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        scores = (lp * pick).sum(-1)
        per_question = [scores[question == q] for q in range(questions)]
        loss = torch.stack([F.cross_entropy(s.unsqueeze(0), gold[q:q + 1]) for q, s in enumerate(per_question)]).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(deltas.values()), 1.0)
        opt.step()
        return loss.item()  # waits for the device

    times = []
    for i in range(args.warmup + args.reps):
        t = time.perf_counter()
        step()
        if i >= args.warmup:
            times.append((time.perf_counter() - t) * 1e3)
    print("runs_ms " + " ".join(f"{x:.1f}" for x in times))
    print(f"step_ms {statistics.median(times):.2f}")


if __name__ == "__main__":
    main()
