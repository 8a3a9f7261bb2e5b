"""A cache for functions that build constant tensors (position tables, index maps, masks)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch

F = TypeVar("F", bound=Callable[..., torch.Tensor])


def tensor_cache(maxsize: int = 64) -> Callable[[F], F]:
    """``functools.lru_cache`` whose tensors are built outside ``torch.inference_mode``.

    A tensor first built while evaluating or mapping under inference mode would be an inference tensor,
    and a later training step in the same process could never save it for backward. ``cache_clear`` works
    as with ``lru_cache``.
    """

    def decorate(build: F) -> F:
        @functools.lru_cache(maxsize=maxsize)
        @functools.wraps(build)
        def cached(*args):
            with torch.inference_mode(False):
                return build(*args)

        return cached  # type: ignore[return-value]

    return decorate
