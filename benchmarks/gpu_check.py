"""GPU check: one short run that measures what a GPU machine gives the benchmark model, written to one JSON.

On a single-GPU machine with PyTorch, timm, einops and h5py (no Ray, MLflow or rasterio needed, nothing
installed: the shell wrapper puts the repository on ``PYTHONPATH``)::

    bash benchmarks/gpu_check.sh [--json PATH] [--steps 10] [--warmup 3]      # a few minutes on an H200 (estimate)
    bash benchmarks/gpu_check.sh --smoke --json /tmp/gc.json                  # CPU, tiny model, seconds

It measures, in one process:

1. the environment (torch, CUDA, device, capability, bf16 support);
2. the training step of ``crops_S2_H_P_jun`` (forward, the recipe's summed per-level cross-entropy,
   backward, AdamW) at batch 4 and 8: SDPA attention under bf16 autocast against the baseline in the same
   run, plain softmax(QKᵀ)V attention in fp32 with NCHW convolutions (as ``model_speed.py``'s baseline);
   median and min step time over ``--steps`` timed steps after ``--warmup``, samples/s, speed-up, peak GPU
   memory. A baseline that runs out of GPU memory is recorded as ``"oom"``, not as a failure;
3. achieved TFLOP/s of each step (3× the forward FLOPs counted on the meta device by
   :mod:`h2crop_core.models.summary`) against a bf16 matmul measured in the same run;
4. an eval-mode forward with consistent decoding: shapes, and every pixel's four ids a taxonomy path.

The exit code is 0 only when every part ran (``"ok": true`` in the JSON); 2 without CUDA unless ``--smoke``.
Only modules of :mod:`h2crop_core` that import none of Ray, MLflow, rasterio, pyarrow or matplotlib are
used, so the script runs on a bare GPU machine.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))
from h2crop_core.data.synth.tree import DEFAULT_TREE, generate_taxonomy  # noqa: E402  (NumPy only, no rasterio)
from h2crop_core.files import write_text_atomic  # noqa: E402
from h2crop_core.models import DualStreamModel, get_preset  # noqa: E402
from h2crop_core.models.heads import decode_consistent, decode_with_confidence  # noqa: E402
from h2crop_core.models.loss import hierarchical_loss  # noqa: E402
from h2crop_core.models.presets import ModelConfig  # noqa: E402
from h2crop_core.models.summary import build_meta, example_inputs, forward_flops  # noqa: E402
from h2crop_core.taxonomy import NUM_LEVELS, UNLABELLED, Taxonomy  # noqa: E402

SHARED_TAXONOMY = ROOT.parent / "shared" / "data" / "cascade_labels.csv"
GENERATED = "generated"
MAIN, BASELINE = "sdpa_bf16", "plain_fp32"
#: variant -> ModelConfig overrides; the baseline is model_speed.py's (plain attention, fp32, NCHW convs)
VARIANTS: dict[str, dict] = {
    MAIN: {"precision": "bf16", "attention": "sdpa"},
    BASELINE: {"precision": "fp32", "attention": "plain", "channels_last": False},
}
NO_CUDA = "gpu_check: no CUDA device; use --smoke to check the script on CPU"


# ---------------------------------------------------------------------------------------------- helpers
def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, warmup: int, steps: int) -> list[float]:
    """Seconds of each of ``steps`` calls of ``fn`` after ``warmup`` untimed ones, synchronised around each."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def free_memory(device: torch.device) -> None:
    """Drop unreferenced tensors and the allocator's cache, then reset the peak-memory counter."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gb(device: torch.device) -> float | None:
    """Peak allocated GPU memory since the last :func:`free_memory` (None on CPU)."""
    return torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None


def environment(device: torch.device) -> dict:
    """Versions and the device's name, compute capability and bf16 support."""
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": device.type,
        "device_name": platform.processor() or platform.machine(),
        "capability": None,
        "bf16_supported": None,
        "cpu_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            device_name=props.name,
            capability=f"{props.major}.{props.minor}",
            bf16_supported=torch.cuda.is_bf16_supported(),
            gpu_memory_gb=props.total_memory / 1e9,
            cudnn=torch.backends.cudnn.version(),
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            tf32_cudnn=torch.backends.cudnn.allow_tf32,
        )
    return info


