import numpy as np
import pytest
import torch

from h2crop_core.data.normalise import NormStats
from h2crop_core.mapping import RegionReader, TileGrid, predict_tiles
from h2crop_core.models import DualStreamModel, get_preset


@pytest.fixture(scope="module")
def setup(synth_root, synth_taxonomy):
    stats = NormStats(np.full(10, 1000.0), np.full(10, 200.0), np.full(218, 1000.0), np.full(218, 200.0))
    config = get_preset("tiny_crops_S2_H_P_jun", num_classes=synth_taxonomy.num_classes)
    torch.manual_seed(0)
    model = DualStreamModel(config).eval()
    reader = RegionReader(synth_root / "region", "jun", config.input_keys, stats, s2_bands=10, enmap_bands=218, factor=3)
    return model, reader, TileGrid(192, 192, tile=96, margin=8).tiles()


def test_cores_are_the_tile_predictions_cropped_and_nodata_is_255(setup, synth_taxonomy):
    model, reader, tiles = setup
    batch = [tiles[0], tiles[4]]
    samples = [reader.read(t) for t in batch]
    samples[1]["valid"][30:40, 30:40] = False  # as the reader marks pixels without S2 data
    cores = predict_tiles(model, samples, batch, decode="argmax")
    with torch.no_grad():
        logits = model(**{k: torch.from_numpy(np.stack([s[k] for s in samples])) for k in model.config.input_keys})
    full = torch.stack([level.argmax(1) for level in logits], 1).numpy().astype(np.uint8)
    for tile, core, expected in zip(batch, cores, full):
        rows, cols = tile.core_in_tile
        assert core.shape == (4, rows.stop - rows.start, cols.stop - cols.start) and core.dtype == np.uint8
        expected[:, ~samples[batch.index(tile)]["valid"]] = 255
        np.testing.assert_array_equal(core, expected[:, rows, cols])
    rows, cols = tiles[4].core_in_tile
    assert (cores[1][:, 30 - rows.start : 40 - rows.start, 30 - cols.start : 40 - cols.start] == 255).all()


def test_consistent_decoding_gives_taxonomy_paths(setup, synth_taxonomy):
    model, reader, tiles = setup
    (core,) = predict_tiles(model, [reader.read(tiles[8])], [tiles[8]], decode="consistent", paths=synth_taxonomy.paths)
    assert synth_taxonomy.valid_path_mask(core).all()
    with pytest.raises(ValueError, match="needs a four-level model and the taxonomy's paths"):
        predict_tiles(model, [reader.read(tiles[8])], [tiles[8]], decode="consistent")
