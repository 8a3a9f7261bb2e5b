"""Model speed: forward and training-step time per sample, samples/s, peak RSS and achieved GFLOP/s of a
preset, and in the same run the same model with plain softmax(QKᵀ)V attention in fp32 and NCHW
convolutions as the baseline (what the research code runs).

    python benchmarks/model_speed.py --preset crops_S2_H_P_jun --precision bf16 [--json PATH] [--smoke]

Each variant runs in its own child process so that peak RSS is its own. A training step is forward, the
recipe's loss (per-level cross-entropy, summed), backward and an AdamW step. Times are the median over
``--steps`` timed steps after one warm-up step (the minimum is reported too: this machine is shared).
Achieved GFLOP/s counts forward FLOPs (meta-device count, batch × per-sample) for the forward pass and
3× forward FLOPs (backward ≈ 2× forward) for a training step.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipelines.settings import parse_overrides  # noqa: E402  (the same --set syntax as h2crop train)

#: how the profiled training step's operator time is grouped (first matching rule wins)
OP_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("attention", ("scaled_dot_product", "flash_attention", "_softmax")),
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")),
    ("convolution", ("convolution",)),
    ("layout and dtype copies", ("aten::copy_", "aten::cat", "aten::clone", "aten::contiguous")),
    ("optimizer", ("adam",)),
)


def op_group(name: str) -> str:
    return next(
        (group for group, keys in OP_GROUPS if any(key in name for key in keys)), "other (norms, activations, ...)"
    )


def profile_breakdown(step) -> dict[str, float]:
    """Seconds of one call of ``step`` per operator group (self CPU time, summed over threads' wall clock)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    groups: dict[str, float] = {}
    for event in prof.key_averages():
        group = op_group(event.key)
        groups[group] = groups.get(group, 0.0) + event.self_cpu_time_total / 1e6
    return dict(sorted(groups.items(), key=lambda item: -item[1]))


def measure(
    preset: str,
    precision: str,
    attention: str,
    batch: int,
    tile: int,
    steps: int,
    checkpointing: bool,
    overrides: dict | None = None,
    profile: bool = False,
) -> dict:
    """Run one variant in this process and return its numbers."""
    import torch
    import torch.nn.functional as F

    from h2crop_core.models import DualStreamModel, get_preset
    from h2crop_core.models.summary import build_meta, example_inputs, forward_flops

    config = get_preset(
        preset, precision=precision, attention=attention, checkpointing=checkpointing, **(overrides or {})
    )
    flops = forward_flops(build_meta(config), example_inputs(config, batch=1, tile=tile))["total"] * batch
    torch.manual_seed(0)
    model = DualStreamModel(config)
    inputs = example_inputs(config, batch=batch, tile=tile, device="cpu", generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 7, (batch, 4, tile, tile))
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-5, weight_decay=5e-4, fused=True)

    def forward() -> None:
        with torch.no_grad():
            model(**inputs)

    def train_step() -> None:
        logits = model(**inputs)
        loss = sum(
            F.cross_entropy(level, labels[:, k % 4].clamp(max=level.shape[1] - 1)) for k, level in enumerate(logits)
        )
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def timed(fn, mode: str) -> list[float]:
        model.train(mode == "train")
        times = []
        for _ in range(steps + 1):  # the first call warms up allocator and kernels
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return times[1:]

    forward_times = timed(forward, "eval")
    train_times = timed(train_step, "train")
    forward_s, train_s = statistics.median(forward_times), statistics.median(train_times)
    breakdown = profile_breakdown(train_step) if profile else None
    return {
        "preset": preset,
        "precision": precision,
        "attention": attention,
        "checkpointing": checkpointing,
        "overrides": overrides or {},
        "batch": batch,
        "tile": tile,
        "forward_gflops_per_sample": flops / batch / 1e9,
        "forward_s_per_sample": forward_s / batch,
        "forward_min_s_per_sample": min(forward_times) / batch,
        "train_step_s_per_sample": train_s / batch,
        "train_step_min_s_per_sample": min(train_times) / batch,
        "train_samples_per_s": batch / train_s,
        "forward_gflop_per_s": flops / forward_s / 1e9,
        "train_gflop_per_s": 3 * flops / train_s / 1e9,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
        "threads": torch.get_num_threads(),
        "train_step_breakdown_s": breakdown,
        "torch": torch.__version__,
    }


