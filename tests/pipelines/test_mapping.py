"""``h2crop map``: a region through a Ray Data actor pool into per-level COGs, resumable by tile."""

import fcntl
import json

import numpy as np
import pytest
import rasterio
import torch

from h2crop_core.checkpoint import load_checkpoint, save_checkpoint
from h2crop_core.data.index import DatasetIndex
from h2crop_core.data.stats import compute_norm_stats
from h2crop_core.mapping import TileGrid, predict_tiles
from h2crop_core.models.model import DualStreamModel
from h2crop_core.models.presets import get_preset
from h2crop_core.taxonomy import Taxonomy
from pipelines.cli import main
from pipelines.mapping import region_reader_for

ARGS = ["--tile", "96", "--margin", "8", "--batch-size", "3", "--quiet"]


@pytest.fixture(scope="module")
def checkpoint(synth_root, tmp_path_factory):
    taxonomy = Taxonomy.from_csv(synth_root / "cascade_labels.csv")
    stats = compute_norm_stats(DatasetIndex(synth_root).split_paths("train"), progress=False)
    config = get_preset("tiny_crops_S2_H_P_jun", num_classes=taxonomy.num_classes)
    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.ckpt", DualStreamModel(config), config, taxonomy, stats)


def read_levels(folder):
    stack = []
    for k in range(1, 5):
        with rasterio.open(folder / f"level{k}.tif") as src:
            stack.append(src.read(1))
    return np.stack(stack)


def test_map_resume_and_refusals(ray_local, synth_root, checkpoint, tmp_path, capsys):
    region, out = synth_root / "region", tmp_path / "map"
    command = ["map", "--checkpoint", str(checkpoint), "--region", str(region), "--output", str(out)] + ARGS
    assert main(command) == 0
    manifest = json.loads((out / "map.json").read_text())
    assert (manifest["height"], manifest["width"], manifest["tiles"]) == (192, 192, 9)
    assert manifest["tiles_predicted"] == 9 and manifest["tiles_resumed"] == 0
    maps = read_levels(out)
    with rasterio.open(region / "s2.tif") as s2, rasterio.open(out / "level4.tif") as level4:
        assert level4.crs == s2.crs and level4.transform == s2.transform and level4.shape == s2.shape
    loaded = load_checkpoint(checkpoint)
    assert loaded.taxonomy.valid_path_mask(maps).all(), "consistent decoding: the four maps always agree"
    assert len(np.unique(maps[3])) >= 3, "a map with content, so that misplaced tiles would show below"

    # the map equals the model run directly on each tile's window, core by core
    reader = region_reader_for(loaded, region)
    tiles = TileGrid(192, 192, tile=96, margin=8).tiles()
    for tile in (tiles[0], tiles[4], tiles[8]):
        (core,) = predict_tiles(loaded.model, [reader.read(tile)], [tile], paths=loaded.taxonomy.paths)
        row0, row1, col0, col1 = tile.core
        np.testing.assert_array_equal(maps[:, row0:row1, col0:col1], core)

    # an interrupted run: no map.json, some tiles missing -> the rerun predicts only those
    for name in ("map.json", "level1.tif", "level2.tif"):
        (out / name).unlink()
    for index in (1, 5, 7):
        (out / "tiles" / f"{index:06d}.npy").unlink()
    assert main(command) == 0
    manifest = json.loads((out / "map.json").read_text())
    assert (manifest["tiles_predicted"], manifest["tiles_resumed"]) == (3, 6)
    np.testing.assert_array_equal(read_levels(out), maps)

    # a complete map is not redone; other settings into the same folder are refused, not mixed in
    capsys.readouterr()
    assert main(command) == 0
    assert "this map is complete" in capsys.readouterr().out
    assert main(command[:-len(ARGS)] + ["--tile", "96", "--margin", "20", "--quiet"]) == 2
    assert "different ['grid']" in capsys.readouterr().err
    config = loaded.config
    torch.manual_seed(1)
    other = save_checkpoint(tmp_path / "other.ckpt", DualStreamModel(config), config, loaded.taxonomy, loaded.stats)
    assert main(["map", "--checkpoint", str(other), "--region", str(region), "--output", str(out)] + ARGS) == 2
    assert "different ['checkpoint_sha256']" in capsys.readouterr().err


def test_map_errors_name_the_problem(ray_local, synth_root, checkpoint, tmp_path, capsys):
    empty = tmp_path / "not_a_region"
    empty.mkdir()
    assert main(["map", "--checkpoint", str(checkpoint), "--region", str(empty), "--output", str(tmp_path / "m")] + ARGS) == 2
    assert "region.json: missing" in capsys.readouterr().err
    assert main(["map", "--checkpoint", str(checkpoint), "--region", str(synth_root / "region"), "--output", str(tmp_path / "m"), "--tile", "100", "--quiet"]) == 2
    assert "multiple of 96" in capsys.readouterr().err
    too_many = ["--actors", "3", "--cpus-per-actor", "2"]  # the session's Ray has 4 CPUs
    assert main(["map", "--checkpoint", str(checkpoint), "--region", str(synth_root / "region"), "--output", str(tmp_path / "m")] + ARGS + too_many) == 2
    assert "needs 6 CPU (the Ray cluster has 4)" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    with open(busy / ".lock", "w") as handle:  # another h2crop map writing into the same folder
        fcntl.flock(handle, fcntl.LOCK_EX)
        assert main(["map", "--checkpoint", str(checkpoint), "--region", str(synth_root / "region"), "--output", str(busy)] + ARGS) == 2
    assert "another h2crop map is writing here" in capsys.readouterr().err


def test_auto_decoding_is_consistent_for_four_levels_and_argmax_for_one():
    from h2crop_core.errors import SettingError
    from h2crop_core.models.heads import resolve_decode
    from pipelines.settings import MapSettings

    assert resolve_decode(MapSettings().decode, (1, 2, 3, 4)) == "consistent"
    assert resolve_decode(MapSettings().decode, (2,)) == "argmax"
    assert resolve_decode(MapSettings(decode="argmax").decode, (1, 2, 3, 4)) == "argmax"
    with pytest.raises(SettingError, match="decode must be one of"):
        MapSettings(decode="vote")
    with pytest.raises(SettingError, match="four-level model"):
        resolve_decode("consistent", (3,))
