"""Attention kernels on this machine, at the shape of the EnMAP spatial branch (the model's most expensive
part): forward and backward seconds and achieved TFLOP/s of each kernel PyTorch offers on a CPU.

    python benchmarks/attention_kernels.py [--tokens 4096 --heads 12 --head-dim 64] [--json PATH] [--smoke]

The faithful ``crops_S2_H_P_jun`` runs six such attentions per training step; the table says what they
cost at best, whatever the rest of the model does. FLOPs: forward 4·N²·d per head (QKᵀ and PV), backward
10·N²·d (flash recomputes QKᵀ, then four more products). Times are the median of ``--reps`` calls after
one warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

RESULTS = Path(__file__).resolve().parent / "results"


def plain(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(QKᵀ/√d)V with the attention matrix materialised (the research code's formula)."""
    return ((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1) @ v


def flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v)


def sdpa_math(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(q, k, v)


KERNELS = {
    "sdpa (flash) bf16": (flash, torch.bfloat16),
    "sdpa (flash) fp16": (flash, torch.float16),
    "sdpa (flash) fp32": (flash, torch.float32),
    "sdpa (math backend) bf16": (sdpa_math, torch.bfloat16),
    "plain softmax(QKᵀ)V bf16": (plain, torch.bfloat16),
    "plain softmax(QKᵀ)V fp32": (plain, torch.float32),
}


def measure(fn, dtype: torch.dtype, tokens: int, heads: int, head_dim: int, reps: int) -> tuple[float, float]:
    generator = torch.Generator().manual_seed(0)
    q, k, v, grad = (torch.randn(1, heads, tokens, head_dim, generator=generator).to(dtype) for _ in range(4))
    for t in (q, k, v):
        t.requires_grad_(True)
    forward, backward = [], []
    for _ in range(reps + 1):
        q.grad = k.grad = v.grad = None
        start = time.perf_counter()
        out = fn(q, k, v)
        middle = time.perf_counter()
        out.backward(grad)
        forward.append(middle - start)
        backward.append(time.perf_counter() - middle)
    return statistics.median(forward[1:]), statistics.median(backward[1:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=64 * 64, help="sequence length (EnMAP pixels of a tile)")
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=6, help="attentions per training step (spatial branch depth)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", type=Path, default=RESULTS / "attention_kernels.json")
    parser.add_argument(
        "--smoke", action="store_true", help="a tiny shape, one repetition (checks that every kernel runs)"
    )
    args = parser.parse_args()
    if args.smoke:
        args.tokens, args.heads, args.head_dim, args.reps = 256, 2, 16, 1

    per_head = args.tokens**2 * args.head_dim * args.heads
    flops_forward, flops_backward = 4 * per_head, 10 * per_head
    print(
        f"attention over {args.tokens} tokens, {args.heads} heads of {args.head_dim}, batch 1, {torch.get_num_threads()} threads; "
        f"{flops_forward / 1e9:.1f} GFLOP forward, {flops_backward / 1e9:.1f} backward"
    )
    header = f"{'kernel':28s} {'forward s':>9s} {'backward s':>10s} {'fwd TF/s':>8s} {'bwd TF/s':>8s} {f'x{args.blocks} fwd+bwd s':>14s}"
    print(header)
    print("-" * len(header))
    rows = []
    for name, (fn, dtype) in KERNELS.items():
        forward, backward = measure(fn, dtype, args.tokens, args.heads, args.head_dim, args.reps)
        row = {
            "kernel": name,
            "forward_s": forward,
            "backward_s": backward,
            "forward_tflop_per_s": flops_forward / forward / 1e12,
            "backward_tflop_per_s": flops_backward / backward / 1e12,
            "per_training_step_s": args.blocks * (forward + backward),
        }
        rows.append(row)
        print(
            f"{name:28s} {forward:9.3f} {backward:10.3f} {row['forward_tflop_per_s']:8.2f} "
            f"{row['backward_tflop_per_s']:8.2f} {row['per_training_step_s']:14.2f}"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps({"tokens": args.tokens, "heads": args.heads, "head_dim": args.head_dim, "results": rows}, indent=2)
    )
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