def load_taxonomy(choice: str | None) -> Taxonomy:
    """The CSV at ``choice``; the generated 6/36/82/101 tree for ``"generated"``; by default the benchmark's
    CSV in ../shared when present, else the generated tree."""
    if choice is None and SHARED_TAXONOMY.is_file():
        choice = str(SHARED_TAXONOMY)
    return generate_taxonomy(DEFAULT_TREE) if choice in (None, GENERATED) else Taxonomy.from_csv(choice)


def random_batch(
    config: ModelConfig, taxonomy: Taxonomy, batch: int, tile: int, device: torch.device
) -> tuple[dict, torch.Tensor]:
    """Random model inputs of the preset's shapes and random labels that are taxonomy paths (a corner 255)."""
    generator = torch.Generator().manual_seed(0)
    inputs = {
        k: v.to(device)
        for k, v in example_inputs(config, batch=batch, tile=tile, device="cpu", generator=generator).items()
    }
    leaves = torch.randint(0, len(taxonomy.paths), (batch, tile, tile), generator=generator)
    labels = torch.as_tensor(taxonomy.paths)[leaves].permute(0, 3, 1, 2).to(torch.uint8)
    labels[..., :2, :2] = UNLABELLED
    return inputs, labels.to(device)


def build_model(config: ModelConfig, device: torch.device) -> DualStreamModel:
    """The model with seeded weights, initialised directly on ``device``."""
    torch.manual_seed(0)
    with torch.device(device):
        return DualStreamModel(config).to(device)


# ------------------------------------------------------------------------------------------- the parts
def measure_training(
    config: ModelConfig, taxonomy: Taxonomy, batch: int, args: argparse.Namespace, device: torch.device
) -> dict:
    """Time ``args.steps`` training steps (forward, summed loss, backward, AdamW) of ``config`` at ``batch``."""
    free_memory(device)
    model = build_model(config, device).train()
    inputs, labels = random_batch(config, taxonomy, batch, args.tile, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-5, weight_decay=5e-4, fused=True)
    autocast = config.precision == "bf16"
    losses: list[torch.Tensor] = []

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16) if autocast else contextlib.nullcontext():
            loss = hierarchical_loss(model(**inputs), labels, config.levels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())

    times = timed(step, device, args.warmup, args.steps)
    median = statistics.median(times)
    loss = float(losses[-1])
    if not math.isfinite(loss):
        raise FloatingPointError(f"training loss is {loss}")
    return {
        "status": "ok",
        "median_s": median,
        "min_s": min(times),
        "samples_per_s": batch / median,
        "peak_memory_gb": peak_memory_gb(device),
        "final_loss": loss,
        "times_s": times,
    }


def run_training(taxonomy: Taxonomy, args: argparse.Namespace, device: torch.device) -> list[dict]:
    """Both variants at every batch size: one row each, ``status`` ok, oom or error; FLOP rates filled in."""
    rows = []
    for batch in args.batches:
        for name, overrides in VARIANTS.items():
            config = get_preset(args.preset, num_classes=taxonomy.num_classes, **overrides)
            flops = forward_flops(build_meta(config), example_inputs(config, batch=1, tile=args.tile))["total"]
            row = {
                "variant": name,
                "baseline": name == BASELINE,
                "batch": batch,
                **overrides,
                "forward_gflops_per_sample": flops / 1e9,
            }
            try:
                row |= measure_training(config, taxonomy, batch, args, device)
                row["train_tflop_per_s"] = 3 * flops * batch / row["median_s"] / 1e12
            except torch.cuda.OutOfMemoryError:
                row |= {"status": "oom", "peak_memory_gb": peak_memory_gb(device)}
            except Exception as error:  # recorded: the other parts still run
                traceback.print_exc()
                row |= {"status": "error", "error": f"{type(error).__name__}: {error}"}
            free_memory(device)
            rows.append(row)
            print(
                f"  {name} batch {batch}: {row['status']}"
                + (f", {row['median_s']:.3f} s/step" if row["status"] == "ok" else ""),
                flush=True,
            )
    for row in rows:
        baseline = next(r for r in rows if r["baseline"] and r["batch"] == row["batch"])
        both = row["status"] == baseline["status"] == "ok"
        row["speedup_vs_baseline"] = baseline["median_s"] / row["median_s"] if both else None
    return rows


