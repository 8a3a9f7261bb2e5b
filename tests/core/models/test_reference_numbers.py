"""Faithfulness: the full presets have the research model's size and cost (H2CROP.md §3), counted on the
meta device without running them."""

from __future__ import annotations

import pytest

from h2crop_core.models import get_preset
from h2crop_core.models.summary import summarize

#: preset -> (parameters actually used, forward GFLOPs) measured on the research code, batch 1, 192×192.
REFERENCE = {
    "crops_S2_jun": (115.0e6, 91.0),
    "crops_S2_P_jun": (115.5e6, 125.0),
    "crops_S2_H_jun": (175.5e6, 967.0),
    "crops_S2_H_P_jun": (176.2e6, 1021.0),
    "crops_S2_H_P_dec": (183.0e6, 1059.0),
}


@pytest.mark.parametrize("name", list(REFERENCE))
def test_parameters_and_flops_match_the_research_model(name: str) -> None:
    parameters, gflops = REFERENCE[name]
    summary = summarize(get_preset(name))
    assert summary.parameters["total"] == pytest.approx(parameters, rel=0.005)
    assert summary.flops["total"] / 1e9 == pytest.approx(gflops, rel=0.05)


def test_component_costs_of_the_s2_model() -> None:
    """S2 encoder 87.7 M / 32.6 GFLOPs, decoder 26.8 M / 21.7, heads 36.6 GFLOPs (H2CROP.md §3)."""
    summary = summarize(get_preset("crops_S2_jun"))
    assert summary.parameters["s2.encoder"] == pytest.approx(87.7e6, rel=0.005)
    assert summary.parameters["s2.decoder"] == pytest.approx(26.8e6, rel=0.005)
    assert summary.flops["s2.encoder"] / 1e9 == pytest.approx(32.6, rel=0.05)
    assert summary.flops["s2.decoder"] / 1e9 == pytest.approx(21.7, rel=0.05)
    assert summary.flops["heads"] / 1e9 == pytest.approx(36.6, rel=0.05)


def test_enmap_spatial_branch_dominates_and_patching_cuts_its_attention() -> None:
    """Spatial attention is 309 GFLOPs of the 1,021; 2×2 patches divide attention by 16, linears by 4."""
    faithful = summarize(get_preset("crops_S2_H_P_jun"))
    patched = summarize(get_preset("crops_S2_H_P_jun", spatial_patch=2))
    assert faithful.flops["enmap.spatial"] / faithful.flops["total"] > 0.65
    # 6 blocks × (QKᵀ + AV) × 4,096² tokens × 768 wide × 2 FLOPs per multiply-add
    attention = 6 * 2 * 4096**2 * 768 * 2
    saved = faithful.flops["enmap.spatial"] - patched.flops["enmap.spatial"]
    linears = 6 * 4096 * (768 * 2304 + 768 * 768 + 2 * 768 * 3072) * 2 + 4096 * 218 * 768 * 2
    assert saved == pytest.approx(attention * 15 / 16 + linears * 3 / 4, rel=0.01)


def test_output_shapes_per_level() -> None:
    summary = summarize(get_preset("crops_S2_H_P_jun"))
    assert summary.output_shapes == [(1, 7, 192, 192), (1, 37, 192, 192), (1, 83, 192, 192), (1, 102, 192, 192)]
    assert summarize(get_preset("level3_crops_S2_H_P_jun")).output_shapes == [(1, 83, 192, 192)]
