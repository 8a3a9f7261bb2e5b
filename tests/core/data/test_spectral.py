"""Spectral augmentation (h2crop_core.data.spectral): it acts in reflectance, where brightness and band
levels really vary, on z-scored batches, the same ground on S2 and EnMAP."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from h2crop_core.data.normalise import NormStats
from h2crop_core.data.spectral import OFFSET_PER_STRENGTH, SpectralJitter, smooth_field
from h2crop_core.errors import SettingError

OFFSET, SCALE = 1000.0, 10_000.0
STATS = NormStats(
    np.linspace(1500, 4000, 10), np.linspace(500, 1500, 10), np.linspace(300, 3000, 20), np.linspace(200, 900, 20)
)


def batch(seed: int = 0) -> dict:
    """Reflectance 0.02-0.6 as z-scores, with labels."""
    g = torch.Generator().manual_seed(seed)
    s2 = torch.rand((2, 3, 10, 48, 48), generator=g) * 0.58 + 0.02
    enmap = torch.rand((2, 20, 16, 16), generator=g) * 0.58 + 0.02
    s2_z = (s2 * SCALE + OFFSET - torch.as_tensor(STATS.s2_mean, dtype=torch.float32)[:, None, None]) / torch.as_tensor(
        STATS.s2_std, dtype=torch.float32
    )[:, None, None]
    enmap_z = (enmap * SCALE - torch.as_tensor(STATS.enmap_mean, dtype=torch.float32)[:, None, None]) / torch.as_tensor(
        STATS.enmap_std, dtype=torch.float32
    )[:, None, None]
    label = torch.randint(0, 5, (2, 4, 48, 48), generator=g, dtype=torch.uint8)
    return {"s2": s2_z, "enmap": enmap_z, "label": label, "reflectance": (s2, enmap)}


def s2_reflectance(z: torch.Tensor) -> torch.Tensor:
    std, mean = (torch.as_tensor(a, dtype=torch.float32)[:, None, None] for a in (STATS.s2_std, STATS.s2_mean))
    return (z * std + mean - OFFSET) / SCALE


def enmap_reflectance(z: torch.Tensor) -> torch.Tensor:
    std, mean = (torch.as_tensor(a, dtype=torch.float32)[:, None, None] for a in (STATS.enmap_std, STATS.enmap_mean))
    return (z * std + mean) / SCALE


def jitter(strength: float) -> SpectralJitter:
    return SpectralJitter.for_stats(strength, STATS, OFFSET, SCALE, factor=3)


def test_a_gain_and_band_levels_in_reflectance_the_same_ground_on_both_sensors():
    b = batch()
    out = jitter(0.1)(b, torch.Generator().manual_seed(1))
    s2, enmap = b["reflectance"]
    new_s2, new_enmap = s2_reflectance(out["s2"]), enmap_reflectance(out["enmap"])
    # EnMAP: one gain per pixel for every band (the spectrum's shape is kept)
    ratio = new_enmap / enmap
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-4, atol=1e-4)
    # S2: r' = gain · r + level(band), the same gain and levels every month: differences between months scale
    gain = (new_s2[:, 0] - new_s2[:, 1]) / (s2[:, 0] - s2[:, 1])  # (B, bands, H, W)
    well_posed = (s2[:, 0] - s2[:, 1]).abs() > 0.05
    assert torch.allclose(gain[well_posed], gain.median(1, keepdim=True).values.expand_as(gain)[well_posed], atol=2e-3)
    # the S2 gain, averaged over each EnMAP pixel's 3×3, is EnMAP's gain there
    pooled = torch.nn.functional.avg_pool2d(gain.median(1, keepdim=True).values, 3)
    assert torch.allclose(pooled[:, 0], ratio[:, 0], atol=5e-3)
    # the gain drifts smoothly over the tile: neighbours differ far less than the tile's spread
    log_gain = ratio[:, 0].log()
    assert (log_gain[:, 1:] - log_gain[:, :-1]).abs().mean() < 0.3 * log_gain.std()
    level = new_s2 - gain.median(1, keepdim=True).values[:, None] * s2
    assert level.std() > 0.2 * OFFSET_PER_STRENGTH * 0.1  # band levels move too
    assert out["label"] is b["label"]  # labels untouched


def test_strength_is_the_std_of_the_log_gain_and_zero_turns_it_off():
    b = batch()
    assert jitter(0.0)(b, torch.Generator()) is b
    gains = [
        (enmap_reflectance(jitter(0.1)(b, torch.Generator().manual_seed(s))["enmap"]) / b["reflectance"][1])[:, 0]
        for s in range(30)
    ]
    assert 0.07 < torch.stack(gains).log().std() < 0.14


def test_the_same_generator_state_gives_the_same_jitter_and_fields_have_unit_spread():
    b = batch()
    one, two = (jitter(0.08)(b, torch.Generator().manual_seed(5)) for _ in range(2))
    assert torch.equal(one["s2"], two["s2"]) and torch.equal(one["enmap"], two["enmap"])
    assert not torch.equal(one["s2"], jitter(0.08)(b, torch.Generator().manual_seed(6))["s2"])
    field = smooth_field(64, 1, (48, 48), 16, torch.Generator().manual_seed(0))
    assert field.shape == (64, 1, 48, 48) and 0.8 < float(field.std()) < 1.2


def test_the_training_step_applies_it_after_the_joint_augmentations():
    from pipelines.settings import TrainSettings
    from pipelines.training.steps import augment

    b = batch()
    settings = TrainSettings(data="r", preset="p", flip_rotate=False, cutmix_p=0.0)
    assert augment(b, torch.Generator(), settings, 3) is b  # nothing asked: the same batch
    out = augment(b, torch.Generator().manual_seed(2), settings, 3, jitter(0.08))
    assert not torch.equal(out["s2"], b["s2"]) and not torch.equal(out["enmap"], b["enmap"])
    assert torch.equal(out["label"], b["label"])


@pytest.mark.parametrize("convention, zero", [("l2a-offset-1000", 1000.0), ("reflectance-x10000-no-offset", 0.0)])
def test_the_run_takes_reflectance_zero_from_the_datasets_s2_encoding(convention, zero):
    from h2crop_core.data.schema import SampleSpec
    from h2crop_core.products.contract import InputContract
    from pipelines.settings import TrainSettings
    from pipelines.training.context import DatasetContext, jitter_for

    data = DatasetContext("r", None, SampleSpec(size=96), STATS, (), (), "f", InputContract(s2_convention=convention))
    assert jitter_for(TrainSettings(data="r", preset="p"), data) is None  # off by default
    made = jitter_for(TrainSettings(data="r", preset="p", spectral_jitter=0.05), data)
    expected = (zero - torch.as_tensor(STATS.s2_mean, dtype=torch.float32)) / torch.as_tensor(STATS.s2_std)
    assert made.strength == 0.05 and torch.allclose(made.s2_zero, expected.float())
    with pytest.raises(SettingError, match="spectral_jitter"):
        TrainSettings(data="r", preset="p", spectral_jitter=2.0)
