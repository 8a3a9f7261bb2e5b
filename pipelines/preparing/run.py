"""``h2crop prepare``: a user's rasters and labelled parcels -> a dataset in the benchmark's layout.

    h2crop prepare --s2 composites/2022 --enmap ENMAP01-... --parcels rpg_2022.gpkg --code-column CODE_CULTU \
        --crosswalk FR_2022.csv --taxonomy cascade_labels.csv --prior-parcels rpg_2021.gpkg --output data/mine

Two passes over the blocks, each a Ray task per block (or in this process with ``--no-ray``): a *scan* burns
the parcels alone (which tiles hold enough labels, which classes each block holds), the blocks are assigned
to splits on the driver, then a *cut* reads the rasters and writes the samples of the tiles kept. Each block's
result is recorded under ``OUTPUT/.prepare/`` as it arrives and every sample is written atomically, so an
interrupted run resumes by block (and by sample inside one); the split lists, ``cascade_labels.csv``,
``input_contract.json`` and, last, ``prepare.json`` appear when every block is done.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from h2crop_core.data.index import H5_DIR, LIST_DIRS, SPLITS
from h2crop_core.files import exclusive_folder, write_text_atomic
from h2crop_core.preparing.layout import PrepTile
from h2crop_core.preparing.quicklook import write_split_map
from h2crop_core.preparing.splits import assign_blocks, buffer_left_out, check_fractions
from h2crop_core.records import keep_record
from h2crop_core.taxonomy import TAXONOMY_FILENAME
from pipelines.preparing.plan import PREPARE_FILE, STATE_DIR, PrepareError, PreparePlan, plan_prepare
from pipelines.preparing.report import labels_of, prepare_report
from pipelines.preparing.worker import run_block
from pipelines.settings import PrepareSettings


@dataclass
class SplitChoice:
    """What the driver decided between the passes: each block's split and each tile's fate."""

    split_of: dict[int, str]
    considered: list[PrepTile]
    buffered: set[str]
    too_few_labels: list[str]


def prepare_dataset(settings: PrepareSettings, *, progress: bool = True) -> dict:
    """Cut ``settings.output`` from the user's inputs; resume if it holds this run's blocks.

    Returns:
        The ``prepare.json`` content, with the blocks scanned and cut by this call (``blocks_scanned``,
        ``blocks_cut``; 0 for a finished dataset).
    """
    started = time.perf_counter()
    plan = plan_prepare(settings)
    root = plan.root
    with exclusive_folder(root, "h2crop prepare", PrepareError):
        if settings.overwrite and _clear(root):
            print(f"[h2crop] --overwrite: deleted the earlier prepare's samples and records in {root}")
        keep_record(
            root / STATE_DIR / "record.json", plan.record, root / STATE_DIR, run="a prepare run", pieces="blocks",
            error=PrepareError,
        )  # fmt: skip
        if (root / PREPARE_FILE).is_file():
            print(f"[h2crop] {root / PREPARE_FILE} exists: this dataset is complete (--overwrite makes it again)")
            return {**json.loads((root / PREPARE_FILE).read_text()), "blocks_scanned": 0, "blocks_cut": 0}
        tiles = plan.sources.layout.tiles()
        scans, scanned = _run_pass("scan", plan, _by_block(tiles), settings.ray, progress)
        choice = _choose_splits(plan, tiles, scans)
        kept = [t for t in choice.considered if t.name not in choice.buffered]
        cuts, cut = _run_pass("cut", plan, _by_block(kept), settings.ray, progress)
        return {**_finish(plan, choice, scans, cuts, started), "blocks_scanned": scanned, "blocks_cut": cut}


def _clear(root: Path) -> bool:
    found = False
    for name in (H5_DIR, STATE_DIR, *LIST_DIRS, PREPARE_FILE, "splits.png"):
        path = root / name
        if path.is_dir():
            shutil.rmtree(path)
            found = True
        elif path.is_file():
            path.unlink()
            found = True
    return found


def _by_block(tiles: list[PrepTile]) -> dict[int, list[PrepTile]]:
    blocks: dict[int, list[PrepTile]] = {}
    for tile in tiles:
        blocks.setdefault(tile.block, []).append(tile)
    return blocks


def _run_pass(
    kind: str, plan: PreparePlan, blocks: dict[int, list[PrepTile]], use_ray: bool, progress: bool
) -> tuple[dict[int, list[dict]], int]:
    """Scan or cut every block not recorded yet; returns every block's result and how many were made now."""
    from tqdm.auto import tqdm

    folder = plan.root / STATE_DIR / kind
    folder.mkdir(parents=True, exist_ok=True)
    done = {b: json.loads((folder / f"{b}.json").read_text()) for b in blocks if (folder / f"{b}.json").is_file()}
    todo = [b for b in sorted(blocks) if b not in done]
    if done and todo:
        print(f"[h2crop] resuming the {kind}: {len(done)} of {len(blocks)} blocks already done")
    bar = tqdm(total=len(blocks), initial=len(done), desc=kind, unit="block", disable=not progress, dynamic_ncols=True)
    try:
        for block, result in _results(kind, plan, blocks, todo, use_ray):
            write_text_atomic(folder / f"{block}.json", json.dumps(result))
            done[block] = result
            bar.update(1)
    finally:
        bar.close()
    return done, len(todo)


