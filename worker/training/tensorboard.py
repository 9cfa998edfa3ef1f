"""TensorBoard event files of a training job: each epoch's history as scalars, and each layer's
weights and loss gradients as histograms, copied into the artifact store under
`jobs/<job_id>/tensorboard/`.

Keras's own TensorBoard callback needs TensorFlow; tensorboardX writes the same files on any
backend. Steps are the job's epoch numbers (1-based, as in the diagnostics), so a resumed job
carries on from its checkpoint's epoch. Each attempt (and each phase) writes its own file, which
starts with a purge marker at its first step: TensorBoard hides what an earlier attempt wrote past
the checkpoint this one resumed from.
"""

import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

# The synchronous writer, not tensorboardX's SummaryWriter: that one starts a thread and
# registers an atexit hook per file, which a long-lived worker would pile up job after job.
from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto.event_pb2 import Event, SessionLog
from tensorboardX.proto.summary_pb2 import HistogramProto, Summary
from tensorboardX.summary import scalar

from service.errors import StorageFull
from service.storage import ArtifactStore
from worker.jobs.lifecycle import JobRun

log = logging.getLogger(__name__)
BINS = 30  # buckets per histogram (about 0.5 KB), as tf.summary.histogram writes; bytes cost:
# tensorboardX checksums the file in pure Python unless the `crc32c` package is installed
MAX_VALUES = 1_000_000  # values per histogram; a larger tensor is sampled with a stride
SYNC_SECONDS = 10.0  # most time between copies into the store while a phase trains


def key_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/tensorboard"


def histogram_every(epochs: int, most: int) -> int:
    """Every N-th epoch gets histograms, so that at most `most` epochs (and the last) do."""
    return max(1, math.ceil(epochs / max(1, most)))


def _values(array: Any) -> np.ndarray:
    """The finite values of a tensor, flat, strided down to MAX_VALUES."""
    flat = np.asarray(keras.ops.convert_to_numpy(array)).reshape(-1)
    if flat.size > MAX_VALUES:
        flat = flat[:: math.ceil(flat.size / MAX_VALUES)]
    flat = flat.astype(np.float64)
    return flat[np.isfinite(flat)]


def histogram(tag: str, values: np.ndarray) -> Summary.Value:
    """A histogram of BINS equal buckets. tensorboardX has one, but its np.histogram path costs
    about five times more on small tensors, which would show in the epoch time of a small job."""
    low, high = float(values.min()), float(values.max())
    width = (high - low) / BINS or 1.0  # (all values equal: one full bucket)
    index = ((values - low) / width).astype(np.int64)
    np.minimum(index, BINS - 1, out=index)
    counts = np.bincount(index, minlength=BINS)
    # TensorBoard reads right edges: an empty first bucket carries the left one
    limits = [low, *(low + width * np.arange(1, BINS + 1)).tolist()]
    proto = HistogramProto(
        min=low,
        max=high,
        num=float(values.size),
        sum=float(values.sum()),
        sum_squares=float(np.dot(values, values)),
        bucket_limit=limits,
        bucket=[0.0, *counts.tolist()],
    )
    return Summary.Value(tag=tag, histo=proto)


class TensorBoardLog(keras.callbacks.Callback):
    """Writes each epoch's history, weights and gradients; goes after EpochRecorder (it reads
    the history row that one appends) and GradientHealth (whose gradients it reads)."""

    def __init__(
        self,
        store: ArtifactStore,
        job_id: str,
        history: dict[str, list[float | None]],
        gradients: dict[str, np.ndarray],
        epochs: int,
        every: int,
    ) -> None:
        super().__init__()
        self.store, self.prefix = store, key_prefix(job_id)
        self.history, self.gradients = history, gradients
        self.epochs, self.every = epochs, every
        self.writer: EventsWriter | None = None
        # removed at the phase's end, or when collected after a phase that raised
        self.folder: tempfile.TemporaryDirectory[str] | None = None
        self.key = ""
        self.synced = 0.0
        self.step = self.histogram_step = 0  # the last epoch written, with histograms

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        if self.writer is not None:
            return
        # (opened here, not in on_train_begin: only the first epoch tells where the phase starts)
        self.folder = tempfile.TemporaryDirectory(prefix="kts-tensorboard-")
        self.writer = EventsWriter(str(Path(self.folder.name) / "events"))
        # microseconds, zero-padded: TensorBoard reads a run's files in name order
        self.key = f"{self.prefix}/events.out.tfevents.{time.time_ns() // 1000:017d}"
        if epoch > 0:
            start = SessionLog(status=SessionLog.START)
            self.writer.write_event(Event(wall_time=time.time(), step=epoch + 1, session_log=start))
        self.synced = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        if self.writer is None:
            return
        step = epoch + 1
        values = [
            value
            for key, column in self.history.items()
            if len(column) == step and column[-1] is not None
            for value in scalar(key, column[-1]).value
        ]
        self._write(step, values)
        self.step = step
        if step % self.every == 0 or step == self.epochs:
            self._write_histograms()
        if time.monotonic() - self.synced >= SYNC_SECONDS or self.model.stop_training:
            self._sync()

    def on_train_end(self, logs: Any = None) -> None:
        if self.writer is None:
            return
        if self.histogram_step != self.step:  # stopped early: the last epoch gets them too
            self._write_histograms()
        self._sync()
        self.writer.close()
        self.writer = None
        if self.folder is not None:
            self.folder.cleanup()
            self.folder = None

    def _write_histograms(self) -> None:
        self._write(self.step, self._histograms())
        self.histogram_step = self.step

    def _histograms(self) -> list[Any]:
        out = []
        named = []
        for layer in self.model.layers:
            for w in layer.weights:
                named.append((f"weights/{layer.name}/{w.name}", w))
                if w.path in self.gradients:  # (trainable weights only)
                    named.append((f"gradients/{layer.name}/{w.name}", self.gradients[w.path]))
        for tag, array in named:
            values = _values(array)
            if values.size:
                out.append(histogram(tag, values))
        return out

    def _write(self, step: int, values: list[Any]) -> None:
        assert self.writer is not None
        if values:
            summary = Summary(value=values)
            self.writer.write_event(Event(wall_time=time.time(), step=step, summary=summary))

    def _sync(self) -> None:
        """Copy the event file into the store (a whole copy: the file is small, see BINS)."""
        assert self.writer is not None and self.folder is not None
        self.writer.flush()
        self.synced = time.monotonic()
        try:
            for path in Path(self.folder.name).glob("events*"):
                self.store.put_file(self.key, path)
        except (OSError, StorageFull):  # the charts are no reason to fail the job: next time
            log.warning("could not copy the TensorBoard file of %s", self.prefix, exc_info=True)


def job_tensorboard(
    run: JobRun,
    epochs: int,
    history: dict[str, list[float | None]],
    gradients: dict[str, np.ndarray],
    fresh: bool,
) -> TensorBoardLog | None:
    """The job's TensorBoard callback (None with KTS_TENSORBOARD=false); a fresh start drops
    the files of an attempt that died before its first checkpoint."""
    settings = run.ctx.settings
    if not settings.tensorboard:
        return None
    if fresh:
        run.ctx.store.delete_tree(key_prefix(run.job_id))
    every = histogram_every(epochs, settings.tensorboard_histogram_epochs)
    return TensorBoardLog(run.ctx.store, run.job_id, history, gradients, epochs, every)
