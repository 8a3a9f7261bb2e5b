"""Training progress on the driver's console: rank 0 sends events, the driver draws the bars.

Workers' own output is not forwarded to the driver (:mod:`pipelines.runtime.cluster`), so rank 0 sends small
events (epoch start, steps, message, epoch summary) to a Ray queue actor that the driver created; a driver
thread turns them into one tqdm bar per epoch (steps, samples/s, ETA, running loss) and the epoch summary
line. Works wherever the driver runs, ``ray job submit`` included: the queue is a Ray actor. Train's
controller reports worker failures (and the restart from the last checkpoint) on the same queue.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from queue import Empty

import torch
from ray.train import UserCallback

#: seconds between two step events: the loss is read (a device sync) only when one is sent
STEP_EVENT_INTERVAL_S = 0.5


@dataclass
class ProgressSender:
    """Rank 0's end: fire-and-forget events to the driver (a no-op without a queue, e.g. on other ranks)."""

    queue: object | None = None
    world: int = 1
    _start: float = field(default=0.0, repr=False)
    _sent: float = field(default=0.0, repr=False)
    _loss: float | None = field(default=None, repr=False)
    _samples: int = field(default=0, repr=False)
    _steps: int = field(default=0, repr=False)

    def _send(self, event: dict) -> None:
        if self.queue is not None:
            self.queue.actor.put_nowait.remote(event)  # not awaited: a step never waits for the console

    def message(self, text: str) -> None:
        if text:  # nothing to say: nothing sent
            self._send({"kind": "message", "text": text})

    def epoch_start(self, epoch: int, epochs: int, steps: int | None) -> None:
        self._start = self._sent = time.perf_counter()
        self._loss, self._samples, self._steps = None, 0, 0
        self._send({"kind": "epoch_start", "epoch": epoch, "epochs": epochs, "steps": steps})

    def step(self, samples: int, loss: torch.Tensor | float) -> None:
        """Count a step; every :data:`STEP_EVENT_INTERVAL_S` send the steps since the last event, the
        running loss and samples/s (this rank's rate × the number of workers)."""
        self._samples += samples
        self._steps += 1
        now = time.perf_counter()
        if self.queue is None or now - self._sent < STEP_EVENT_INTERVAL_S:
            return
        value = float(loss)
        self._loss = value if self._loss is None else 0.8 * self._loss + 0.2 * value
        rate = self._samples * self.world / max(now - self._start, 1e-9)
        self._send({"kind": "steps", "steps": self._steps, "loss": self._loss, "samples_per_s": rate})
        self._steps, self._sent = 0, now

    def epoch_end(self, summary: str) -> None:
        self._send({"kind": "epoch_end", "text": summary})

    def finish(self) -> None:
        """Wait until every event sent so far is in the queue (the driver then drains it before closing)."""
        if self.queue is not None:
            import ray

            try:
                ray.get(self.queue.actor.put_nowait.remote({"kind": "message", "text": ""}), timeout=30)
            except Exception:  # noqa: BLE001 - best effort: never hide the error that ended the loop
                pass


class FailureNotice(UserCallback):
    """On Train's controller: a worker failure, and what Train does next, as a console message."""

    def __init__(self, sender: ProgressSender, max_failures: int) -> None:
        self.sender, self.max_failures, self.failures = sender, max_failures, 0

    def after_exception(self, run_context, worker_exceptions: dict) -> None:
        self.failures += 1
        rank, error = sorted(worker_exceptions.items())[0]
        reason = (str(error).strip().splitlines() or [type(error).__name__])[-1][:300]
        left = self.max_failures < 0 or self.failures <= self.max_failures
        then = "restarting the workers from the last checkpoint" if left else "no restarts left (--max-failures)"
        self.sender.message(f"worker {rank} failed ({reason}): {then}")


class ProgressBoard:
    """The driver's end: owns the queue actor and the thread drawing bars until :meth:`close`.

    Args:
        bars: draw progress bars (``--quiet`` turns them off; messages and epoch lines are always printed).
    """

    def __init__(self, bars: bool = True) -> None:
        import ray
        from ray.util.queue import Queue
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # on the driver's node, as Train's controller: losing another node must not silence the console
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.queue = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
        self.bars = bars
        self._bar = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="h2crop-progress", daemon=True)
        self._thread.start()

    def sender(self, world: int) -> ProgressSender:
        return ProgressSender(self.queue, world)

    def _run(self) -> None:
        while True:
            try:
                event = self.queue.get(timeout=0.5)
            except Empty:
                if self._stop.is_set():
                    return
                continue
            except Exception:  # noqa: BLE001 - the queue actor is gone (Ray shut down): nothing left to draw
                return
            try:
                self.draw(event)
            except Exception as error:  # noqa: BLE001 - a drawing problem must not silence later lines
                print(f"[h2crop] (progress display: {error!r})", file=sys.stderr)

    def draw(self, event: dict) -> None:
        from tqdm.auto import tqdm

        kind = event["kind"]
        if kind == "epoch_start":
            self._close_bar()
            self._bar = tqdm(
                total=event["steps"],
                desc=f"epoch {event['epoch']}/{event['epochs']}",
                unit="step",
                disable=not self.bars,
                dynamic_ncols=True,
                leave=False,
                file=sys.stderr,
            )
        elif kind == "steps" and self._bar is not None:
            self._bar.set_postfix(loss=f"{event['loss']:.3f}", samples_s=f"{event['samples_per_s']:.1f}", refresh=False)
            self._bar.update(event["steps"])  # draws the postfix just set
        elif kind in ("epoch_end", "message") and event["text"]:
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
        self._thread.join(timeout=30)
        self._close_bar()
        try:
            ray.kill(self.queue.actor)
        except Exception:  # noqa: BLE001 - already gone with its cluster
            pass
