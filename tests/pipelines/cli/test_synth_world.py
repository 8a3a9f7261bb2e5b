"""``h2crop synth --world``: the PROSAIL world writes a valid dataset and its picture; a kind that is not one
is refused."""

import h5py
import numpy as np
import pytest

from h2crop_core.data.synth import generate_taxonomy
from h2crop_core.data.validate import validate_dataset
from h2crop_core.taxonomy import Taxonomy
from pipelines.cli.main import main


def test_synth_world_prosail_writes_a_valid_dataset_and_world_png(tmp_path, capsys):
    taxonomy_csv = generate_taxonomy((2, 3, 4, 5), seed=3).to_csv(tmp_path / "classes.csv")
    root = tmp_path / "data"
    args = ["synth", "--out", str(root), "--samples", "3", "--size", "96", "--region-size", "0", "--quiet"]
    assert main([*args, "--world", "prosail", "--taxonomy", str(taxonomy_csv)]) == 0
    assert "wrote 3 samples" in capsys.readouterr().out
    report = validate_dataset(root, taxonomy=Taxonomy.from_csv(taxonomy_csv), progress=False)
    assert report.ok and report.good == 3
    assert (root / "world.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main([*args[:2], str(tmp_path / "drawn"), *args[3:]]) == 0  # the default: no picture
    assert not (tmp_path / "drawn" / "world.png").exists()
    # bare soil through the canopy: other images, the same labels
    gappy = tmp_path / "gappy"
    assert (
        main([*args[:2], str(gappy), *args[3:], "--world", "prosail", "--taxonomy", str(taxonomy_csv), "--gaps", "0.4"])
        == 0
    )
    for name in (p.name for p in (root / "h5_data").glob("*.h5")):
        with h5py.File(root / "h5_data" / name) as closed, h5py.File(gappy / "h5_data" / name) as open_:
            assert (closed["label"][()] == open_["label"][()]).all()
            assert np.abs(closed["S2_data"][()].astype(float) - open_["S2_data"][()]).mean() > 100
    assert main([*args[:2], str(tmp_path / "drawn-gaps"), *args[3:], "--gaps", "0.4"]) == 2
    assert "error: gaps is a prosail world's" in capsys.readouterr().err


def test_synth_refuses_a_world_that_is_not_one(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", "--out", str(tmp_path / "x"), "--world", "painted", "--quiet"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err  # argparse's wording (its quotes vary with the Python version)
    assert "--world: invalid choice: 'painted'" in err and "drawn" in err and "prosail" in err
