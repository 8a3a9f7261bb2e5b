"""``h2crop model-info [PRESET | --all] [--json]``: parameters per component, forward GFLOPs and output
shapes of model presets, computed on the meta device (no weights allocated, nothing run)."""

from __future__ import annotations

import argparse
import json

from h2crop_core.errors import SettingError
from h2crop_core.models.presets import get_preset, preset_names
from h2crop_core.models.summary import ModelSummary, summarize


def _table(summaries: list[ModelSummary]) -> str:
    lines = [f"{'preset':32s} {'params (M)':>10s} {'GFLOPs':>8s}  per component (M params / GFLOPs)   outputs"]
    for s in summaries:
        parts = ", ".join(
            f"{name} {s.parameters[name] / 1e6:.1f}/{s.flops.get(name, 0) / 1e9:.1f}"
            for name in s.parameters
            if name != "total"
        )
        outputs = " ".join("x".join(map(str, shape[1:2])) for shape in s.output_shapes)
        lines.append(
            f"{s.name:32s} {s.parameters['total'] / 1e6:10.2f} {s.flops['total'] / 1e9:8.1f}  {parts}   classes {outputs} @ {s.tile}²"
        )
    return "\n".join(lines)


def run_model_info(preset: str | None, all_presets: bool, as_json: bool, tile: int = 192) -> int:
    """Print the summary of ``preset`` (or of all 20 full-size presets); returns the exit code."""
    if all_presets == (preset is not None):
        raise SettingError("model-info takes a preset name or --all (not both)")
    names = preset_names() if all_presets else [preset]  # type: ignore[list-item]
    summaries = [summarize(get_preset(name), tile=tile) for name in names]
    if as_json:
        print(json.dumps([s.to_dict() for s in summaries], indent=2))
    else:
        print(_table(summaries))
        print("FLOPs: forward, batch 1, one multiply-add = 2 FLOPs; attention products included.")
    return 0


def add_model_info_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``model-info`` on an argparse sub-parser set; the handler is ``args.func(args)``."""
    parser = subparsers.add_parser("model-info", help="parameters, forward GFLOPs and output shapes of model presets")
    parser.add_argument(
        "preset",
        nargs="?",
        help=f"preset name, e.g. crops_S2_H_P_jun (tiny_ prefix allowed); one of: {', '.join(preset_names())}",
    )
    parser.add_argument("--all", action="store_true", dest="all_presets", help="every full-size preset (20)")
    parser.add_argument("--json", action="store_true", dest="as_json", help="machine-readable output")
    parser.add_argument("--tile", type=int, default=192, help="S2 tile side in pixels (default 192)")
    parser.set_defaults(func=lambda args: run_model_info(args.preset, args.all_presets, args.as_json, args.tile))
    return parser


if __name__ == "__main__":
    import sys

    root = argparse.ArgumentParser(prog="h2crop")
    add_model_info_parser(root.add_subparsers(dest="command", required=True))
    arguments = root.parse_args()
    sys.exit(arguments.func(arguments))
