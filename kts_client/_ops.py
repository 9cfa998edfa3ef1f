"""What the sync and async clients share: each API call as an `Op` (the request to send and
how to read its answer), so that `Client` and `AsyncClient` only differ in how they send it."""

import json
import os
import tarfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx
import orjson
from pydantic import BaseModel

from kts_client.data import SpecLike, dataset_upload, load_spec, npy_body
from kts_client.errors import raise_for_error
from kts_client.prediction import Prediction
from service.datasets.schemas import DatasetRead
from service.jobs.schemas import JobRead, ValidateResult
from service.logs.schemas import JobLogs
from service.models.schemas import ModelRead, PredictOptions, TagsUpdate

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
ExportFormat = Literal["keras", "saved_model", "tflite"]


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list route, newest first; pass `next_cursor` back for the next one."""

    items: list[T]
    next_cursor: str | None


@dataclass(frozen=True)
class Op(Generic[T]):
    """One API call: the request and how to turn its (successful) answer into a T."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: list[tuple[str, str]] = field(default_factory=list)
    json: Any = None
    content: bytes | None = None
    files: Mapping[str, Any] | None = None
    data: Mapping[str, str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def request_args(self) -> dict[str, Any]:
        """Keyword arguments for httpx's `request` and `stream`."""
        args: dict[str, Any] = {"params": self.params, "headers": dict(self.headers)}
        for name in ("json", "content", "files", "data"):
            if getattr(self, name) is not None:
                args[name] = getattr(self, name)
        return args

    def finish(self, response: httpx.Response) -> T:
        """Raise the typed error of an error answer, else parse it."""
        raise_for_error(response)
        return self.parse(response)


def settings(base_url: str | None, api_key: str | None) -> tuple[str, dict[str, str]]:
    """The base URL and headers: the arguments, else KTS_URL / KTS_API_KEY, else loopback."""
    url = (base_url or os.environ.get("KTS_URL") or DEFAULT_URL).rstrip("/")
    key = api_key if api_key is not None else os.environ.get("KTS_API_KEY")
    headers = {"User-Agent": "kts-client/0.1"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return url, headers


def segment(ref: str) -> str:
    """A path segment (a model ref may be NAME@ALIAS)."""
    return quote(ref, safe="@")


def _model(cls: type[M]) -> Callable[[httpx.Response], M]:
    return lambda r: cls.model_validate_json(r.content)


def _page(cls: type[M]) -> Callable[[httpx.Response], Page[M]]:
    def parse(r: httpx.Response) -> Page[M]:
        body = r.json()
        return Page([cls.model_validate(i) for i in body["items"]], body.get("next_cursor"))

    return parse


def _none(_r: httpx.Response) -> None:
    return None


def _dict(r: httpx.Response) -> dict[str, Any]:
    return dict(r.json())


def _query(**values: Any) -> list[tuple[str, str]]:
    """Query parameters, leaving out None and spelling booleans as JSON does."""
    out = []
    for name, value in values.items():
        if value is not None:
            out.append((name, json.dumps(value) if isinstance(value, bool) else str(value)))
    return out


# --- data sets --------------------------------------------------------------------------------


@contextmanager
def upload_dataset(
    data: Any, target: str | None, name: str | None, task: str | None
) -> Iterator[Op[DatasetRead]]:
    """POST /v1/datasets with the data as a .npz or .csv file (a path is streamed)."""
    with dataset_upload(data, target) as (filename, stream):
        form = {k: v for k, v in (("target", target), ("name", name), ("task", task)) if v}
        files = {"file": (filename, stream, "application/octet-stream")}
        yield Op("POST", "/v1/datasets", _model(DatasetRead), files=files, data=form)


def get_dataset(dataset_id: str) -> Op[DatasetRead]:
    return Op("GET", f"/v1/datasets/{segment(dataset_id)}", _model(DatasetRead))


def list_datasets(limit: int | None, cursor: str | None) -> Op[Page[DatasetRead]]:
    params = _query(limit=limit, cursor=cursor)
    return Op("GET", "/v1/datasets", _page(DatasetRead), params=params)


def delete_dataset(dataset_id: str) -> Op[None]:
    return Op("DELETE", f"/v1/datasets/{segment(dataset_id)}", _none)


# --- jobs -------------------------------------------------------------------------------------


def validate(spec: SpecLike) -> Op[ValidateResult]:
    return Op("POST", "/v1/jobs/validate", _model(ValidateResult), json=load_spec(spec))


def submit(spec: SpecLike, idempotency_key: str | None) -> Op[JobRead]:
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    return Op("POST", "/v1/jobs", _model(JobRead), json=load_spec(spec), headers=headers)


def get_job(job_id: str) -> Op[JobRead]:
    return Op("GET", f"/v1/jobs/{segment(job_id)}", _model(JobRead))


def list_jobs(status: str | None, limit: int | None, cursor: str | None) -> Op[Page[JobRead]]:
    params = _query(status=status, limit=limit, cursor=cursor)
    return Op("GET", "/v1/jobs", _page(JobRead), params=params)


def cancel(job_id: str) -> Op[JobRead]:
    return Op("POST", f"/v1/jobs/{segment(job_id)}/cancel", _model(JobRead))


def diagnostics(job_id: str) -> Op[dict[str, Any]]:
    return Op("GET", f"/v1/jobs/{segment(job_id)}/diagnostics", _dict)


def job_logs(job_id: str, after: int, limit: int | None, level: str | None) -> Op[JobLogs]:
    params = _query(after=after, limit=limit, level=level)
    return Op("GET", f"/v1/jobs/{segment(job_id)}/logs", _model(JobLogs), params=params)


def delete_job(job_id: str) -> Op[None]:
    return Op("DELETE", f"/v1/jobs/{segment(job_id)}", _none)


def tensorboard(job_id: str) -> Op[None]:
    """GET the job's event files (a .tar.gz); the clients stream it to a file."""
    return Op("GET", f"/v1/jobs/{segment(job_id)}/tensorboard", _none)


def extract_events(archive: Path, dest_dir: Path) -> None:
    """Unpack a tensorboard archive into `dest_dir`; its members may not leave it."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(dest_dir, filter="data")


# --- models -----------------------------------------------------------------------------------


def get_model(ref: str) -> Op[ModelRead]:
    return Op("GET", f"/v1/models/{segment(ref)}", _model(ModelRead))


def list_models(
    name: str | None,
    tag: str | None,
    alias: str | None,
    job_id: str | None,
    limit: int | None,
    cursor: str | None,
) -> Op[Page[ModelRead]]:
    params = _query(name=name, tag=tag, alias=alias, job_id=job_id, limit=limit, cursor=cursor)
    return Op("GET", "/v1/models", _page(ModelRead), params=params)


def set_alias(ref: str, alias: str) -> Op[ModelRead]:
    return Op("PUT", f"/v1/models/{segment(ref)}/aliases/{segment(alias)}", _model(ModelRead))


def delete_alias(ref: str, alias: str) -> Op[None]:
    return Op("DELETE", f"/v1/models/{segment(ref)}/aliases/{segment(alias)}", _none)


def set_tags(ref: str, tags: Mapping[str, str]) -> Op[ModelRead]:
    body = TagsUpdate.model_construct(tags=dict(tags)).model_dump()
    return Op("PUT", f"/v1/models/{segment(ref)}/tags", _model(ModelRead), json=body)


def delete_model(ref: str) -> Op[None]:
    return Op("DELETE", f"/v1/models/{segment(ref)}", _none)


def download(ref: str, format: ExportFormat, quantize: str | None) -> Op[None]:
    """GET the artifact; the clients stream its body to a file instead of parsing it."""
    params = _query(format=format, quantize=quantize)
    return Op("GET", f"/v1/models/{segment(ref)}/artifact", _none, params=params)


def predict(ref: str, X: Any, options: PredictOptions) -> Op[Prediction]:
    """POST the rows as one application/x-npy body with the options as query parameters."""
    params = _query(**options.model_dump(exclude_defaults=True))
    return Op(
        "POST",
        f"/v1/models/{segment(ref)}/predict",
        lambda r: Prediction.from_json(orjson.loads(r.content)),
        params=params,
        content=npy_body(X),
        headers={"Content-Type": "application/x-npy"},
    )


def download_target(path: str | os.PathLike[str], response: httpx.Response) -> Path:
    """Where a download goes: `path`, or the server's file name inside `path` when a folder."""
    target = Path(path)
    if target.is_dir():
        disposition = response.headers.get("content-disposition", "")
        name = disposition.split("filename=")[-1].strip('"; ') if "filename=" in disposition else ""
        target = target / (Path(name).name or "model.keras")
    return target


# --- what the clients' loops share ------------------------------------------------------------

# Exports (SavedModel, TFLite) are converted on the first request: allow minutes for an answer.
SLOW_TIMEOUT = httpx.Timeout(10.0, read=600.0)


def predict_options(
    mc_samples: int, seed: int | None, return_samples: bool, interval: float | None
) -> PredictOptions:
    """The options as the service names them (checked by the service, not here)."""
    return PredictOptions.model_construct(
        mc_samples=mc_samples, seed=seed, return_samples=return_samples, interval=interval
    )


class Waiter:
    """The pauses between polls of `wait`, up to an optional deadline."""

    def __init__(self, job_id: str, timeout: float | None, poll: float) -> None:
        self.job_id = job_id
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.poll = poll

    def pause(self, status: str) -> float:
        """Seconds to sleep before the next poll; TimeoutError past the deadline."""
        if self.deadline is None:
            return self.poll
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"Job {self.job_id} is still {status} after the timeout.")
        return min(self.poll, left)


@contextmanager
def partial_file(target: Path) -> Iterator[IO[bytes]]:
    """A file written next to `target` and moved onto it only once complete."""
    part = target.with_name(target.name + ".part")
    try:
        with part.open("wb") as f:
            yield f
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
