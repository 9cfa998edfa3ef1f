"""The asynchronous client (`AsyncClient`): the same calls as `Client`, awaited."""

import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import anyio
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


class AsyncClient:
    """The asynchronous client; `base_url` and `api_key` default to KTS_URL and KTS_API_KEY.
    Use it as an async context manager or `await aclose()`."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url, headers = _ops.settings(base_url, api_key)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def _run(self, op: Op[T]) -> T:
        return op.finish(await self._http.request(op.method, op.path, **op.request_args()))

    # --- data sets ----------------------------------------------------------------------------

    async def upload_dataset(
        self,
        data: Any,
        *,
        target: str | None = None,
        name: str | None = None,
        task: str | None = None,
    ) -> DatasetRead:
        """Upload (X, y) arrays, a DataFrame (with `target`), or a .npz/.csv file path."""
        with _ops.upload_dataset(data, target, name, task) as op:
            return await self._run(op)

    async def get_dataset(self, dataset_id: str) -> DatasetRead:
        """One data set."""
        return await self._run(_ops.get_dataset(dataset_id))

    async def list_datasets(
        self, *, limit: int | None = None, cursor: str | None = None
    ) -> Page[DatasetRead]:
        """A page of data sets, newest first."""
        return await self._run(_ops.list_datasets(limit, cursor))

    async def delete_dataset(self, dataset_id: str) -> None:
        """Delete a data set (Conflict while a queued or running job uses it)."""
        await self._run(_ops.delete_dataset(dataset_id))

    # --- jobs ---------------------------------------------------------------------------------

    async def validate(self, spec: SpecLike) -> ValidateResult:
        """Check a spec (dict, JSON file path or TrainingSpec) without queueing it."""
        return await self._run(_ops.validate(spec))

    async def submit(self, spec: SpecLike, idempotency_key: str | None = None) -> JobRead:
        """Queue a training job; a repeated `idempotency_key` answers the first job."""
        return await self._run(_ops.submit(spec, idempotency_key))

    async def get_job(self, job_id: str) -> JobRead:
        """One job."""
        return await self._run(_ops.get_job(job_id))

    async def list_jobs(
        self, *, status: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> Page[JobRead]:
        """A page of jobs, newest first, optionally of one status."""
        return await self._run(_ops.list_jobs(status, limit, cursor))

    async def cancel(self, job_id: str) -> JobRead:
        """Ask a queued or running job to stop (Conflict once it has ended)."""
        return await self._run(_ops.cancel(job_id))

    async def diagnostics(self, job_id: str) -> dict[str, Any]:
        """Gradient health per epoch and layer, with the job's flags."""
        return await self._run(_ops.diagnostics(job_id))

    async def job_logs(
        self, job_id: str, after: int = 0, limit: int | None = None, level: str | None = None
    ) -> JobLogs:
        """The job's log lines with seq > `after`, oldest first; pass `next_after` back to tail."""
        return await self._run(_ops.job_logs(job_id, after, limit, level))

    async def delete_job(self, job_id: str) -> None:
        """Delete an ended job (Conflict while it is queued or running)."""
        await self._run(_ops.delete_job(job_id))

    async def wait(
        self, job_id: str, timeout: float | None = None, *, poll: float = 1.0
    ) -> JobRead:
        """Poll until the job has ended (riding out 503s); TimeoutError after `timeout` s."""
        waiter = _ops.Waiter(job_id, timeout, poll)
        while True:
            try:
                job = await self.get_job(job_id)
            except Unavailable:  # the database restarts: nothing is lost, ask again
                await anyio.sleep(waiter.pause("unavailable"))
                continue
            if job.status in _ops.TERMINAL:
                return job
            await anyio.sleep(waiter.pause(job.status))

    async def follow(self, job_id: str, *, max_retries: int = 10) -> AsyncIterator[JobEvent]:
        """Each epoch's ProgressEvent once, then a DoneEvent; reconnects with Last-Event-ID."""
        state = FollowState(job_id, max_retries)
        while not state.done:
            try:
                async for event in self._events(state):
                    yield event
            except RETRIED as exc:
                await anyio.sleep(state.dropped(exc))
                continue
            if not state.done:  # the stream closed before `done`
                await anyio.sleep(state.dropped(None))

    async def _events(self, state: FollowState) -> AsyncIterator[JobEvent]:
        path = f"/v1/jobs/{_ops.segment(state.job_id)}/events"
        async with self._http.stream(
            "GET", path, headers=state.headers(), timeout=STREAM_TIMEOUT
        ) as response:
            if response.status_code >= 400:
                await response.aread()
                raise_for_error(response)
            async for line in response.aiter_lines():
                event = state.feed(line)
                if event is not None:
                    yield event
                if state.done:
                    return

    # --- models -------------------------------------------------------------------------------

    async def get_model(self, model_ref: str) -> ModelRead:
        """One model, by id, NAME@ALIAS, NAME@VERSION or NAME@latest."""
        return await self._run(_ops.get_model(model_ref))

    async def list_models(
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
        return await self._run(_ops.list_models(name, tag, alias, job_id, limit, cursor))

    async def set_alias(self, model_ref: str, alias: str) -> ModelRead:
        """Point `alias` of the model's name at this version."""
        return await self._run(_ops.set_alias(model_ref, alias))

    async def delete_alias(self, model_ref: str, alias: str) -> None:
        """Remove an alias from the model."""
        await self._run(_ops.delete_alias(model_ref, alias))

    async def set_tags(self, model_ref: str, tags: Mapping[str, str]) -> ModelRead:
        """Replace the model's tags."""
        return await self._run(_ops.set_tags(model_ref, tags))

    async def delete_model(self, model_ref: str) -> None:
        """Delete a model and its files (Conflict while in use)."""
        await self._run(_ops.delete_model(model_ref))

    async def download_model(
        self,
        model_ref: str,
        path: str | os.PathLike[str],
        format: ExportFormat = "keras",
        quantize: str | None = None,
    ) -> Path:
        """Stream the model file to `path` (a folder: the server's file name in it)."""
        op = _ops.download(model_ref, format, quantize)
        args = op.request_args()
        async with self._http.stream(op.method, op.path, timeout=_ops.SLOW_TIMEOUT, **args) as r:
            if r.status_code >= 400:
                await r.aread()
                raise_for_error(r)
            target = _ops.download_target(path, r)
            with _ops.partial_file(target) as f:
                async for chunk in r.aiter_bytes():
                    f.write(chunk)
        return target

    async def predict(
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
        return await self._run(_ops.predict(model_ref, X, options))
