import numpy as np
import pytest
import torch

from h2crop_core.data.normalise import NormStats
from h2crop_core.mapping import RegionReader, TileGrid, inputs_from_region, predict_tiles
from h2crop_core.models import DualStreamModel, get_preset


@pytest.fixture(scope="module")
def setup(synth_root, synth_taxonomy):
    stats = NormStats(np.full(10, 1000.0), np.full(10, 200.0), np.full(218, 1000.0), np.full(218, 200.0))
    config = get_preset("tiny_crops_S2_H_P_jun", num_classes=synth_taxonomy.num_classes)
    torch.manual_seed(0)
    model = DualStreamModel(config).eval()
    reader = RegionReader(
        inputs_from_region(synth_root / "region"),
        "jun",
        config.input_keys,
        stats,
        s2_bands=10,
        enmap_bands=218,
        factor=3,
    )
    return model, reader, TileGrid(192, 192, tile=96, margin=8).tiles()


def test_cores_are_the_tile_predictions_cropped_and_nodata_is_255(setup, synth_taxonomy):
    model, reader, tiles = setup
    batch = [tiles[0], tiles[4]]
    samples = [reader.read(t) for t in batch]
    samples[1]["valid"][30:40, 30:40] = False  # as the reader marks pixels without S2 data
    results = predict_tiles(model, samples, batch, decode="argmax")
    with torch.no_grad():
        logits = model(**{k: torch.from_numpy(np.stack([s[k] for s in samples])) for k in model.config.input_keys})
    full = torch.stack([level.argmax(1) for level in logits], 1).numpy().astype(np.uint8)
    probability = torch.stack([torch.softmax(level.float(), 1).amax(1) for level in logits], 1).numpy()
    for tile, (core, confidence), expected, p, sample in zip(batch, results, full, probability, samples):
        rows, cols = tile.core_in_tile
        assert core.shape == (4, rows.stop - rows.start, cols.stop - cols.start) and core.dtype == np.uint8
        assert confidence.shape == core.shape and confidence.dtype == np.uint8
        expected[:, ~sample["valid"]] = 255
        np.testing.assert_array_equal(core, expected[:, rows, cols])
        valid = sample["valid"][rows, cols]
        expected_confidence = np.clip(np.round(p[:, rows, cols] * 255), 1, 255)
        np.testing.assert_allclose(confidence[:, valid], expected_confidence[:, valid], atol=1)
        assert (confidence[:, ~valid] == 0).all() and (confidence[:, valid] >= 1).all()
    rows, cols = tiles[4].core_in_tile
    assert (results[1].ids[:, 30 - rows.start : 40 - rows.start, 30 - cols.start : 40 - cols.start] == 255).all()


def test_consistent_decoding_gives_taxonomy_paths(setup, synth_taxonomy):
    model, reader, tiles = setup
    ((core, confidence),) = predict_tiles(
        model, [reader.read(tiles[8])], [tiles[8]], decode="consistent", paths=synth_taxonomy.paths
    )
    assert synth_taxonomy.valid_path_mask(core).all()
    assert (confidence[1:] <= confidence[:-1]).all(), "a path is never likelier than its first steps"
    with pytest.raises(ValueError, match="needs a four-level model and the taxonomy's paths"):
        predict_tiles(model, [reader.read(tiles[8])], [tiles[8]], decode="consistent")
