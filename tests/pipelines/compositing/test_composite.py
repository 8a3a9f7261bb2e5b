"""``h2crop composite`` end to end on a local Ray: the monthly files ``map`` reads, resuming byte for byte after a
SIGKILL, and refusals of bad grids, scene sources and reruns."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from h2crop_core.products.harmonise import NODATA, S2_CONVENTION
from h2crop_core.products.sentinel2 import MODEL_BANDS
from pipelines.cli.main import main
from tests.pipelines.conftest import kill_cli_when

pytestmark = pytest.mark.ray


def command(products, output, *extra) -> list[str]:
    like = products / "truth" / "S2_2022-01.tif"
    return ["composite", "--scenes", str(products / "s2"), "--year", "2022", "--like", str(like)] + [
        "--output", str(output), "--months", "1-3", "--block", "32", "--actors", "2", "--quiet", *extra
    ]  # fmt: skip


def test_a_killed_composite_resumes_to_the_same_bytes(ray_local, synth_products, tmp_path, capsys):
    """SIGKILL of the driver after a few blocks (its actors die with it); the rerun makes only the missing
    blocks, and its files equal an uninterrupted run's byte for byte."""
    killed = tmp_path / "killed"
    argv = command(synth_products, killed, "--actors", "1")
    driver = kill_cli_when(argv, ray_local, lambda: len(list(killed.glob("blocks/*.npz"))) >= 3)
    done = len(list(killed.glob("blocks/*.npz")))
    assert 3 <= done < 36 and not (killed / "composite.json").exists(), (done, driver.stderr.read())
    capsys.readouterr()
    assert main(command(synth_products, killed)) == 0
    assert f"resuming: {done} of 36 blocks already done" in capsys.readouterr().out
    assert main(command(synth_products, tmp_path / "whole")) == 0
    names = ["S2_2022-01.tif", "S2_2022-02.tif", "S2_2022-03.tif", "clear/clear_2022-02.tif"]
    for name in names:
        assert (killed / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    manifest = json.loads((killed / "composite.json").read_text())
    assert manifest["blocks_resumed"] == done and manifest["blocks_made"] == 36 - done
    assert not (killed / "blocks").exists()  # deleted once the monthly files are written
    assert manifest["convention"] == S2_CONVENTION and len(manifest["scenes"]) == 9
    with rasterio.open(killed / "S2_2022-02.tif") as handle:
        assert handle.descriptions == MODEL_BANDS and handle.tags()["h2crop_s2_convention"] == S2_CONVENTION
        assert handle.nodata == NODATA and handle.dtypes[0] == "int16"
        data = handle.read()
    with rasterio.open(synth_products / "truth" / "S2_2022-02.tif") as handle:
        truth = handle.read()
    assert np.median(np.abs(data.astype(int) - truth)[:, data[0] != NODATA]) < 80
    # the same grid given by its bounds gives the same files
    with rasterio.open(synth_products / "truth" / "S2_2022-01.tif") as handle:
        bounds, crs = [str(v) for v in handle.bounds], handle.crs.to_string()
    by_bounds = command(synth_products, tmp_path / "bounds")
    by_bounds[by_bounds.index("--like") : by_bounds.index("--like") + 2] = ["--bounds", *bounds, "--crs", crs]
    assert main(by_bounds) == 0
    assert (tmp_path / "bounds" / names[1]).read_bytes() == (tmp_path / "whole" / names[1]).read_bytes()
    # a rerun of the finished composite does nothing; other settings are refused, --overwrite starts over
    capsys.readouterr()
    assert main(command(synth_products, killed)) == 0
    out = capsys.readouterr().out
    assert "this composite is complete" in out and "(0 blocks made now, 36 resumed)" in out
    assert main(command(synth_products, killed, "--method", "mean")) == 2
    err = capsys.readouterr().err
    assert "made with other inputs or settings: options.method" in err and len(err.strip().splitlines()) == 1
    assert main(command(synth_products, killed, "--method", "mean", "--overwrite")) == 0
    assert "--overwrite: deleted the earlier composite" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--bounds", "0", "0", "10", "10"], "--like RASTER or with --bounds W S E N and --crs, not both"),
        (["--year", "2019"], "no scene of 2019 (scenes found from 2022)"),
        (["--months", "0-3"], "months: '0-3' is outside 1-12"),
        (["--method", "max"], "invalid choice: 'max'"),
    ],
)
def test_bad_requests_are_refused_in_one_line(synth_products, tmp_path, capsys, change, message):
    argv = command(synth_products, tmp_path / "out")
    flag = change[0]
    if flag in argv:
        argv[argv.index(flag) + 1 : argv.index(flag) + 2] = change[1:]
    else:
        argv += change
    if flag == "--method":
        with pytest.raises(SystemExit):
            main(argv)
    else:
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not (tmp_path / "out" / "blocks").exists()
