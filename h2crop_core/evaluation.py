"""Scoring predictions against a split's labels (external predictions; model evaluation builds on it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from h2crop_core.checkpoint import load_checkpoint
from h2crop_core.data.dataset import H2CropDataset, collate_samples, raise_read_failures
from h2crop_core.data.index import DatasetIndex
from h2crop_core.data.reader import SampleReader, infer_dataset_spec
from h2crop_core.data.schema import H2CROP_SPEC, SampleSpec
from h2crop_core.errors import H2CropError
from h2crop_core.metrics import HierarchicalConfusion
from h2crop_core.models.heads import DEFAULT_DECODE, decode_argmax, decode_consistent, resolve_decode
from h2crop_core.products.contract import check_dataset_contract
from h2crop_core.taxonomy import NUM_LEVELS, Taxonomy

PREDICTION_KEY = "pred"


class PredictionError(H2CropError):
    """Predictions that are missing or do not match the labels they are scored against."""


def prediction_path(folder: Path, name: str) -> Path | None:
    """``<folder>/<name>.npy`` or ``<folder>/<name>.h5`` (dataset ``pred``), whichever exists."""
    for suffix in (".npy", ".h5"):
        path = folder / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def _prediction_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    if path.suffix == ".npy":
        array = np.load(path, mmap_mode="r")
        return array.shape, array.dtype
    with h5py.File(path, "r") as handle:
        if PREDICTION_KEY not in handle:
            raise PredictionError(f"{path}: expected a dataset {PREDICTION_KEY!r}; found keys {sorted(handle)}")
        return handle[PREDICTION_KEY].shape, handle[PREDICTION_KEY].dtype


def load_prediction(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path)
    with h5py.File(path, "r") as handle:
        return handle[PREDICTION_KEY][...]


def check_predictions(folder: Path, names: list[str], spec: SampleSpec = H2CROP_SPEC) -> dict[str, Path]:
    """Find every sample's prediction file and check its shape and dtype without reading it.

    Raises:
        PredictionError: listing every missing or misshaped prediction in one message.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise PredictionError(f"{folder}: predictions folder not found")
    expected = (NUM_LEVELS, spec.size, spec.size)
    found, problems = {}, []
    for name in names:
        path = prediction_path(folder, name)
        if path is None:
            problems.append(f"{folder / name}.npy (or .h5): missing")
            continue
        try:
            shape, dtype = _prediction_header(path)
        except PredictionError as error:
            problems.append(str(error))
            continue
        except (OSError, ValueError) as error:
            problems.append(f"{path}: unreadable ({error})")
            continue
        if tuple(shape) != expected:
            problems.append(f"{path}: expected shape {expected}; found {tuple(shape)}")
        elif dtype.kind not in "ui":
            problems.append(f"{path}: expected integer class ids (uint8); found dtype {dtype}")
        else:
            found[name] = path
    if problems:
        shown = "\n  ".join(problems[:30])
        more = f"\n  ... and {len(problems) - 30} more" if len(problems) > 30 else ""
        raise PredictionError(f"{len(problems)} of {len(names)} prediction(s) missing or misshaped:\n  {shown}{more}")
    return found


def score_predictions(
    root: str | Path,
    split: str,
    predictions: str | Path,
    taxonomy: Taxonomy,
    *,
    progress: bool = True,
) -> HierarchicalConfusion:
    """Stream every sample of ``split``: its labels and priors from the dataset, its prediction from
    ``predictions``; return the filled confusion matrices."""
    index = DatasetIndex(root)
    names = index.split_names(split)
    paths = index.split_paths(split)
    spec = infer_dataset_spec(paths)  # the labels' tile size, so non-benchmark tiles score too
    found = check_predictions(Path(predictions), names, spec)
    reader = SampleReader(spec.months, modalities=("label", "prior"), taxonomy=taxonomy, spec=spec)
    confusion = HierarchicalConfusion(taxonomy.num_classes, taxonomy)
    for name, path in tqdm(
        list(zip(names, paths)), desc="score", unit="sample", disable=not progress, dynamic_ncols=True
    ):
        sample = reader.read(path)
        prediction = load_prediction(found[name])
        try:
            confusion.update(prediction, sample["label"], sample["prior"])
        except ValueError as error:
            raise PredictionError(f"{found[name]}: {error}") from None
    return confusion


@dataclass
class Evaluation:
    """What :func:`evaluate_checkpoint` found: the filled confusion matrices, the checkpoint's taxonomy and
    the extras for ``metrics.json``."""

    confusion: HierarchicalConfusion
    taxonomy: Taxonomy
    extra: dict


def evaluate_checkpoint(
    checkpoint: str | Path,
    root: str | Path,
    split: str,
    *,
    decode: str = DEFAULT_DECODE,
    batch_size: int = 4,
    precision: str | None = None,
    loader_workers: int = 1,
    device: str = "cpu",
    progress: bool = True,
) -> Evaluation:
    """Run a checkpoint over a split and fill the confusion matrices.

    Args:
        decode: ``argmax`` per level, ``consistent``: the most probable taxonomy path, so the four levels
            always agree (needs a four-level model), or ``auto`` (the default): consistent for four-level
            models, argmax otherwise (:func:`~h2crop_core.models.heads.resolve_decode`).
        precision: ``fp32`` or ``bf16`` to override the checkpoint's setting.

    Returns:
        The confusion matrices, the checkpoint's taxonomy and extras for ``metrics.json`` (decode mode,
        checkpoint, its input contract, and how often plain argmax breaks the hierarchy).

    Raises:
        ContractError: the dataset's ``input_contract.json`` differs from the checkpoint's contract.
    """
    loaded = load_checkpoint(checkpoint, device=device, **({"precision": precision} if precision else {}))
    check_dataset_contract(root, loaded.contract, checkpoint)  # before any batch: a mismatch is one line
    levels = loaded.config.levels
    decode = resolve_decode(decode, levels)
    index = DatasetIndex(root)
    paths = index.split_paths(split)
    dataset = H2CropDataset(paths, loaded.reader())
    # collate_samples + raise_read_failures: a bad file in a loader worker raises its own one-line error here
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=loader_workers, collate_fn=collate_samples)
    confusion = HierarchicalConfusion(loaded.taxonomy.num_classes, loaded.taxonomy, levels=levels)
    argmax_valid = argmax_total = 0
    with torch.inference_mode():
        batches = tqdm(
            raise_read_failures(loader),
            total=len(loader),
            desc=f"evaluate {split}",
            unit="batch",
            disable=not progress,
            dynamic_ncols=True,
        )
        for batch in batches:
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            logits = loaded.model(**loaded.model.inputs(batch))
            argmax = decode_argmax(logits)
            prediction = decode_consistent(logits, loaded.taxonomy.paths) if decode == "consistent" else argmax
            confusion.update(prediction, batch["label"], batch["prior"])
            if len(levels) == 4:
                argmax_valid += int(loaded.taxonomy.valid_path_mask(argmax.cpu().numpy()).sum())
                argmax_total += argmax[:, 0].numel()
    extra = {
        "decode": decode,
        "checkpoint": str(checkpoint),
        "preset": loaded.config.name,
        "window": str(loaded.config.window),
        "input_contract": loaded.contract.to_dict() if loaded.contract else None,
    }
    if argmax_total:
        extra["argmax_invalid_path_fraction"] = 1.0 - argmax_valid / argmax_total
    return Evaluation(confusion, loaded.taxonomy, extra)
