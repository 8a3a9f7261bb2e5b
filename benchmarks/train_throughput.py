"""Ray input path and Ray training step throughput, each against a plain torch DataLoader loop.

Four measurements on the same files, reader, batch size and total CPU count, in one run:

* input only: Ray Train workers consuming their Ray Data shards (``paths`` mode: shard paths, read on the
  worker; ``arrays`` mode: read in Ray Data tasks) vs. one process iterating a ``DataLoader`` with as many
  reader processes as Ray has workers;
* training: ``h2crop``'s Ray training step (DDP over the workers, augmentations, per-level loss, AdamW)
  vs. the same step in one process with a DataLoader and the same number of threads.

Steady state = epochs after the first (the first pays process start-up, imports and page-cache warm-up);
Ray's fixed start-up (cluster, worker group, dataset planning) is reported separately.

    python benchmarks/train_throughput.py [--data ROOT] [--samples 32] [--epochs 3] [--preset tiny_crops_S2_H_P_jun] [--smoke]

``--smoke`` runs the contenders on 8 generated 96-px samples for 2 epochs (seconds of work; it checks that
the benchmark still runs, not the numbers). It leaves out the two Ray input-only runs (``ray_input_run``
over ``path_dataset`` and ``array_dataset``; both datasets feed Train runs in tests/pipelines): each Train
run costs ~25 s of start-up on the 2-core CI machine, and the smoke keeps the one that trains.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from h2crop_core.data.dataset import H2CropDataset, collate_samples
from h2crop_core.data.index import DatasetIndex
from h2crop_core.data.schema import SampleSpec
from h2crop_core.data.synth import synthesize_dataset
from pipelines.runtime.cluster import connect_ray, quiet_data_context
from pipelines.settings import TrainSettings
from pipelines.training.context import reader_for
from pipelines.training.steps import augment, make_state, train_step
from pipelines.training.train import PreparedRun, make_trainer, prepare_run


def _epoch_stats(times: list[float], samples: list[int]) -> dict:
    steady_t, steady_n = sum(times[1:]) or times[0], sum(samples[1:]) or samples[0]
    return {
        "epoch_seconds": times,
        "samples_per_epoch": samples,
        "first_epoch_samples_per_s": samples[0] / times[0],
        "steady_samples_per_s": steady_n / steady_t,
    }


# ---------------------------------------------------------------------------------------- baselines
def dataloader_loop(paths, reader, batch_size: int, epochs: int, workers: int, step=None) -> dict:
    """The simplest honest baseline: one process, a DataLoader with ``workers`` reader processes."""
    times, samples = [], []
    loader = DataLoader(
        H2CropDataset(paths, reader),
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        persistent_workers=False,
        collate_fn=collate_samples,
    )
    for _ in range(epochs):
        start, seen = time.perf_counter(), 0
        for batch in loader:
            if step is not None:
                step(batch)
            seen += len(batch["name"])
        times.append(time.perf_counter() - start)
        samples.append(seen)
    return _epoch_stats(times, samples)


def plain_training_step(run: PreparedRun, generator: torch.Generator):
    """h2crop's own training step (``pipelines.training.steps.train_step``) in one process, no DDP."""
    state = make_state(run.config, run.settings, len(run.loop.data.train_paths), 1, "cpu")
    state.model.train()
    factor = run.loop.data.spec.enmap_factor

    def step(batch):
        train_step(state, augment(batch, generator, run.settings, factor), run.config.levels)

    return step


# ------------------------------------------------------------------------------------------- on Ray
def _input_loop(config: dict) -> None:
    import ray.train

    from pipelines.training.ray_data import ShardReader

    data = ShardReader(
        ray.train.get_dataset_shard("train"),
        config["mode"],
        config["reader"],
        config["batch_size"],
        all_paths=config["paths"],
        loader_workers=config["loader_workers"],
    )
    for epoch in range(config["epochs"]):
        start, seen = time.perf_counter(), 0
        for batch in data.epoch(shuffle_seed=epoch, prefetch_next=epoch + 1 < config["epochs"]):
            seen += len(batch["name"])
        totals = torch.tensor([seen, time.perf_counter() - start], dtype=torch.float64)
        if torch.distributed.is_initialized():
            counts = totals.clone()
            torch.distributed.all_reduce(counts)  # samples summed
            torch.distributed.all_reduce(totals, op=torch.distributed.ReduceOp.MAX)  # slowest worker's time
            totals[0] = counts[0]
        if ray.train.get_context().get_world_rank() == 0:
            with open(config["log"], "a") as log:  # Train callbacks run in the controller actor: use a file
                log.write(json.dumps({"epoch": epoch, "samples": int(totals[0]), "seconds": float(totals[1])}) + "\n")
        ray.train.report({"epoch": epoch})


def ray_input_run(config: dict, dataset, workers: int, storage: Path, name: str) -> dict:
    import ray.train
    from ray.train.torch import TorchTrainer

    from pipelines.training.ray_data import ExactlyOnceDataConfig

    log = storage / f"{name}.jsonl"
    start = time.perf_counter()
    TorchTrainer(
        _input_loop,
        train_loop_config={**config, "log": str(log)},
        scaling_config=ray.train.ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 1}),
        run_config=ray.train.RunConfig(name=name, storage_path=str(storage)),
        datasets={"train": dataset},
        dataset_config=ExactlyOnceDataConfig(),
    ).fit()
    total = time.perf_counter() - start
    history = [json.loads(line) for line in log.read_text().splitlines()]
    stats = _epoch_stats([m["seconds"] for m in history], [m["samples"] for m in history])
    stats["fixed_startup_seconds"] = total - sum(stats["epoch_seconds"])
    return stats