def measure_matmul(size: int, reps: int, device: torch.device) -> dict:
    """A bf16 ``size``² @ ``size``² matmul: median and best TFLOP/s over ``reps`` timed products."""
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=generator).to(device, torch.bfloat16) for _ in range(2))
    times = timed(lambda: a @ b, device, warmup=2, steps=reps)
    flop = 2 * size**3
    return {
        "size": size,
        "dtype": "bf16",
        "reps": reps,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "tflop_per_s": flop / statistics.median(times) / 1e12,
        "best_tflop_per_s": flop / min(times) / 1e12,
    }


def check_decode(taxonomy: Taxonomy, args: argparse.Namespace, device: torch.device) -> dict:
    """Eval-mode forward of the main variant and consistent decoding: shapes, valid paths, confidences."""
    free_memory(device)
    config = get_preset(args.preset, num_classes=taxonomy.num_classes, **VARIANTS[MAIN])
    batch, tile = args.batches[0], args.tile
    model = build_model(config, device).eval()
    inputs, _ = random_batch(config, taxonomy, batch, tile, device)
    with torch.no_grad():
        forward_s = timed(lambda: model(**inputs), device, warmup=1, steps=1)[0]
        logits = model(**inputs)
        decode_s = timed(
            lambda: decode_with_confidence(logits, "consistent", taxonomy.paths), device, warmup=1, steps=1
        )[0]
        ids, confidence = decode_with_confidence(logits, "consistent", taxonomy.paths)
        same_as_decode_consistent = bool(torch.equal(ids, decode_consistent(logits, taxonomy.paths)))
    expected = [(batch, n, tile, tile) for n in taxonomy.num_classes]
    checks = {
        "logit_shapes": [tuple(t.shape) for t in logits] == expected,
        "id_shape": tuple(ids.shape) == (batch, NUM_LEVELS, tile, tile) == tuple(confidence.shape),
        "valid_paths": bool(taxonomy.valid_path_mask(ids.cpu().numpy()).all()),
        "same_as_decode_consistent": same_as_decode_consistent,
        "confidence_in_0_1": bool(((confidence >= 0) & (confidence <= 1 + 1e-5)).all()),
        "confidence_never_grows_down_the_tree": bool((confidence.diff(dim=1) <= 1e-4).all()),
    }
    free_memory(device)
    return {
        "decode": "consistent",
        "batch": batch,
        "tile": tile,
        "passed": all(checks.values()),
        "checks": checks,
        "forward_s": forward_s,
        "decode_s": decode_s,
        "taxonomy": taxonomy.source,
        "num_classes": list(taxonomy.num_classes),
    }


# ------------------------------------------------------------------------------------------ the report
def print_report(result: dict) -> None:
    """The readable table: environment, matmul, one line per training variant, the decode check."""
    env, matmul = result["environment"], result.get("matmul") or {}
    capability = f" (sm {env['capability']})" if env["capability"] else ""
    print(
        f"\n{env['device_name']}{capability}, torch {env['torch']}, CUDA {env['cuda']}, bf16 supported: {env['bf16_supported']}"
    )
    if matmul:
        print(
            f"bf16 matmul {matmul['size']}³: {matmul['tflop_per_s']:.1f} TFLOP/s (best {matmul['best_tflop_per_s']:.1f})"
        )
    rows = result.get("training") or []
    if rows:
        print(
            f"{result['preset']}, {result['tile']}×{result['tile']}, {rows[0]['forward_gflops_per_sample']:.0f} forward GFLOPs/sample"
        )
    header = (
        f"{'variant':24s} {'batch':>5s} {'median s':>9s} {'min s':>8s} {'samples/s':>9s} {'TFLOP/s':>8s} "
        f"{'of matmul':>9s} {'peak GB':>8s} {'speed-up':>8s}"
    )
    print(header + "\n" + "-" * len(header))
    for r in rows:
        name = f"{r['attention']} {r['precision']}" + (" (baseline)" if r["baseline"] else "")
        if r["status"] != "ok":
            print(f"{name:24s} {r['batch']:5d} {r['status']:>9s} {r.get('error', '')}")
            continue
        peak = f"{r['peak_memory_gb']:8.1f}" if r["peak_memory_gb"] is not None else f"{'-':>8s}"
        fraction = f"{r['fraction_of_matmul']:9.1%}" if r.get("fraction_of_matmul") is not None else f"{'-':>9s}"
        speedup = (
            f"{r['speedup_vs_baseline']:7.2f}x" if r["speedup_vs_baseline"] and not r["baseline"] else f"{'-':>8s}"
        )
        print(
            f"{name:24s} {r['batch']:5d} {r['median_s']:9.3f} {r['min_s']:8.3f} {r['samples_per_s']:9.2f} "
            f"{r['train_tflop_per_s']:8.2f} {fraction} {peak} {speedup}"
        )
    decode = result.get("decode")
    if decode:
        failed = [name for name, passed in decode["checks"].items() if not passed]
        print(
            f"decode ({decode['decode']}, batch {decode['batch']}, {decode['taxonomy']} taxonomy): "
            f"{'passed' if decode['passed'] else 'FAILED ' + ', '.join(failed)}; "
            f"forward {decode['forward_s']:.3f} s, decode {decode['decode_s']:.3f} s"
        )
    for error in result["errors"]:
        print(f"error: {error}")
    print(f"ok: {str(result['ok']).lower()} (wall {result['wall_s']:.1f} s)")


