"""``h2crop map``: the user's rasters (or a region) through a Ray Data actor pool into class and confidence
COGs, resumable by tile; ``h2crop parcels`` on the result."""

import fcntl
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from pyarrow.fs import FileSelector
from rasterio.windows import Window

from h2crop_core.checkpoint import load_checkpoint, save_checkpoint
from h2crop_core.data.index import DatasetIndex
from h2crop_core.data.stats import compute_norm_stats
from h2crop_core.data.synth.user_files import write_monthly_s2
from h2crop_core.mapping import TileGrid, inputs_from_region, predict_tiles
from h2crop_core.models.model import DualStreamModel
from h2crop_core.models.presets import get_preset
from h2crop_core.storage import Remote
from h2crop_core.taxonomy import Taxonomy
from pipelines.cli.main import main
from pipelines.mapping.run import region_reader_for
from tests.core.mapping.test_region_reader import warp_to
from tests.pipelines.conftest import kill_cli_when

ARGS = ["--tile", "96", "--overlap", "16", "--batch-size", "3", "--quiet"]
OUTPUTS = [f"{kind}level{k}.tif" for kind in ("", "confidence_") for k in range(1, 5)]


@pytest.fixture(scope="module")
def checkpoint(synth_root, tmp_path_factory):
    taxonomy = Taxonomy.from_csv(synth_root / "cascade_labels.csv")
    stats = compute_norm_stats(DatasetIndex(synth_root).split_paths("train"), progress=False)
    config = get_preset("tiny_crops_S2_H_P_jun", num_classes=taxonomy.num_classes)
    torch.manual_seed(0)
    return save_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "model.ckpt", DualStreamModel(config), config, taxonomy, stats
    )


def read_levels(folder, kind=""):
    stack = []
    for k in range(1, 5):
        with rasterio.open(folder / f"{kind}level{k}.tif") as src:
            stack.append(src.read(1))
    return np.stack(stack)


def map_command(checkpoint, out, *inputs):
    return ["map", "--checkpoint", str(checkpoint), *map(str, inputs), "--output", str(out)] + ARGS


