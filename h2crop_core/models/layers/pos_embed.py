"""Fixed sinusoidal position tables (the Transformer's), as the EnMAP branches use them."""

from __future__ import annotations

import torch
from torch import Tensor

from h2crop_core.models.layers.tensor_cache import tensor_cache


@tensor_cache(maxsize=32)
def _table(num_positions: int, dim: int) -> Tensor:
    position = torch.arange(num_positions, dtype=torch.float64)[:, None]
    # feature j uses frequency 1 / 10000^(2·⌊j/2⌋ / dim); sine on even features, cosine on odd ones
    exponent = 2 * (torch.arange(dim) // 2) / dim
    angles = position / torch.pow(10000.0, exponent)[None, :]
    table = torch.where(torch.arange(dim) % 2 == 0, torch.sin(angles), torch.cos(angles))
    return table.float()


def sinusoid_table(
    num_positions: int, dim: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> Tensor:
    """(1, num_positions, dim) fixed sinusoidal position table; computed once per size on the CPU.

    Not a parameter or buffer: it is never learned and depends only on the token count, so any tile size
    or band count gets its own table.
    """
    return _table(num_positions, dim).to(device=device, dtype=dtype).unsqueeze(0)
