"""Training progress on the driver's console: rank 0 sends events, the driver draws the bars.

Workers' own output is not forwarded to the driver (:mod:`pipelines.ray_runtime`), so rank 0 sends small
events (epoch start, step, message, epoch summary) to a Ray queue actor that the driver created; a driver
thread turns them into one tqdm bar per epoch (steps, samples/s, ETA, running loss) and the epoch summary
line. Works wherever the driver runs, ``ray job submit`` included: the queue is a Ray actor.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from queue import Empty


@dataclass
class ProgressSender:
    """Rank 0's end: fire-and-forget events to the driver (a no-op without a queue, e.g. on other ranks)."""

    queue: object | None = None
    world: int = 1
    _start: float = field(default=0.0, repr=False)
    _loss: float = field(default=0.0, repr=False)
    _samples: int = field(default=0, repr=False)

    def _send(self, event: dict) -> None:
        if self.queue is not None:
            self.queue.actor.put_nowait.remote(event)  # not awaited: a step never waits for the console

    def message(self, text: str) -> None:
        self._send({"kind": "message", "text": text})

    def epoch_start(self, epoch: int, epochs: int, steps: int | None) -> None:
        self._start, self._loss, self._samples = time.perf_counter(), 0.0, 0
        self._send({"kind": "epoch_start", "epoch": epoch, "epochs": epochs, "steps": steps})

    def step(self, samples: int, loss: float) -> None:
        self._samples += samples
        self._loss = loss if self._samples == samples else 0.9 * self._loss + 0.1 * loss
        rate = self._samples * self.world / max(time.perf_counter() - self._start, 1e-9)
        self._send({"kind": "step", "loss": self._loss, "samples_per_s": rate})

    def epoch_end(self, summary: str) -> None:
        self._send({"kind": "epoch_end", "text": summary})


class ProgressBoard:
    """The driver's end: owns the queue actor and the thread drawing bars until :meth:`close`.

    Args:
        bars: draw progress bars (``--quiet`` turns them off; messages and epoch lines are always printed).
    """

    def __init__(self, bars: bool = True) -> None:
        from ray.util.queue import Queue

        self.queue = Queue(actor_options={"num_cpus": 0})
        self.bars = bars
        self._bar = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="h2crop-progress", daemon=True)
        self._thread.start()

    def sender(self, world: int) -> ProgressSender:
        return ProgressSender(self.queue, world)

    def _run(self) -> None:
        while not self._stop.is_set() or not self.queue.empty():
            try:
                self.draw(self.queue.get(timeout=0.5))
            except Empty:
                continue
            except Exception:  # noqa: BLE001 - the queue actor went away with Ray: nothing left to draw
                return

    def draw(self, event: dict) -> None:
        from tqdm.auto import tqdm

        kind = event["kind"]
        if kind == "epoch_start":
            self._close_bar()
            self._bar = tqdm(total=event["steps"], desc=f"epoch {event['epoch']}/{event['epochs']}", unit="step", disable=not self.bars, dynamic_ncols=True, leave=False, file=sys.stderr)
        elif kind == "step" and self._bar is not None:
            self._bar.set_postfix(loss=f"{event['loss']:.3f}", samples_s=f"{event['samples_per_s']:.1f}", refresh=False)
            self._bar.update(1)  # draws the postfix just set
        elif kind in ("epoch_end", "message"):
            self._close_bar()
            print(f"[h2crop] {event['text']}", flush=True)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def close(self) -> None:
        """Draw what is still queued, then stop and release the queue actor."""
        import ray

        self._stop.set()
        self._thread.join(timeout=10)
        self._close_bar()
        try:
            ray.kill(self.queue.actor)
        except Exception:  # noqa: BLE001 - already gone with its cluster
            pass
