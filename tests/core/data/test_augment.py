import torch
import torch.nn.functional as F

from h2crop_core.data.augment import batch_cutmix, flip_rotate, random_flip_rotate


def _coherent_batch(size: int = 6, side: int = 48, seed: int = 0) -> dict:
    """A batch whose modalities are functions of one ground truth, so any misalignment shows:
    EnMAP is the 3x3 average of S2 band 0 of month 0; labels and priors are S2-derived ids."""
    generator = torch.Generator().manual_seed(seed)
    field = torch.randint(0, 200, (size, side, side), generator=generator)
    s2 = field[:, None, None].repeat(1, 2, 3, 1, 1).to(torch.float32)  # (B, T=2, C=3, H, W)
    s2 = s2 + torch.arange(2 * 3, dtype=torch.float32).reshape(1, 2, 3, 1, 1) * 1000
    return {
        "s2": s2,
        "enmap": F.avg_pool2d(field[:, None].float(), 3).repeat(1, 4, 1, 1),
        "label": torch.stack([field % (k + 5) for k in range(4)], 1).to(torch.uint8),
        "prior": torch.stack([(field + 1) % (k + 5) for k in range(4)], 1).to(torch.uint8),
        "name": [f"s{i}" for i in range(size)],
    }


def _assert_coherent(batch: dict) -> None:
    field = batch["s2"][:, 0, 0]
    torch.testing.assert_close(batch["enmap"][:, 0], F.avg_pool2d(field[:, None], 3)[:, 0])
    for k in range(4):
        assert torch.equal(batch["label"][:, k], (field.long() % (k + 5)).to(torch.uint8))
        assert torch.equal(batch["prior"][:, k], ((field.long() + 1) % (k + 5)).to(torch.uint8))


def test_every_symmetry_moves_all_modalities_together():
    batch = _coherent_batch()
    seen = set()
    for turns in range(4):
        for flip in (False, True):
            out = flip_rotate(batch, turns, flip)
            _assert_coherent(out)
            seen.add(out["s2"][0, 0, 0].numpy().tobytes())
    assert len(seen) == 8  # eight distinct symmetries
    vertical = flip_rotate(batch, 2, True)  # 180 degrees then mirror = vertical flip
    assert torch.equal(vertical["label"], batch["label"].flip(-2))


def test_random_flip_rotate_is_per_sample_and_joint():
    batch = _coherent_batch(size=16)
    out = random_flip_rotate(batch, torch.Generator().manual_seed(1))
    _assert_coherent(out)
    used = set()
    for i in range(16):
        sample = {key: batch[key][i] for key in ("s2", "enmap", "label", "prior")}
        matches = [
            (turns, flip)
            for turns in range(4)
            for flip in (False, True)
            if all(torch.equal(flip_rotate(sample, turns, flip)[key], out[key][i]) for key in sample)
        ]
        assert len(matches) == 1  # one symmetry explains every modality of the sample
        used.add(matches[0])
    assert len(used) > 2  # samples get independent draws
    assert out["name"] == batch["name"]


def test_cutmix_pastes_the_same_ground_box_into_every_modality_including_priors():
    batch = _coherent_batch(size=8)
    out = batch_cutmix(batch, torch.Generator().manual_seed(3), p=1.0)
    _assert_coherent(out)  # EnMAP box aligned with the S2 box, priors mixed with the labels
    for i in range(8):
        differs = (out["label"][i] != batch["label"][i]).any(0)
        assert differs.any()  # every sample got a box from another sample
        rows, cols = torch.nonzero(differs, as_tuple=True)
        height = int(rows.max() - rows.min() + 1)
        assert height >= 0.5 * 48 - 3  # side at least half the tile (up to the 3-px snapping)
        assert (out["prior"][i] != batch["prior"][i]).any()
    # the input batch is untouched
    _assert_coherent(batch)
    assert torch.equal(batch["label"], _coherent_batch(size=8)["label"])


def test_cutmix_probability_zero_is_identity():
    batch = _coherent_batch()
    out = batch_cutmix(batch, torch.Generator().manual_seed(0), p=0.0)
    for key in ("s2", "enmap", "label", "prior"):
        assert torch.equal(out[key], batch[key])
