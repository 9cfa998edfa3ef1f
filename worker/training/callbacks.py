"""Keras callbacks the service adds to `fit`: progress, cancellation, limits, divergence."""

import math
import time
from collections.abc import Callable
from typing import Any

import keras

from worker.jobs.lease import StopSignal


def _float(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


class StopAtBatchEnd(keras.callbacks.Callback):
    """Stops training at the next batch end (Keras fit) or epoch end (compiled epochs) once
    the signal is set or the deadline passes."""

    def __init__(self, signal: StopSignal, deadline: float | None) -> None:
        super().__init__()
        self.signal = signal
        self.deadline = deadline

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.signal.set("timeout")
        if self.signal.event.is_set():
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self.on_train_batch_end(-1)  # compiled epochs call no batch hooks: check at epoch end


class EpochRecorder(keras.callbacks.Callback):
    """Appends each epoch's logs and learning rate to the history and reports it.

    It runs before ReduceLROnPlateau, so the rate recorded is the one the epoch ended with.
    A NaN or infinite loss stops training and is reported as divergence.
    """

    def __init__(
        self,
        history: dict[str, list[float | None]],
        signal: StopSignal,
        report: Callable[[int, dict[str, list[float | None]]], None],
    ) -> None:
        super().__init__()
        self.history = history
        self.signal = signal
        self.report = report
        self.started = time.monotonic()

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        logs = dict(logs or {})
        logs.pop("learning_rate", None)
        logs["epoch_seconds"] = time.monotonic() - self.started
        for key, value in logs.items():
            self.history.setdefault(key, []).append(_float(value))
        lr = keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        self.history.setdefault("learning_rate", []).append(_float(lr))
        current_momentum = getattr(self.model.optimizer, "current_momentum", None)
        if current_momentum is not None:
            momentum = keras.ops.convert_to_numpy(current_momentum())
            self.history.setdefault("momentum", []).append(_float(momentum))
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.signal.set("diverged")
            self.model.stop_training = True
        self.report(epoch + 1, self.history)
