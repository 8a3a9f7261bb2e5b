"""Helpers shared by the model tests: tiny models and random inputs of the right shapes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from h2crop_core.models import DualStreamModel, ModelConfig
from h2crop_core.models.summary import example_inputs

#: the smallest S2 tile the architecture takes quickly (divisible by 32; EnMAP tile 32 divisible by the
#: tiny spectral grid of 4).
SMALL_TILE = 96


def build(config: ModelConfig, seed: int = 0) -> DualStreamModel:
    torch.manual_seed(seed)
    return DualStreamModel(config)


def twins(config: ModelConfig, **changes: object) -> tuple[DualStreamModel, DualStreamModel]:
    """A model of ``config`` and one of ``config`` with execution ``changes``, sharing the same weights."""
    first = build(config)
    second = DualStreamModel(config.replace(**changes))
    second.load_state_dict(first.state_dict())
    return first, second


def random_inputs(config: ModelConfig, batch: int = 2, tile: int = SMALL_TILE, seed: int = 0) -> dict[str, Tensor]:
    return example_inputs(config, batch=batch, tile=tile, device="cpu", generator=torch.Generator().manual_seed(seed))


def training_loss(logits: list[Tensor], seed: int = 0) -> Tensor:
    """Cross-entropy of every level against random labels, summed (the recipe's loss)."""
    generator = torch.Generator().manual_seed(seed)
    loss = logits[0].new_zeros(())
    for level in logits:
        target = torch.randint(0, level.shape[1], (level.shape[0], *level.shape[2:]), generator=generator)
        loss = loss + F.cross_entropy(level, target)
    return loss


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)