def _results(kind: str, plan: PreparePlan, blocks: dict[int, list[PrepTile]], todo: list[int], use_ray: bool):
    """(block, result) as each block finishes: Ray tasks, or one after the other here."""
    h5_dir = plan.root / H5_DIR
    h5_dir.mkdir(parents=True, exist_ok=True)
    if not use_ray or not todo:
        for block in todo:
            yield block, run_block(kind, plan.sources, blocks[block], h5_dir)
        return
    import ray

    from pipelines.runtime.cluster import connect_ray

    connect_ray()
    task = ray.remote(num_cpus=1)(run_block)
    sources = ray.put(plan.sources)
    pending = {task.remote(kind, sources, blocks[b], h5_dir): b for b in todo}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            yield pending.pop(ready[0]), ray.get(ready[0])
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)


def _choose_splits(plan: PreparePlan, tiles: list[PrepTile], scans: dict[int, list[dict]]) -> SplitChoice:
    """Tiles with enough labels, their blocks assigned to splits, the tiles a buffer leaves out."""
    scanned = {entry["name"]: entry for result in scans.values() for entry in result}
    minimum = plan.settings.min_labelled
    considered = [t for t in tiles if scanned[t.name]["labelled"] >= minimum and scanned[t.name]["labelled"] > 0]
    if not considered:
        raise PrepareError(
            f"{plan.settings.parcels}: no tile of the S2 grid has {minimum:.0%} of its pixels in labelled parcels "
            "(do the parcels lie on the rasters? lower --min-labelled)"
        )
    block_labels: dict[int, set] = {}
    block_tiles: dict[int, int] = {}
    for tile in considered:
        block_labels.setdefault(tile.block, set()).update(labels_of(scanned[tile.name]["pixels"]))
        block_tiles[tile.block] = block_tiles.get(tile.block, 0) + 1
    fractions = check_fractions(plan.settings.split)
    split_of = assign_blocks(block_labels, block_tiles, fractions, plan.settings.seed)
    buffered = buffer_left_out(plan.sources.layout, considered, split_of, plan.settings.buffer)
    too_few = [t.name for t in tiles if t not in considered]
    return SplitChoice(split_of, considered, buffered, too_few)


def _finish(plan: PreparePlan, choice: SplitChoice, scans: dict, cuts: dict[int, list[dict]], started: float) -> dict:
    layout = plan.sources.layout
    by_name = {t.name: t for t in choice.considered}
    written = {e["name"]: e for result in cuts.values() for e in result if e["written"]}
    lists = {s: sorted(n for n in written if choice.split_of[by_name[n].block] == s) for s in SPLITS}
    wanted = list(check_fractions(plan.settings.split))
    empty = [s for s in wanted if not lists[s]]
    if empty:
        raise PrepareError(
            f"{plan.root}: {len(written)} samples, none in {', '.join(empty)}: too few blocks for three splits "
            f"(blocks of {layout.block_km:g} km); use a smaller --block, a lower --min-labelled, or --split with 0 for {empty[-1]}"
        )
    folder = plan.root / LIST_DIRS[0]
    for split in SPLITS:
        if split in wanted:
            write_text_atomic(folder / f"{split}.txt", "".join(f"{n}\n" for n in lists[split]))
        else:
            (folder / f"{split}.txt").unlink(missing_ok=True)
    plan.sources.taxonomy.to_csv(plan.root / TAXONOMY_FILENAME)
    plan.contract.to_json(plan.root / "input_contract.json")
    report = prepare_report(plan, choice, scans, cuts, lists, started)
    fate = {**report["skipped"], **{name: entry["split"] for name, entry in report["samples"].items()}}
    write_split_map(plan.root / "splits.png", layout, fate)
    write_text_atomic(plan.root / PREPARE_FILE, json.dumps(report, indent=1))
    return report
