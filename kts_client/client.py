"""The synchronous client (`Client`) of the Keras Training Service."""

import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx

from kts_client import _ops
from kts_client._ops import ExportFormat, Op, Page
from kts_client.data import SpecLike
from kts_client.errors import Unavailable, raise_for_error
from kts_client.events import RETRIED, STREAM_TIMEOUT, FollowState, JobEvent
from kts_client.prediction import Prediction
from service.datasets.schemas import DatasetRead
from service.jobs.schemas import JobRead, ValidateResult
from service.logs.schemas import JobLogs
from service.models.schemas import ModelRead

T = TypeVar("T")


class Client:
    """A client of the service's HTTP API; `base_url` and `api_key` default to KTS_URL and
    KTS_API_KEY (then http://127.0.0.1:8000, no key). Use it as a context manager or close()."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url, headers = _ops.settings(base_url, api_key)
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _run(self, op: Op[T]) -> T:
        return op.finish(self._http.request(op.method, op.path, **op.request_args()))

    # --- data sets ----------------------------------------------------------------------------

    def upload_dataset(
        self,
        data: Any,
        *,
        target: str | None = None,
        name: str | None = None,
        task: str | None = None,
    ) -> DatasetRead:
        """Upload (X, y) arrays, a DataFrame (with `target`), or a .npz/.csv file path."""
        with _ops.upload_dataset(data, target, name, task) as op:
            return self._run(op)

    def get_dataset(self, dataset_id: str) -> DatasetRead:
        """One data set."""
        return self._run(_ops.get_dataset(dataset_id))

    def list_datasets(
        self, *, limit: int | None = None, cursor: str | None = None
    ) -> Page[DatasetRead]:
        """A page of data sets, newest first."""
        return self._run(_ops.list_datasets(limit, cursor))

    def delete_dataset(self, dataset_id: str) -> None:
        """Delete a data set (Conflict while a queued or running job uses it)."""
        self._run(_ops.delete_dataset(dataset_id))

    # --- jobs ---------------------------------------------------------------------------------

    def validate(self, spec: SpecLike) -> ValidateResult:
        """Check a spec (dict, JSON file path or TrainingSpec) without queueing it."""
        return self._run(_ops.validate(spec))

    def submit(self, spec: SpecLike, idempotency_key: str | None = None) -> JobRead:
        """Queue a training job; a repeated `idempotency_key` answers the first job."""
        return self._run(_ops.submit(spec, idempotency_key))

    def get_job(self, job_id: str) -> JobRead:
        """One job."""
        return self._run(_ops.get_job(job_id))

    def list_jobs(
        self, *, status: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> Page[JobRead]:
        """A page of jobs, newest first, optionally of one status."""
        return self._run(_ops.list_jobs(status, limit, cursor))

    def cancel(self, job_id: str) -> JobRead:
        """Ask a queued or running job to stop (Conflict once it has ended)."""
        return self._run(_ops.cancel(job_id))

    def diagnostics(self, job_id: str) -> dict[str, Any]:
        """Gradient health per epoch and layer, with the job's flags."""
        return self._run(_ops.diagnostics(job_id))

    def job_logs(
        self, job_id: str, after: int = 0, limit: int | None = None, level: str | None = None
    ) -> JobLogs:
        """The job's log lines with seq > `after`, oldest first; pass `next_after` back to tail."""
        return self._run(_ops.job_logs(job_id, after, limit, level))

    def delete_job(self, job_id: str) -> None:
        """Delete an ended job (Conflict while it is queued or running)."""
        self._run(_ops.delete_job(job_id))

    def download_tensorboard(self, job_id: str, dest_dir: str | os.PathLike[str]) -> Path:
        """Extract the job's TensorBoard event files into `dest_dir`/`job_id`/ and return it."""
        op, dest = _ops.tensorboard(job_id), Path(dest_dir)
        with self._http.stream(op.method, op.path, **op.request_args()) as r:
            if r.status_code >= 400:
                r.read()
                raise_for_error(r)
            dest.mkdir(parents=True, exist_ok=True)
            archive = dest / f".{job_id}-tensorboard.tar.gz"
            with _ops.partial_file(archive) as f:
                for chunk in r.iter_bytes():
                    f.write(chunk)
        try:
            _ops.extract_events(archive, dest)
        finally:
            archive.unlink(missing_ok=True)
        return dest / job_id

    def wait(self, job_id: str, timeout: float | None = None, *, poll: float = 1.0) -> JobRead:
        """Poll until the job has ended (riding out 503s); TimeoutError after `timeout` s."""
        waiter = _ops.Waiter(job_id, timeout, poll)
        while True:
            try:
                job = self.get_job(job_id)
            except Unavailable:  # the database restarts: nothing is lost, ask again
                time.sleep(waiter.pause("unavailable"))
                continue
            if job.status in _ops.TERMINAL:
                return job
            time.sleep(waiter.pause(job.status))

    def follow(self, job_id: str, *, max_retries: int = 10) -> Iterator[JobEvent]:
        """Each epoch's ProgressEvent once, then a DoneEvent; reconnects with Last-Event-ID."""
        state = FollowState(job_id, max_retries)
        while not state.done:
            try:
                yield from self._events(state)
            except RETRIED as exc:
                time.sleep(state.dropped(exc))
                continue
            if not state.done:  # the stream closed before `done`
                time.sleep(state.dropped(None))

    def _events(self, state: FollowState) -> Iterator[JobEvent]:
        path = f"/v1/jobs/{_ops.segment(state.job_id)}/events"
        with self._http.stream(
            "GET", path, headers=state.headers(), timeout=STREAM_TIMEOUT
        ) as response:
            if response.status_code >= 400:
                response.read()
                raise_for_error(response)
            for line in response.iter_lines():
                event = state.feed(line)
                if event is not None:
                    yield event
                if state.done:
                    return

    # --- models -------------------------------------------------------------------------------

    def get_model(self, model_ref: str) -> ModelRead:
        """One model, by id, NAME@ALIAS, NAME@VERSION or NAME@latest."""
        return self._run(_ops.get_model(model_ref))

    def list_models(
        self,
        *,
        name: str | None = None,
        tag: str | None = None,
        alias: str | None = None,
        job_id: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[ModelRead]:
        """A page of models, newest first; `tag` is "KEY:VALUE"."""
        return self._run(_ops.list_models(name, tag, alias, job_id, limit, cursor))

    def set_alias(self, model_ref: str, alias: str) -> ModelRead:
        """Point `alias` of the model's name at this version."""
        return self._run(_ops.set_alias(model_ref, alias))

    def delete_alias(self, model_ref: str, alias: str) -> None:
        """Remove an alias from the model."""
        self._run(_ops.delete_alias(model_ref, alias))

    def set_tags(self, model_ref: str, tags: Mapping[str, str]) -> ModelRead:
        """Replace the model's tags."""
        return self._run(_ops.set_tags(model_ref, tags))

    def delete_model(self, model_ref: str) -> None:
        """Delete a model and its files (Conflict while in use)."""
        self._run(_ops.delete_model(model_ref))

    def download_model(
        self,
        model_ref: str,
        path: str | os.PathLike[str],
        format: ExportFormat = "keras",
        quantize: str | None = None,
    ) -> Path:
        """Stream the model file to `path` (a folder: the server's file name in it)."""
        op = _ops.download(model_ref, format, quantize)
        args = op.request_args()
        with self._http.stream(op.method, op.path, timeout=_ops.SLOW_TIMEOUT, **args) as r:
            if r.status_code >= 400:
                r.read()
                raise_for_error(r)
            target = _ops.download_target(path, r)
            with _ops.partial_file(target) as f:
                for chunk in r.iter_bytes():
                    f.write(chunk)
        return target

    def predict(
        self,
        model_ref: str,
        X: Any,
        mc_samples: int = 0,
        seed: int | None = None,
        return_samples: bool = False,
        interval: float | None = None,
    ) -> Prediction:
        """Predict rows `X` (sent as one .npy body); with `mc_samples` > 0, MC Dropout."""
        options = _ops.predict_options(mc_samples, seed, return_samples, interval)
        return self._run(_ops.predict(model_ref, X, options))
