"""``prepare.json``: where every sample came from and what the dataset holds, and its one-paragraph summary."""

from __future__ import annotations

import time
from dataclasses import asdict

from h2crop_core.data.index import SPLITS
from h2crop_core.memory import peak_rss_mb
from h2crop_core.preparing.splits import spread_report


def class_pixels_by_split(cuts: dict, lists: dict[str, list[str]], names: list[tuple[str, ...]]) -> dict:
    """Per split and level: labelled pixels per class name, the most frequent first."""
    written = {e["name"]: e["pixels"] for result in cuts.values() for e in result if e["written"]}
    out = {}
    for split, members in lists.items():
        levels = {}
        for level in range(1, 5):
            total: dict[int, int] = {}
            for name in members:
                for c, n in written[name][f"level{level}"].items():
                    total[int(c)] = total.get(int(c), 0) + n
            levels[f"level{level}"] = {names[level - 1][c]: n for c, n in sorted(total.items(), key=lambda i: -i[1])}
        out[split] = levels
    return out


def labels_of(pixels: dict[str, dict[str, int]]) -> set[tuple[int, int]]:
    """The (level, class) pairs with pixels in a ``class_pixels`` record."""
    return {(int(level[5:]), int(c)) for level, counts in pixels.items() for c, n in counts.items() if n}


def spread_of(plan, choice, scans: dict, cuts: dict, lists: dict) -> dict:
    """:func:`~h2crop_core.preparing.splits.spread_report` of the written samples."""
    scanned = {e["name"]: e for result in scans.values() for e in result}
    block_labels: dict[int, set] = {}
    for tile in choice.considered:
        block_labels.setdefault(tile.block, set()).update(labels_of(scanned[tile.name]["pixels"]))
    written = {e["name"]: e for result in cuts.values() for e in result if e["written"]}
    split_labels = {s: set().union(*(labels_of(written[n]["pixels"]) for n in names)) for s, names in lists.items()}
    splits = tuple(s for s in SPLITS if lists[s])
    names = [plan.sources.taxonomy.class_names(level) for level in range(1, 5)]
    return spread_report(block_labels, split_labels, splits, names)


def prepare_report(plan, choice, scans: dict, cuts: dict, lists: dict[str, list[str]], started: float) -> dict:
    """The whole record (see docs/preparing.md for each field)."""
    layout, settings = plan.sources.layout, plan.settings
    skipped = dict.fromkeys(choice.too_few_labels, "labelled")
    skipped |= dict.fromkeys(choice.buffered, "buffer")
    cut = [e for result in cuts.values() for e in result]
    skipped |= {e["name"]: e["skipped"] for e in cut if not e["written"]}
    split_of_name = {t.name: choice.split_of[t.block] for t in choice.considered}
    bounds = {t.name: [round(v, 3) for v in layout.tile_bounds(t)] for t in choice.considered}
    names = [plan.sources.taxonomy.class_names(level) for level in range(1, 5)]
    area_km2 = layout.height * layout.width * abs(layout.transform.a * layout.transform.e) / 1e6
    seconds = time.perf_counter() - started
    reasons = ("labelled", "buffer", "valid data")
    return {
        "created_by": "h2crop prepare",
        "sources": {
            "s2": list(plan.sources.inputs.s2),
            "s2_months_read": plan.sources.months,
            "enmap": plan.sources.inputs.enmap,
            "prior": plan.sources.inputs.prior or settings.prior_parcels or None,
            "registers": plan.registers,
            "crosswalk": settings.crosswalk or None,
            "taxonomy": plan.sources.taxonomy.source,
        },
        "crosswalk_coverage": plan.classes.coverage(),
        "prior_crosswalk_coverage": plan.prior_classes.coverage() if plan.prior_classes else None,
        "layout": {
            "crs": layout.crs,
            "transform": list(layout.transform)[:6],
            "height": layout.height,
            "width": layout.width,
            "tile": layout.tile,
            "block_km": layout.block_km,
            "blocks": len({t.block for t in layout.tiles()}),
            "buffer_m": settings.buffer,
        },
        "tiles": {
            "grid": layout.tile_rows * layout.tile_cols,
            "written": {s: len(lists[s]) for s in SPLITS},
            "skipped": {r: sum(1 for v in skipped.values() if v == r) for r in reasons},
        },
        "blocks_by_split": {s: sorted(b for b, v in choice.split_of.items() if v == s) for s in SPLITS},
        "class_pixels": class_pixels_by_split(cuts, lists, names),
        "spread": spread_of(plan, choice, scans, cuts, lists),
        "input_contract": plan.contract.to_dict(),
        "samples": {n: {"split": split_of_name[n], "bounds": bounds[n]} for s in SPLITS for n in lists[s]},
        "skipped": dict(sorted(skipped.items())),
        "settings": asdict(settings),
        "area_km2": round(area_km2, 3),
        "seconds": round(seconds, 2),
        "seconds_per_km2": round(seconds / max(area_km2, 1e-9), 3),
        "driver_peak_rss_mb": round(peak_rss_mb(), 1),
    }


def summary_lines(report: dict) -> list[str]:
    """What ``h2crop prepare`` prints when done."""
    tiles, coverage = report["tiles"], report["crosswalk_coverage"]
    written = tiles["written"]
    lines = [
        f"{sum(written.values())} samples: {written['train']} train, {written['val']} val, {written['test']} test "
        f"(of {tiles['grid']} tiles; skipped: {tiles['skipped']['labelled']} with too few labels, "
        f"{tiles['skipped']['valid data']} with too little valid data, {tiles['skipped']['buffer']} in a buffer)",
        f"codes: {coverage['codes'] - coverage['codes_unknown']} of {coverage['codes']} known, "
        f"{coverage['area_known_share']:.1%} of the parcels' area labelled",
    ]
    if coverage["unknown"]:
        top = list(coverage["unknown"].items())[:5]
        shown = "; ".join(
            f"{code or '(none)'}: {e['parcels']} parcels, {e['area_ha']:g} ha ({e['why']})" for code, e in top
        )
        lines.append(f"unlabelled (unknown codes, largest first): {shown}")
    for level, spread in report["spread"].items():
        if spread["impossible"] or spread["missed"]:
            lines.append(
                f"{level}: {spread['in_every_split']} of {spread['classes']} classes in every split; "
                f"{len(spread['impossible'])} in too few blocks for every split, {len(spread['missed'])} missed"
            )
    lines.append(f"{report['area_km2']:g} km² in {report['seconds']:.1f} s ({report['seconds_per_km2']:.3f} s/km²)")
    return lines