def run_part(name: str, fn: Callable[[], object], errors: list[str]) -> object | None:
    """``fn()``, or None with ``name: error`` appended to ``errors`` (its traceback on stderr)."""
    try:
        return fn()
    except Exception as error:  # one failing part must not hide the others' numbers
        traceback.print_exc()
        errors.append(f"{name}: {type(error).__name__}: {error}")
        return None


def is_ok(result: dict) -> bool:
    """Every part ran: no error, the main variant ran at every batch, the baseline ran or hit OOM, the
    decode check passed."""
    rows = result["training"] or []
    return (
        not result["errors"]
        and bool(rows)
        and bool(result["matmul"])
        and bool(result["decode"])
        and result["decode"]["passed"]
        and all(r["status"] == "ok" or (r["baseline"] and r["status"] == "oom") for r in rows)
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options; ``--smoke`` switches to the tiny preset, small sizes and the CPU."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="crops_S2_H_P_jun")
    parser.add_argument("--batches", type=int, nargs="+", default=[4, 8], help="batch sizes of the training step")
    parser.add_argument("--tile", type=int, default=192, help="S2 tile side in pixels (EnMAP gets tile/3)")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per variant and batch")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before them")
    parser.add_argument("--matmul-size", type=int, default=8192)
    parser.add_argument("--matmul-reps", type=int, default=20)
    parser.add_argument(
        "--taxonomy", help=f"a taxonomy CSV or {GENERATED!r} (default {SHARED_TAXONOMY} when present, else generated)"
    )
    parser.add_argument("--json", type=Path, default=RESULTS / "gpu_check.json", help="where to write the results")
    parser.add_argument(
        "--smoke", action="store_true", help="CPU, tiny preset, batch 1 and 2, 96-px tile, 1 timed step, no warm-up"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.preset, args.batches, args.tile = "tiny_" + args.preset.removeprefix("tiny_"), [1, 2], 96
        # no untimed step: the smoke checks that every part runs, its times mean nothing on a CPU
        args.steps, args.warmup, args.matmul_size, args.matmul_reps = 1, 0, 256, 3
    return args


def main(argv: list[str] | None = None) -> int:
    """Run every part, print the table, write the JSON; 0 when all ran, 1 when one failed, 2 without CUDA."""
    args = parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return 2
    start = time.perf_counter()
    device = torch.device("cpu" if args.smoke else "cuda")
    errors: list[str] = []
    result: dict = {
        "smoke": args.smoke,
        "preset": args.preset,
        "tile": args.tile,
        "batches": args.batches,
        "steps": args.steps,
        "warmup": args.warmup,
        "environment": environment(device),
        "errors": errors,
    }
    print(f"gpu_check: {args.preset} on {result['environment']['device_name']}", flush=True)
    taxonomy = load_taxonomy(args.taxonomy)
    result["matmul"] = run_part("matmul", lambda: measure_matmul(args.matmul_size, args.matmul_reps, device), errors)
    result["training"] = run_part("training", lambda: run_training(taxonomy, args, device), errors)
    for row in result["training"] or []:
        ok = row["status"] == "ok" and result["matmul"]
        row["fraction_of_matmul"] = row["train_tflop_per_s"] / result["matmul"]["tflop_per_s"] if ok else None
    result["decode"] = run_part("decode", lambda: check_decode(taxonomy, args, device), errors)
    result["wall_s"] = time.perf_counter() - start
    result["ok"] = is_ok(result)
    print_report(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.json, json.dumps(result, indent=2))
    print(f"wrote {args.json}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
