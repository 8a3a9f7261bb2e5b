"""Map a function over files in worker processes, with a progress bar."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from tqdm.auto import tqdm

In = TypeVar("In")
Out = TypeVar("Out")


def map_with_progress(
    fn: Callable[[In], Out],
    items: Sequence[In],
    *,
    workers: int = 1,
    desc: str = "",
    unit: str = "file",
    progress: bool = True,
) -> Iterator[Out]:
    """Yield ``fn(item)`` for each item, in order. ``workers > 1`` uses that many processes (``fn`` must be
    picklable, e.g. a module-level function or a dataclass instance with ``__call__``)."""
    bar = tqdm(total=len(items), desc=desc, unit=unit, disable=not progress, dynamic_ncols=True)
    try:
        if workers <= 1:
            results: Iterable[Out] = map(fn, items)
            for result in results:
                bar.update(1)
                yield result
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for result in pool.map(fn, items, chunksize=max(1, min(16, len(items) // (workers * 8)))):
                    bar.update(1)
                    yield result
    finally:
        bar.close()