def run_variant(args: argparse.Namespace, precision: str, attention: str, sets: list[str]) -> dict:
    """Measure one variant in a fresh child process (clean peak RSS)."""
    command = (
        [
            sys.executable,
            __file__,
            "--worker",
            "--preset",
            args.preset,
            "--precision",
            precision,
            "--attention",
            attention,
            "--batch",
            str(args.batch),
            "--tile",
            str(args.tile),
            "--steps",
            str(args.steps),
        ]
        + (["--checkpointing"] if args.checkpointing else [])
        + (["--profile"] if args.profile and attention == "sdpa" else [])
        + [f"--set={pair}" for pair in sets]
    )
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    if done.returncode != 0:
        raise RuntimeError(f"variant {precision}/{attention} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_table(rows: list[dict]) -> None:
    header = (
        f"{'variant':40s} {'fwd s/sample':>12s} {'train s/sample':>14s} {'(min)':>7s} {'samples/s':>9s} "
        f"{'fwd GF/s':>9s} {'train GF/s':>10s} {'peak RSS GB':>11s}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        name = (
            f"{r['precision']} {r['attention']}"
            + (" ckpt" if r["checkpointing"] else "")
            + (" (baseline)" if r.get("baseline") else "")
        )
        name += "".join(f" {k}={v}" for k, v in r.get("overrides", {}).items())
        print(
            f"{name:40s} {r['forward_s_per_sample']:12.2f} {r['train_step_s_per_sample']:14.2f} {r['train_step_min_s_per_sample']:7.2f} "
            f"{r['train_samples_per_s']:9.3f} {r['forward_gflop_per_s']:9.0f} {r['train_gflop_per_s']:10.0f} {r['peak_rss_gb']:11.2f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="crops_S2_H_P_jun")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--attention", choices=("sdpa", "plain"), default="sdpa", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--tile", type=int, default=192)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per measurement (after one warm-up)")
    parser.add_argument(
        "--checkpointing", action="store_true", help="activation checkpointing of the transformer blocks"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="ModelConfig override, e.g. --set spatial_patch=2 (repeatable)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="also profile one training step and print where its time goes"
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the plain-attention fp32 baseline")
    parser.add_argument(
        "--json", type=Path, help=f"where to write results (default {RESULTS}/model_speed_<preset>_<precision>.json)"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--smoke", action="store_true", help="the tiny preset on a 96-px tile, one timed step (checks that it runs)"
    )
    args = parser.parse_args()
    if args.smoke:
        args.preset, args.tile, args.steps = "tiny_" + args.preset.removeprefix("tiny_"), 96, 1

    if args.worker:
        print(
            json.dumps(
                measure(
                    args.preset,
                    args.precision,
                    args.attention,
                    args.batch,
                    args.tile,
                    args.steps,
                    args.checkpointing,
                    parse_overrides(args.set),
                    args.profile,
                )
            )
        )
        return 0

    rows = [run_variant(args, args.precision, "sdpa", args.set)]
    if not args.no_baseline:
        baseline = run_variant(args, "fp32", "plain", args.set + ["channels_last=False"])
        baseline["baseline"] = True
        rows.append(baseline)
    print(
        f"{args.preset}, batch {args.batch}, {args.tile}×{args.tile}, {rows[0]['forward_gflops_per_sample']:.0f} forward GFLOPs/sample, "
        f"{rows[0]['threads']} threads, {platform.processor() or platform.machine()}"
    )
    print_table(rows)
    breakdown = rows[0].get("train_step_breakdown_s")
    if breakdown:
        total = sum(breakdown.values())
        print(f"\nwhere one profiled {rows[0]['precision']} training step goes ({total:.2f} s of operator time):")
        for group, seconds in breakdown.items():
            print(f"  {group:32s} {seconds:6.2f} s  {seconds / total:5.1%}")
    if not args.no_baseline:
        print(
            f"training step speed-up over the plain fp32 baseline: {rows[1]['train_step_s_per_sample'] / rows[0]['train_step_s_per_sample']:.1f}x"
        )
    suffix = "".join(f"_{pair.replace('=', '')}" for pair in args.set) + ("_ckpt" if args.checkpointing else "")
    output = args.json or RESULTS / f"model_speed_{args.preset}_{args.precision}{suffix}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"results": rows}, indent=2))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