def test_map_resume_and_refusals(ray_local, synth_root, checkpoint, tmp_path, capsys):
    region, out = synth_root / "region", tmp_path / "map"
    command = map_command(checkpoint, out, "--region", region)
    assert main(command) == 0
    manifest = json.loads((out / "map.json").read_text())
    assert (manifest["height"], manifest["width"], manifest["tiles"]) == (192, 192, 9)
    assert manifest["tiles_predicted"] == 9 and manifest["tiles_resumed"] == 0
    assert len(manifest["actors_peak_rss_mb"]) == 1 and 100 < next(iter(manifest["actors_peak_rss_mb"].values())) < 4000
    summary = json.loads((out / "summary.json").read_text())
    assert (
        summary["grid_km2"] == pytest.approx(192 * 192 * 100 / 1e6)
        and summary["tiles"] == 9
        and summary["km2_per_s"] > 0
    )
    assert sum(summary["class_area_ha"]["level4"].values()) == pytest.approx(summary["mapped_km2"] * 100)
    maps, confidence = read_levels(out), read_levels(out, "confidence_")
    assert ((confidence >= 1) & (confidence <= 255)).all() and (confidence[1:] <= confidence[:-1]).all()
    with rasterio.open(region / "s2.tif") as s2, rasterio.open(out / "level4.tif") as level4:
        assert level4.crs == s2.crs and level4.transform == s2.transform and level4.shape == s2.shape
    loaded = load_checkpoint(checkpoint)
    assert loaded.taxonomy.valid_path_mask(maps).all(), "consistent decoding: the four maps always agree"
    assert len(np.unique(maps[3])) >= 3, "a map with content, so that misplaced tiles would show below"

    # the map equals the model run directly on each tile's window, core by core
    reader = region_reader_for(loaded, inputs_from_region(region))
    tiles = TileGrid(192, 192, tile=96, margin=8).tiles()
    for tile in (tiles[0], tiles[4], tiles[8]):
        ((core, core_confidence),) = predict_tiles(
            loaded.model, [reader.read(tile)], [tile], paths=loaded.taxonomy.paths
        )
        row0, row1, col0, col1 = tile.core
        np.testing.assert_array_equal(maps[:, row0:row1, col0:col1], core)
        np.testing.assert_allclose(
            confidence[:, row0:row1, col0:col1], core_confidence, atol=1
        )  # batch of 3 vs 1: last-bit differences

    # an interrupted run: no map.json, some tiles missing -> the rerun predicts only those
    for name in ("map.json", "level1.tif", "level2.tif"):
        (out / name).unlink()
    for index in (1, 5, 7):
        (out / "tiles" / f"{index:06d}.npz").unlink()
    assert main(command) == 0
    manifest = json.loads((out / "map.json").read_text())
    assert (manifest["tiles_predicted"], manifest["tiles_resumed"]) == (3, 6)
    np.testing.assert_array_equal(read_levels(out), maps)

    # a complete map is not redone, also once an input was rewritten with the same content (a second
    # `make demo`); other settings or content into the same folder are refused, naming what differs
    capsys.readouterr()
    stat = (region / "s2.tif").stat()
    os.utime(region / "s2.tif", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert main(command) == 0
    assert "this map is complete" in capsys.readouterr().out
    assert main(command[: -len(ARGS)] + ["--tile", "96", "--overlap", "40", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "made with other inputs or settings: grid." in err and len(err.strip().splitlines()) == 1
    changed = Path(shutil.copytree(region, tmp_path / "changed"))
    with rasterio.open(changed / "prior.tif", "r+") as prior:
        prior.write(np.roll(prior.read(), 1, axis=-1))  # the same classes, moved by one pixel
    assert main(map_command(checkpoint, out, "--region", changed)) == 2
    assert "inputs.rasters.prior[0] (prior.tif).sha256: " in capsys.readouterr().err
    config = loaded.config
    torch.manual_seed(1)
    other = save_checkpoint(tmp_path / "other.ckpt", DualStreamModel(config), config, loaded.taxonomy, loaded.stats)
    assert main(map_command(other, out, "--region", region)) == 2
    assert "other inputs or settings: checkpoint_sha256: " in capsys.readouterr().err
    # --overwrite starts over: the earlier run's tiles and maps go, the user's other files stay
    (out / "notes.txt").write_text("mine")
    assert main(map_command(other, out, "--region", region) + ["--overwrite"]) == 0
    assert "--overwrite: deleted the earlier mapping run's tiles and maps" in capsys.readouterr().out
    assert (
        json.loads((out / "map.json").read_text())["tiles_predicted"] == 9 and (out / "notes.txt").read_text() == "mine"
    )
    assert not np.array_equal(read_levels(out), maps), "the other model's map"


def test_map_errors_name_the_problem(ray_local, synth_root, checkpoint, tmp_path, capsys):
    empty = tmp_path / "not_a_region"
    empty.mkdir()
    assert main(map_command(checkpoint, tmp_path / "m", "--region", empty)) == 2
    assert "region.json: missing" in capsys.readouterr().err
    assert (
        main(
            map_command(
                checkpoint, tmp_path / "m", "--region", synth_root / "region", "--s2", synth_root / "region" / "s2.tif"
            )
        )
        == 2
    )
    assert "with --s2 (and --enmap, --prior) or a region folder with --region, not both" in capsys.readouterr().err
    s2 = synth_root / "region" / "s2.tif"
    assert main(map_command(checkpoint, tmp_path / "m", "--s2", s2, "--enmap", tmp_path / "enmap.tif")) == 2
    assert f"{tmp_path / 'enmap.tif'}: no such file (the --enmap input)" in capsys.readouterr().err
    assert (
        main(map_command(checkpoint, tmp_path / "m", "--s2", s2, "--enmap", synth_root / "region" / "enmap.tif")) == 2
    )
    assert "the model reads prior; give it with --prior" in capsys.readouterr().err
    assert not (tmp_path / "m" / "tiles").exists(), "refused before any work"
    assert (
        main(
            [
                "map",
                "--checkpoint",
                str(checkpoint),
                "--region",
                str(synth_root / "region"),
                "--output",
                str(tmp_path / "m"),
                "--tile",
                "100",
                "--quiet",
            ]
        )
        == 2
    )
    assert "multiple of 96" in capsys.readouterr().err
    too_many = ["--actors", "3", "--cpus-per-actor", "2"]  # the session's Ray has 4 CPUs
    assert (
        main(
            [
                "map",
                "--checkpoint",
                str(checkpoint),
                "--region",
                str(synth_root / "region"),
                "--output",
                str(tmp_path / "m"),
            ]
            + ARGS
            + too_many
        )
        == 2
    )
    assert "needs 6 CPU (the Ray cluster has 4)" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    with open(busy / ".lock", "w") as handle:  # another h2crop map writing into the same folder
        fcntl.flock(handle, fcntl.LOCK_EX)
        assert (
            main(
                ["map", "--checkpoint", str(checkpoint), "--region", str(synth_root / "region"), "--output", str(busy)]
                + ARGS
            )
            == 2
        )
    assert "another h2crop map is writing here" in capsys.readouterr().err


def test_the_input_contract_old_checkpoints_and_unharmonised_inputs(
    ray_local, synth_root, checkpoint, tmp_path, capsys
):
    """A checkpoint written before input contracts maps as before (by index), and S2 never harmonised (1000
    lower) is mapped with one warning naming the bands and the offset; S2 bands named in another order than
    the contract's are refused before any work, naming the file."""
    payload = torch.load(checkpoint, weights_only=True)
    del payload["input_contract"]
    torch.save(payload, tmp_path / "old.ckpt")
    region = Path(shutil.copytree(synth_root / "region", tmp_path / "region"))
    with rasterio.open(region / "s2.tif", "r+") as dst:
        data = dst.read(masked=True)
        dst.write(np.ma.filled(data - 1000, dst.nodata).astype(np.int16))
    capsys.readouterr()
    assert main(map_command(tmp_path / "old.ckpt", tmp_path / "old", "--region", region)) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "S2 B2, B3, B4" in warnings[0] and "unharmonised L2A offset of 1000" in warnings[0]
    manifest = json.loads((tmp_path / "old" / "map.json").read_text())
    assert manifest["input_contract"] is None and "unharmonised" in manifest["input_drift"]
    clean = map_command(checkpoint, tmp_path / "clean", "--region", synth_root / "region")
    assert main(clean) == 0 and "warning" not in capsys.readouterr().out
    manifest = json.loads((tmp_path / "clean" / "map.json").read_text())
    assert manifest["input_contract"] == load_checkpoint(checkpoint).contract.to_dict() and not manifest["input_drift"]

    write_monthly_s2(synth_root / "region" / "s2.tif", tmp_path / "s2")
    january = tmp_path / "s2" / "S2_2023-01.tif"
    with rasterio.open(january, "r+") as dst:
        dst.descriptions = ("B3", "B2", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
    rasters = ["--s2", tmp_path / "s2", "--enmap", region / "enmap.tif", "--prior", region / "prior.tif"]
    assert main(map_command(checkpoint, tmp_path / "named", *rasters)) == 2
    err = capsys.readouterr().err
    assert f"{january}: its bands are named ['B3', 'B2', 'B4'," in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "named" / "tiles").exists(), "refused before any work"


def test_a_map_from_the_products_agrees_with_the_map_from_the_clean_stacks(
    ray_local, synth_root, synth_products, checkpoint, tmp_path, capsys
):
    """The region as delivered (L2A scenes composited by ``h2crop composite``, the EnMAP L2A product read by
    wavelength with its cloud masked) maps like the clean stacks the region was made from; the product's
    cloud is nodata in the map."""
    products = json.loads((synth_products / "products.json").read_text())
    like = synth_products / "truth" / "S2_2022-01.tif"
    composite = ["composite", "--scenes", str(synth_products / "s2"), "--year", "2022", "--like", str(like)]
    assert main([*composite, "--output", str(tmp_path / "s2"), "--months", "1-6", "--quiet"]) == 0
    enmap = synth_products / products["enmap"]["path"]
    rasters = ["--s2", tmp_path / "s2", "--enmap", enmap, "--prior", synth_root / "region" / "prior.tif"]
    assert main(map_command(checkpoint, tmp_path / "products", *rasters)) == 0
    assert main(map_command(checkpoint, tmp_path / "clean", "--region", synth_root / "region")) == 0
    assert "warning" not in capsys.readouterr().out  # harmonised composites: no drift warning
    from_products, clean = read_levels(tmp_path / "products"), read_levels(tmp_path / "clean")
    both = (from_products != 255).all(axis=0) & (clean != 255).all(axis=0)
    agree = (from_products == clean).all(axis=0)[both].mean()
    assert both.mean() > 0.9 and agree >= 0.95, (both.mean(), agree)
    assert len(np.unique(clean[3][both])) > 3  # the model tells classes apart: agreement is not trivial
    cloud = next(p for p in enmap.iterdir() if p.name.endswith("QL_QUALITY_CLOUD.TIF"))
    with rasterio.open(cloud) as handle:
        cloudy = np.repeat(np.repeat(handle.read(1) > 0, 3, 0), 3, 1)
    assert cloudy.any() and (from_products[:, cloudy[: both.shape[0], : both.shape[1]]] == 255).all()


def test_an_actor_pool_waits_for_an_autoscaling_cluster_and_is_refused_by_a_fixed_one(ray_local, capsys):
    """The shipped KubeRay and launcher clusters start their GPU group at zero nodes: a GPU map waits for the
    autoscaler there (as training and sweeps do) instead of refusing because no node has a GPU yet."""
    from h2crop_core.errors import SettingError
    from pipelines.mapping.run import check_actor_pool
    from pipelines.runtime.cluster import autoscales
    from pipelines.settings import MapSettings

    def report(kind: str) -> bytes:  # the autoscaler's status report, as the cluster tests read it from Ray
        return json.dumps({"autoscaler_report": {"node_type_mapping": {"127.0.0.1": kind}}}).encode()

    gpu = MapSettings(use_gpu=True)
    with pytest.raises(SettingError, match="one actor needs 1 GPU; the largest Ray node has 0"):
        check_actor_pool(gpu, autoscaling=autoscales(report("node_7f3a")))  # `ray start` nodes: fixed
    capsys.readouterr()
    assert check_actor_pool(gpu, autoscaling=autoscales(report("gpu-group"))).use_gpu  # KubeRay: waits
    assert "waiting for the autoscaler: 1 x actor (4 CPU, 1 GPU)" in capsys.readouterr().out
    # the default CPUs per actor come from the cluster (4 CPUs in the session's Ray), not the driver's cores
    assert check_actor_pool(MapSettings(actors=2), autoscaling=False).cpus_per_actor == 2.0
    assert check_actor_pool(MapSettings(actors=1), autoscaling=False).cpus_per_actor == 4.0
    assert check_actor_pool(MapSettings(actors=1, cpus_per_actor=1.5), autoscaling=False).cpus_per_actor == 1.5


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


def test_user_rasters_monthly_files_and_enmap_in_another_crs(ray_local, synth_root, checkpoint, tmp_path, capsys):
    """The region as a user has it: twelve monthly S2 files and EnMAP in the next UTM zone maps as the
    stacked, pre-aligned region but at the scene's rim (the reader's tests show monthly files read exactly
    as the stacked one)."""
    region = synth_root / "region"
    write_monthly_s2(region / "s2.tif", tmp_path / "s2")
    utm32 = warp_to(region / "enmap.tif", tmp_path / "enmap_32632.tif", "EPSG:32632", 10.0)
    nearest = ["--enmap-resampling", "nearest"]
    assert main(map_command(checkpoint, tmp_path / "aligned", "--region", region) + nearest) == 0
    assert (
        main(
            map_command(
                checkpoint,
                tmp_path / "monthly",
                "--s2",
                tmp_path / "s2",
                "--enmap",
                utm32,
                "--prior",
                region / "prior.tif",
            )
            + nearest
        )
        == 0
    )
    aligned, warped = read_levels(tmp_path / "aligned"), read_levels(tmp_path / "monthly")
    differ = (aligned != warped).any(axis=0)
    assert differ.mean() < 0.03, differ.mean()
    inner = differ[9:-9, 9:-9]  # away from the scene's rim (3 EnMAP pixels)
    assert inner.mean() < 0.01, inner.mean()
    with rasterio.open(tmp_path / "monthly" / "level4.tif") as out, rasterio.open(region / "s2.tif") as s2:
        assert out.crs == s2.crs and out.transform == s2.transform, "the S2 grid is the map's grid"
    record = json.loads((tmp_path / "monthly" / "mapping.json").read_text())
    assert [r["name"] for r in record["inputs"]["rasters"]["s2"]] == [f"S2_2023-{m:02d}.tif" for m in range(1, 7)]
    assert record["enmap_resampling"] == "nearest"


def test_nodata_holes_become_nodata_in_the_map_and_its_confidence(ray_local, synth_root, checkpoint, tmp_path):
    region = tmp_path / "region"
    shutil.copytree(synth_root / "region", region)
    with rasterio.open(region / "s2.tif", "r+") as dst:  # no S2 in any month: a 30 x 20 px hole
        dst.write(np.full((dst.count, 20, 30), dst.nodata, np.int16), window=Window(100, 40, 30, 20))
    with rasterio.open(region / "enmap.tif", "r+") as dst:  # no EnMAP under valid S2: 4 x 2 EnMAP px = 12 x 6 px
        dst.write(np.full((dst.count, 2, 4), dst.nodata, np.int16), window=Window(10, 50, 4, 2))
    assert main(map_command(checkpoint, tmp_path / "map", "--region", region)) == 0
    maps, confidence = read_levels(tmp_path / "map"), read_levels(tmp_path / "map", "confidence_")
    hole = np.zeros((192, 192), bool)
    hole[40:60, 100:130] = True
    hole[150:156, 30:42] = True
    assert (maps[:, hole] == 255).all() and (confidence[:, hole] == 0).all()
    assert (maps[:, ~hole] != 255).all() and (confidence[:, ~hole] > 0).all()
    summary = json.loads((tmp_path / "map" / "summary.json").read_text())
    assert summary["mapped_km2"] == pytest.approx((192 * 192 - hole.sum()) * 100 / 1e6)


def test_a_killed_map_into_a_bucket_resumes_from_its_tiles_to_the_same_bytes(
    ray_local, checkpoint, s3_bucket, tmp_path, capsys
):
    """SIGKILL of the driver mid-run (its actors die with it), writing to an S3 bucket; the rerun from another
    staging folder (as on another machine) predicts only the tiles missing from the bucket, and its outputs,
    confidence included, equal an uninterrupted local run's byte for byte."""
    data = tmp_path / "data"
    assert main(["synth", "--out", str(data), "--samples", "3", "--region-size", "288", "--quiet"]) == 0
    bucket = Remote(f"{s3_bucket}/maps/killed")
    command = map_command(checkpoint, bucket.location, "--region", data / "region")
    command[command.index("--batch-size") + 1] = "1"
    killed = [*command, "--staging", str(tmp_path / "staging_killed")]
    driver = kill_cli_when(killed, ray_local, lambda: len(bucket.names("tiles")) >= 3)
    done = len(bucket.names("tiles"))
    assert 3 <= done < 16 and not bucket.exists("map.json"), (done, driver.stderr.read())
    capsys.readouterr()
    assert main([*command, "--staging", str(tmp_path / "staging")]) == 0
    assert f"resuming: {done} of 16 tiles already done" in capsys.readouterr().out
    manifest = json.loads(bucket.read_text("map.json"))
    assert manifest["tiles_resumed"] == done and manifest["tiles_predicted"] == 16 - done
    assert (
        set(OUTPUTS) | {"summary.json", "quicklook.png", "mapping.json"} <= bucket.names()
        and len(bucket.names("tiles")) == 16
    )
    whole = [
        str(tmp_path / "whole") if part == bucket.location else part for part in command
    ]  # same batches, a local folder
    assert main(whole) == 0
    for name in OUTPUTS:
        assert (
            bucket.fs.open_input_stream(f"{bucket.root}/{name}").read() == (tmp_path / "whole" / name).read_bytes()
        ), name
    # the finished map run again from another machine's staging folder: nothing downloaded, nothing re-sent
    stamps = {i.path: i.mtime for i in bucket.fs.get_file_info(FileSelector(bucket.root, recursive=True))}
    capsys.readouterr()
    assert main([*command, "--staging", str(tmp_path / "again")]) == 0
    assert "this map is complete" in capsys.readouterr().out
    assert not any((tmp_path / "again" / name).exists() for name in OUTPUTS)  # the maps stayed in the bucket
    assert {i.path: i.mtime for i in bucket.fs.get_file_info(FileSelector(bucket.root, recursive=True))} == stamps


def test_a_bucket_tile_writer_keeps_nothing_on_its_node_and_refuses_another_runs_bucket(s3_bucket, tmp_path):
    import tempfile

    from h2crop_core.mapping.results import TileResult
    from h2crop_core.mapping.writer import RECORD, MappingRecordError, RemoteTileWriter

    bucket = Remote(f"{s3_bucket}/maps/actor")
    bucket.write(RECORD, lambda file: file.write(json.dumps({"run": 1}).encode()))
    tile = TileGrid(96, 96, tile=96, margin=0).tiles()[0]
    result = TileResult(np.ones((4, 96, 96), np.uint8), np.full((4, 96, 96), 200, np.uint8))
    scratch = tmp_path / "node_tmp"
    scratch.mkdir()
    saved, tempfile.tempdir = tempfile.tempdir, str(scratch)  # the actor node's temporary folder
    try:
        writer = RemoteTileWriter(bucket.location, {"run": 1})
        assert writer.write(tile, result) == "tiles/000000.npz"
    finally:
        tempfile.tempdir = saved
    assert bucket.names("tiles") == {"000000.npz"} and not list(scratch.iterdir())
    with pytest.raises(MappingRecordError, match="not this mapping run's record"):
        RemoteTileWriter(bucket.location, {"run": 2})


def test_parcels_of_a_map_to_geoparquet(ray_local, synth_root, checkpoint, tmp_path, capsys):
    import geopandas as gpd

    out = tmp_path / "map"
    assert main(map_command(checkpoint, out, "--region", synth_root / "region")) == 0
    capsys.readouterr()
    output = tmp_path / "parcels.parquet"
    assert (
        main(
            [
                "parcels",
                "--map",
                str(out),
                "--parcels",
                str(synth_root / "region" / "parcels.gpkg"),
                "--output",
                str(output),
                "--id-column",
                "parcel_id",
                "--quiet",
            ]
        )
        == 0
    )
    assert "-> " in capsys.readouterr().out
    table = gpd.read_parquet(output)
    truth = gpd.read_file(synth_root / "region" / "parcels.gpkg")
    assert table.crs == truth.crs and table["parcel_id"].tolist() == truth["parcel_id"].tolist()
    mapped = table[table["n_pixels"] > 0]
    assert (
        len(mapped) == len(table)
        and mapped["level4_share"].between(0, 1).all()
        and mapped["level4_confidence"].between(0, 1).all()
    )
    loaded = load_checkpoint(checkpoint)
    assert loaded.taxonomy.valid_path_mask(
        np.stack([mapped[f"level{k}_id"].to_numpy(int) for k in range(1, 5)])[:, None]
    ).all()
    assert (
        main(
            [
                "parcels",
                "--map",
                str(tmp_path),
                "--parcels",
                str(synth_root / "region" / "parcels.gpkg"),
                "--output",
                str(output),
            ]
        )
        == 2
    )
    assert "map.json: missing" in capsys.readouterr().err
