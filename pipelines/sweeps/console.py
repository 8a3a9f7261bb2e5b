"""The Tune driver's side of a sweep: its console, its trials' MLflow endings, and its ASHA.

One line per trial event (started, each epoch's metric, stopped early, finished, failed). When ASHA stops
a trial, Tune ends its actor, and with it the Train worker that held the trial's MLflow run open: the run
is marked KILLED here, with the metrics it had logged, instead of staying RUNNING forever.
"""

from __future__ import annotations

import math
import signal
import threading

from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler

from pipelines.runtime import tracking
from pipelines.sweeps.space import config_label

#: set when Ctrl-C reaches the Tune driver: Tune then stops every trial and returns as if the sweep had ended
INTERRUPTED = threading.Event()


class SweepConsole(Callback):
    """Prints trial events and ends the MLflow runs of trials that Tune stopped or that failed."""

    def setup(self, **info) -> None:
        """Wrap Tune's Ctrl-C handler (installed just before) to note the interruption for the driver."""
        INTERRUPTED.clear()
        tune_handler = signal.getsignal(signal.SIGINT)
        if threading.current_thread() is not threading.main_thread() or not callable(tune_handler):
            return

        def note_and_pass_on(number, frame):
            INTERRUPTED.set()
            tune_handler(number, frame)

        signal.signal(signal.SIGINT, note_and_pass_on)

    def __init__(
        self, sweep: str, metric: str, max_epochs: int, tracking_uri: str, varied: list[str], configs: dict[str, dict]
    ) -> None:
        self.sweep, self.metric, self.max_epochs, self.tracking_uri, self.varied = (
            sweep,
            metric,
            max_epochs,
            tracking_uri,
            varied,
        )
        self.configs = configs  #: trial key -> its space values (Tune's config holds only the key)
        self.best: dict[str, float] = {}

    @staticmethod
    def _key(trial) -> str:
        return str(trial.config.get("trial", trial.trial_id))

    def _line(self, trial, text: str) -> None:
        print(f"[{self.sweep}] trial {self._key(trial)} {text}", flush=True)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._line(
            trial,
            f"started: {config_label(self.configs.get(self._key(trial), {}), self.varied) or 'the space as given'}",
        )

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        value = result.get(self.metric, math.nan)
        if isinstance(value, (int, float)) and value == value:
            self.best[self._key(trial)] = max(self.best.get(self._key(trial), -math.inf), value)
        self._line(trial, f"epoch {result.get('epoch', '?')}/{self.max_epochs}: {self.metric} {value:.4f}")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        from mlflow.tracking import MlflowClient

        last = trial.last_result or {}
        best = self.best.get(self._key(trial), last.get(self.metric, math.nan))
        # Tune marks a trial its scheduler stopped as done too; such a trial's worker never ended its run
        run_id = str(last.get("mlflow_run_id", ""))
        stopped = int(last.get("epoch", 0)) < self.max_epochs and tracking.end_if_running(
            self.tracking_uri, run_id, "KILLED"
        )
        if stopped and INTERRUPTED.is_set():
            self._line(trial, f"stopped by the interruption after epoch {last.get('epoch', 0)}")
        elif stopped:
            MlflowClient(self.tracking_uri).set_tag(
                run_id, tracking.TRIAL_END_TAG, "stopped"
            )  # done: a resume leaves it stopped
            self._line(
                trial,
                f"stopped early after epoch {last.get('epoch', '?')}: {self.metric} {last.get(self.metric, math.nan):.4f} is behind the other trials",
            )
        else:
            self._line(trial, f"finished: best {self.metric} {best:.4f}")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        last = trial.last_result or {}
        tracking.end_if_running(self.tracking_uri, str(last.get("mlflow_run_id", "")), "FAILED")
        where = getattr(trial, "path", None) or "the trial's folder"
        self._line(trial, f"failed (it runs again when the sweep is resumed); its error is in {where}/error.txt")


class LastEpochKeptASHA(ASHAScheduler):
    """ASHA that never stops a trial at its last epoch: ``max_t``, or the one the trial reports as its last
    (``last_epoch``: a small-recipe schedule, a time budget or early stopping can end a run before ``max_t``).

    A trial stopped at its last epoch is killed just before it copies its best checkpoint out and logs it: it
    has trained every epoch, so stopping it saves nothing and loses its outputs.
    """

    def on_trial_result(self, tune_controller, trial, result):
        decision = super().on_trial_result(tune_controller, trial, result)  # records the rung value
        last = result.get("last_epoch") or result.get(self._time_attr, 0) >= self._max_t
        return self.CONTINUE if last else decision

    def record_earlier(self, histories: dict[str, dict[int, float]]) -> None:
        """Put what trials reported before a resume (trial key -> {epoch: value}) in the rungs, so that the
        trials run now are compared with them, not only with each other."""
        for bracket in self._brackets:
            for milestone, recorded in bracket._rungs:
                for key, history in histories.items():
                    if int(milestone) in history and history[int(milestone)] == history[int(milestone)]:
                        recorded[f"earlier:{key}"] = history[int(milestone)]
