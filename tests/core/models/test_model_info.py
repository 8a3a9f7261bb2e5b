"""``model-info``: every preset summarised from the meta device, as a table or JSON."""

from __future__ import annotations

import argparse
import json

import pytest

from h2crop_core.models import preset_names
from pipelines.cli.model_info import add_model_info_parser, run_model_info


def test_all_presets_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_model_info(None, all_presets=True, as_json=True) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [e["name"] for e in entries] == preset_names()
    assert len(entries) == 20
    for entry in entries:
        assert entry["parameters"]["total"] == sum(v for k, v in entry["parameters"].items() if k != "total")
        assert entry["gflops"]["total"] > 0
        assert all(shape[-2:] == [192, 192] for shape in entry["output_shapes"])


def test_subcommand_parses_and_prints_one_preset(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="h2crop")
    add_model_info_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["model-info", "tiny_crops_S2_H_P_jun"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "tiny_crops_S2_H_P_jun" in out and "enmap.spatial" in out
    with pytest.raises(ValueError, match="not both"):
        run_model_info("crops_S2_jun", all_presets=True, as_json=False)
    with pytest.raises(ValueError, match="unknown preset"):
        run_model_info("crops_S3_jun", all_presets=False, as_json=False)