def ray_training_run(run: PreparedRun, storage: Path) -> dict:
    """h2crop's own Ray training; throughput from its per-epoch MLflow metrics (training time only)."""
    from mlflow.tracking import MlflowClient

    start = time.perf_counter()
    result = make_trainer(run).fit()
    total = time.perf_counter() - start
    client = MlflowClient(run.loop.tracking_uri)
    run_id = result.metrics["mlflow_run_id"]
    series = {
        key: [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]
        for key in ("train_samples", "train_samples_per_s", "epoch_seconds")
    }
    history = [dict(zip(series, values)) for values in zip(*series.values())]
    times = [m["train_samples"] / m["train_samples_per_s"] for m in history]
    stats = _epoch_stats(times, [m["train_samples"] for m in history])
    stats["fixed_startup_seconds"] = total - sum(m["epoch_seconds"] for m in history)
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="dataset root (default: generate one)")
    parser.add_argument("--samples", type=int, default=32, help="samples to generate when --data is not given")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--preset", default="tiny_crops_S2_H_P_jun")
    parser.add_argument("--skip-training", action="store_true", help="measure the input path only")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: check that the benchmark runs (seconds)")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "train_throughput.json")
    args = parser.parse_args()
    spec = SampleSpec(size=96) if args.smoke else SampleSpec()
    if args.smoke:
        args.samples, args.epochs = 8, 2

    import ray

    from pipelines.training.ray_data import array_dataset, path_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = (
            args.data
            or synthesize_dataset(Path(tmp) / "data", args.samples, spec=spec, region_size=None, progress=False).root
        )
        settings = TrainSettings(
            data=str(root),
            preset=args.preset,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=1e-3,
            warmup_iters=0,
            workers=args.workers,
            loader_workers=1,
            run_name="throughput",
            storage=str(Path(tmp) / "storage"),
            tracking_uri=f"sqlite:///{Path(tmp) / 'mlruns.db'}",
        )
        run = prepare_run(settings)
        reader = reader_for(run.config, run.loop.data)
        paths = list(run.loop.data.train_paths)
        for path in DatasetIndex(root).all_paths():
            path.read_bytes()  # warm the page cache for every contender alike
        results: dict = {
            "samples": len(paths),
            "epochs": args.epochs,
            "workers": args.workers,
            "batch_size": args.batch_size,
            "preset": args.preset,
        }
        storage = Path(tmp) / "storage"
        storage.mkdir()

        results["input_dataloader"] = dataloader_loop(paths, reader, args.batch_size, args.epochs, args.workers)
        connect_ray()
        quiet_data_context()
        loop_config = {
            "reader": reader,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "loader_workers": 1,
            "mode": "paths",
            "paths": [str(p) for p in paths],
        }
        if not args.smoke:
            results["input_ray_paths"] = ray_input_run(
                loop_config, path_dataset(paths), args.workers, storage, "input-paths"
            )
            loop_config.update(mode="arrays", loader_workers=0)
            results["input_ray_arrays"] = ray_input_run(
                loop_config, array_dataset(paths, reader), args.workers, storage, "input-arrays"
            )

        if not args.skip_training:
            torch.set_num_threads(args.workers)  # the same cores as the Ray workers together
            step = plain_training_step(run, torch.Generator().manual_seed(0))
            results["train_dataloader"] = dataloader_loop(paths, reader, args.batch_size, args.epochs, 1, step=step)
            results["train_ray"] = ray_training_run(run, storage)
        ray.shutdown()

    rows = [
        ("input: DataLoader (baseline)", "input_dataloader", "input_dataloader"),
        ("input: Ray, paths mode", "input_ray_paths", "input_dataloader"),
        ("input: Ray, arrays mode", "input_ray_arrays", "input_dataloader"),
    ]
    if "train_ray" in results:
        rows += [
            ("train: DataLoader loop (baseline)", "train_dataloader", "train_dataloader"),
            ("train: Ray TorchTrainer", "train_ray", "train_dataloader"),
        ]
    print(
        f"{results['samples']} training samples, {args.epochs} epochs, {args.workers} workers, batch {args.batch_size}, preset {args.preset}"
    )
    print(f"{'':36}{'steady samples/s':>18}{'vs baseline':>13}{'1st epoch/s':>13}{'Ray start-up s':>16}")
    for label, key, base in (row for row in rows if row[1] in results):
        r = results[key]
        r["ratio_vs_baseline"] = r["steady_samples_per_s"] / results[base]["steady_samples_per_s"]
        startup = f"{r['fixed_startup_seconds']:.1f}" if "fixed_startup_seconds" in r else "-"
        print(
            f"{label:36}{r['steady_samples_per_s']:>18.2f}{r['ratio_vs_baseline']:>13.2f}{r['first_epoch_samples_per_s']:>13.2f}{startup:>16}"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
