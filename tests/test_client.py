"""kts_client against the real app served by uvicorn on a free port (SSE and .npy bodies go over
a real socket), with a worker loop that runs queued jobs through the worker's job life cycle."""

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from sklearn.datasets import load_digits
from sqlalchemy import select

from kts_client import (
    ApiError,
    AsyncClient,
    Client,
    Conflict,
    DoneEvent,
    NotFound,
    ProgressEvent,
    TrainingSpec,
    Unauthorized,
    ValidationFailed,
)
from service.app import create_app
from service.db import make_engine, make_session_factory, upgrade_database
from service.rows import Job
from service.settings import Settings
from service.storage import LocalStore
from tests.conftest import make_spec, sqlite_settings
from worker.context import WorkerContext
from worker.jobs.lifecycle import run_job

DIGITS = load_digits()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _work(ctx: WorkerContext, stop: threading.Event) -> None:
    """What `kts worker` does with each queued job, minus the broker: claim, run, finish."""
    while not stop.is_set():
        with ctx.session_factory() as session:
            queued = list(
                session.scalars(select(Job.id).where(Job.status == "queued").order_by(Job.seq))
            )
        for job_id in queued:
            run_job(ctx, job_id)
        stop.wait(0.05)


class LiveService:
    """The app under uvicorn in a thread, and (optionally) a worker loop in another."""

    def __init__(self, settings: Settings, worker: bool = True) -> None:
        upgrade_database(settings.resolved_database_url())
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.threads = [threading.Thread(target=self.server.run, daemon=True)]
        self.stop = threading.Event()
        if worker:
            engine = make_engine(settings.resolved_database_url())
            ctx = WorkerContext(
                settings,
                make_session_factory(engine),
                LocalStore(settings.resolved_artifact_dir()),
            )
            self.threads.append(threading.Thread(target=_work, args=(ctx, self.stop), daemon=True))

    def __enter__(self) -> "LiveService":
        for thread in self.threads:
            thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.server.should_exit = True
        for thread in self.threads:
            thread.join(timeout=120)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    settings = sqlite_settings(tmp_path_factory.mktemp("client") / "data")
    with LiveService(settings) as live:
        yield live


@pytest.fixture
def kts(service: LiveService) -> Iterator[Client]:
    with Client(service.url) as client:
        yield client


@pytest.fixture(scope="module")
def trained(service: LiveService) -> dict[str, Any]:
    """One small digits MLP (with dropout), trained for 2 epochs: its job and model."""
    with Client(service.url) as client:
        job = client.wait(client.submit(make_spec(epochs=2, name="client-mlp")).id, timeout=300)
        assert job.status == "succeeded", job.error
        return {"job": job, "model_id": job.model_id}


def registry_routes(client: Client) -> None:
    """Skip when the registry routes are not served (yet)."""
    try:
        client.list_models(limit=1)
    except ApiError as exc:
        if exc.status in (404, 405):
            pytest.skip(f"registry routes not served yet: GET /v1/models answered {exc.status}")
        raise


# --- data sets ----------------------------------------------------------------------------------


def test_upload_numpy_dataframe_csv_and_npz(kts: Client, tmp_path: Path) -> None:
    X, y = DIGITS.data[:50], DIGITS.target[:50]
    arrays = kts.upload_dataset((X, y), name="digits-50")
    assert (arrays.name, arrays.n_samples, arrays.input_shape) == ("digits-50", 50, [64])
    assert arrays.task == "classification" and arrays.n_classes == int(y.max()) + 1

    csv_path = tmp_path / "rows.csv"
    header = ",".join([f"f{i}" for i in range(4)] + ["label"])
    lines = [",".join([*map(str, X[i, :4]), ["a", "b"][i % 2]]) for i in range(20)]
    csv_path.write_text("\n".join([header, *lines]) + "\n")
    from_csv = kts.upload_dataset(csv_path, target="label")
    assert from_csv.class_names == ["a", "b"] and from_csv.input_shape == [4]
    assert from_csv.name == "rows.csv"

    npz_path = tmp_path / "d.npz"
    np.savez(npz_path, X=X[:10], y=y[:10].astype(np.float32))
    regression = kts.upload_dataset(npz_path, task="regression")
    assert regression.task == "regression" and regression.n_classes is None

    assert kts.get_dataset(arrays.id) == arrays
    listed = kts.list_datasets(limit=2)
    assert len(listed.items) == 2 and listed.next_cursor is not None
    following = kts.list_datasets(limit=2, cursor=listed.next_cursor)
    assert {d.id for d in following.items}.isdisjoint({d.id for d in listed.items})


def test_upload_a_dataframe(kts: Client) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(DIGITS.data[:30, :3], columns=["a", "b", "c"])
    labelled = frame.assign(kind=["x", "y", "z"] * 10)
    from_frame = kts.upload_dataset(labelled, target="kind", name="frame")
    assert from_frame.n_samples == 30 and from_frame.input_shape == [3]
    assert from_frame.class_names == ["x", "y", "z"] and from_frame.name == "frame"
    numeric = frame.assign(target=DIGITS.target[:30])
    assert kts.upload_dataset(numeric, target="target").n_classes == 10
    with pytest.raises(ValidationFailed) as caught:
        kts.upload_dataset(frame, target="missing")
    assert caught.value.details[0][0] == ("target",)


def test_upload_refused_with_typed_errors(kts: Client, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n3,4\n")
    with pytest.raises(ValidationFailed) as caught:
        kts.upload_dataset(bad)  # no target
    assert caught.value.details[0][0] == ("target",)
    with pytest.raises(TypeError):
        kts.upload_dataset(42)


def test_delete_dataset(kts: Client) -> None:
    created = kts.upload_dataset((DIGITS.data[:10], DIGITS.target[:10]))
    kts.delete_dataset(created.id)
    with pytest.raises(NotFound):
        kts.get_dataset(created.id)


# --- jobs ---------------------------------------------------------------------------------------


def test_validate_takes_a_dict_a_file_or_a_training_spec(kts: Client, tmp_path: Path) -> None:
    spec = make_spec()
    checked = kts.validate(spec)
    assert checked.valid and checked.epochs == 3 and checked.dataset["n_samples"] == 1797
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    assert kts.validate(path).summary == checked.summary
    assert kts.validate(str(path)).summary == checked.summary
    assert kts.validate(TrainingSpec.model_validate(spec)).summary == checked.summary


def test_a_bad_spec_raises_validation_failed_with_its_locs(kts: Client) -> None:
    spec = make_spec(model={"layers": [{"type": "dense", "units": 0}]}, epochs=2, extra=1)
    with pytest.raises(ValidationFailed) as caught:
        kts.validate(spec)
    error = caught.value
    assert error.status == 422 and error.code == "validation_error" and error.message
    locs = [loc for loc, _msg in error.details]
    assert ("model", "layers", 0, "units") in locs and ("extra",) in locs
    assert "model.layers[0].units" in str(error)
    with pytest.raises(ValidationFailed):
        kts.submit(spec)


def test_submit_follow_wait(kts: Client) -> None:
    key = uuid.uuid4().hex
    job = kts.submit(make_spec(epochs=3, name="followed"), idempotency_key=key)
    assert job.status in ("queued", "running") and job.kind == "train"
    assert kts.submit(make_spec(epochs=3, name="followed"), idempotency_key=key).id == job.id

    events = list(kts.follow(job.id))
    progress = [e for e in events if isinstance(e, ProgressEvent)]
    assert [e.epoch for e in progress] == [1, 2, 3]
    assert all(e.epochs == 3 and "loss" in e.metrics for e in progress)
    assert all(e.learning_rate is not None and e.learning_rate > 0 for e in progress)
    done = events[-1]
    assert isinstance(done, DoneEvent) and done.job.status == "succeeded"
    assert len(events) == 4

    final = kts.wait(job.id, timeout=60)
    assert final.status == "succeeded" and final.model_id == done.job.model_id
    assert final.progress.epoch == 3


def test_lists_diagnostics_cancel_and_delete(kts: Client, trained: dict[str, Any]) -> None:
    job = trained["job"]
    assert job.id in [j.id for j in kts.list_jobs(status="succeeded", limit=200).items]
    assert kts.get_job(job.id).model_id == trained["model_id"]
    diagnostics = kts.diagnostics(job.id)
    assert [e["epoch"] for e in diagnostics["epochs"]] == [1, 2]
    with pytest.raises(Conflict) as caught:
        kts.cancel(job.id)
    assert caught.value.status == 409 and caught.value.code == "conflict"
    with pytest.raises(ValidationFailed) as bad_status:
        kts.list_jobs(status="sleeping")
    assert bad_status.value.details[0][0] == ("query", "status")

    ended = kts.wait(kts.submit(make_spec(epochs=1, name="to-delete")).id, timeout=300)
    kts.delete_job(ended.id)
    with pytest.raises(NotFound):
        kts.get_job(ended.id)


def test_wait_times_out(kts: Client) -> None:
    job = kts.submit(make_spec(epochs=50, name="slow"))
    try:
        with pytest.raises(TimeoutError):
            kts.wait(job.id, timeout=0.3, poll=0.1)
    finally:
        try:
            kts.cancel(job.id)
        except Conflict:
            pass  # it ended first
        kts.wait(job.id, timeout=120)


class DroppingProxy:
    """A TCP proxy to the service that cuts its first connection right after the first
    `progress` event, as a network would; it records each request's headers."""

    def __init__(self, upstream_port: int, strip_resume: bool = False) -> None:
        self.upstream_port = upstream_port
        self.strip_resume = strip_resume
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.requests: list[bytes] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            cut = not self.requests
            head = down.recv(65536)
            self.requests.append(head)
            if self.strip_resume:  # a server (or proxy) that ignores Last-Event-ID
                head = b"\r\n".join(
                    line
                    for line in head.split(b"\r\n")
                    if not line.lower().startswith(b"last-event-id:")
                )
            up = socket.create_connection(("127.0.0.1", self.upstream_port))
            up.sendall(head)
            threading.Thread(target=self._pipe, args=(up, down, cut), daemon=True).start()

    def _pipe(self, up: socket.socket, down: socket.socket, cut: bool) -> None:
        seen = b""
        with up, down:
            while chunk := up.recv(65536):
                if cut:
                    seen += chunk
                    start = seen.find(b"event: progress")
                    end = seen.find(b"\n\n", start) if start >= 0 else -1
                    if end >= 0:
                        down.sendall(chunk[: len(chunk) - (len(seen) - end - 2)])
                        return  # the connection drops in the middle of the stream
                down.sendall(chunk)

    def close(self) -> None:
        self.listener.close()


async def _follow_async(url: str, job_id: str) -> list[Any]:
    async with AsyncClient(url) as client:
        return [event async for event in client.follow(job_id)]


@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize("resume", ["last-event-id", "replayed"])
def test_follow_resumes_after_a_dropped_connection(
    service: LiveService, trained: dict[str, Any], resume: str, flavour: str
) -> None:
    """Each epoch once, then done: the server skips what Last-Event-ID says was sent, or
    (header dropped on the way) replays from epoch 1 and the client skips the repeats."""
    proxy = DroppingProxy(service.port, strip_resume=resume == "replayed")
    try:
        if flavour == "async":
            events = asyncio.run(_follow_async(proxy.url, trained["job"].id))
        else:
            with Client(proxy.url) as client:
                events = list(client.follow(trained["job"].id))
    finally:
        proxy.close()
    assert [e.epoch for e in events if isinstance(e, ProgressEvent)] == [1, 2]
    assert isinstance(events[-1], DoneEvent) and len(events) == 3
    assert len(proxy.requests) == 2
    assert b"last-event-id: 1\r\n" in proxy.requests[1].lower()


# --- models -------------------------------------------------------------------------------------


def test_predict_plain_and_monte_carlo(kts: Client, trained: dict[str, Any]) -> None:
    model_id, X = trained["model_id"], DIGITS.data[:5]
    plain = kts.predict(model_id, X)
    assert plain.mc_samples == 0 and plain.mean.shape == (5, 10) and plain.std is None
    assert np.allclose(plain.mean.sum(axis=1), 1, atol=1e-4)
    assert np.allclose(kts.predict(model_id, X.astype(np.float32)).mean, plain.mean, atol=1e-5)

    mc = kts.predict(model_id, X, mc_samples=30, seed=7)
    assert mc.model_id == model_id and mc.mc_samples == 30
    assert mc.mean.shape == mc.std.shape == (5, 10)  # type: ignore[union-attr]
    assert mc.std is not None and mc.std.max() > 0
    assert mc.classes is not None and mc.classes.shape == (5,)
    assert (mc.classes == mc.mean.argmax(axis=1)).all()
    assert mc.class_name is not None and mc.class_name.tolist() == [str(c) for c in mc.classes]
    assert mc.predictive_entropy is not None and mc.mutual_information is not None
    assert mc.predictive_entropy.shape == mc.mutual_information.shape == (5,)
    assert (mc.mutual_information <= mc.predictive_entropy + 1e-6).all()
    again = kts.predict(model_id, X, mc_samples=30, seed=7)
    assert np.array_equal(again.mean, mc.mean) and np.array_equal(again.std, mc.std)  # type: ignore[arg-type]

    drawn = kts.predict(model_id, X[:2], mc_samples=4, seed=1, return_samples=True)
    assert drawn.samples is not None and drawn.samples.shape == (2, 4, 10)
    assert drawn.lower is None and drawn.interval is None


def test_predict_errors_are_typed(kts: Client, trained: dict[str, Any]) -> None:
    with pytest.raises(ValidationFailed) as wrong_shape:
        kts.predict(trained["model_id"], np.zeros((2, 3)))
    assert wrong_shape.value.details[0][0] == ("instances",)
    with pytest.raises(ValidationFailed) as no_interval:
        kts.predict(trained["model_id"], DIGITS.data[:1], mc_samples=5, interval=0.9)
    assert no_interval.value.details[0][0] == ("interval",)
    with pytest.raises(NotFound) as unknown:
        kts.predict("no-such-model", DIGITS.data[:1])
    assert unknown.value.status == 404 and unknown.value.code == "not_found"


def test_get_and_download_model(kts: Client, trained: dict[str, Any], tmp_path: Path) -> None:
    model = kts.get_model(trained["model_id"])
    assert model.id == trained["model_id"] and model.input_shape == [64]
    assert model.uncertainty is not None and model.job_id == trained["job"].id
    into_folder = kts.download_model(model.id, tmp_path)
    assert into_folder == tmp_path / f"{model.id}.keras"
    with zipfile.ZipFile(into_folder) as zf:
        assert "config.json" in zf.namelist()
    named = kts.download_model(model.id, tmp_path / "m.keras")
    assert named.read_bytes() == into_folder.read_bytes()
    assert not list(tmp_path.glob("*.part"))
    with pytest.raises(NotFound):
        kts.download_model("no-such-model", tmp_path / "x.keras")
    assert not (tmp_path / "x.keras").exists()
    with pytest.raises(ValidationFailed) as bad:
        kts.download_model(model.id, tmp_path / "y.keras", quantize="int8")
    assert bad.value.details[0][0] == ("quantize",)


def test_registry_aliases_tags_and_delete(kts: Client, trained: dict[str, Any]) -> None:
    registry_routes(kts)
    model = kts.get_model(trained["model_id"])
    name = model.name
    champion = kts.set_alias(model.id, "champion")
    assert "champion" in champion.aliases
    assert kts.get_model(f"{name}@champion").id == model.id
    assert kts.get_model(f"{name}@{model.version}").id == model.id
    assert kts.predict(f"{name}@champion", DIGITS.data[:2]).mean.shape == (2, 10)
    assert [m.id for m in kts.list_models(name=name, alias="champion").items] == [model.id]
    assert kts.set_tags(model.id, {"stage": "prod"}).tags == {"stage": "prod"}
    assert model.id in [m.id for m in kts.list_models(tag="stage:prod").items]
    assert [m.id for m in kts.list_models(job_id=trained["job"].id).items] == [model.id]
    kts.delete_alias(model.id, "champion")
    with pytest.raises(NotFound):
        kts.get_model(f"{name}@champion")

    spare = kts.wait(kts.submit(make_spec(epochs=1, name="spare")).id, timeout=300)
    assert spare.model_id is not None
    assert kts.get_model("spare@latest").id == spare.model_id
    kts.delete_model("spare@latest")
    with pytest.raises(NotFound):
        kts.get_model(spare.model_id)


# --- configuration, auth, async -----------------------------------------------------------------


def test_url_and_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KTS_URL", "http://example.invalid:9/")
    monkeypatch.setenv("KTS_API_KEY", "k-123")
    with Client() as client:
        assert client.base_url == "http://example.invalid:9"
        assert client._http.headers["authorization"] == "Bearer k-123"
    with Client("http://127.0.0.1:1", api_key="") as client:
        assert "authorization" not in client._http.headers


def test_bearer_key_and_unauthorized(tmp_path: Path) -> None:
    from service.auth import create_key

    settings = sqlite_settings(tmp_path / "data", require_auth=True)
    with LiveService(settings, worker=False) as live:
        with make_session_factory(make_engine(settings.resolved_database_url()))() as session:
            key = create_key(session, "acme")
            session.commit()
        with Client(live.url, api_key="") as anonymous, pytest.raises(Unauthorized) as caught:
            anonymous.list_jobs()
        assert caught.value.status == 401 and caught.value.code == "unauthorized"
        with Client(live.url, api_key=key) as client:
            assert client.list_jobs().items == []


def test_async_client(service: LiveService, trained: dict[str, Any], tmp_path: Path) -> None:
    async def scenario() -> None:
        async with AsyncClient(service.url) as kts:
            dataset = await kts.upload_dataset((DIGITS.data[:40], DIGITS.target[:40]))
            assert (await kts.get_dataset(dataset.id)).n_samples == 40
            assert (await kts.validate(make_spec())).valid
            events = [e async for e in kts.follow(trained["job"].id)]
            assert [e.epoch for e in events if isinstance(e, ProgressEvent)] == [1, 2]
            assert isinstance(events[-1], DoneEvent)
            job = await kts.wait(trained["job"].id, timeout=10)
            assert job.model_id == trained["model_id"]
            pred = await kts.predict(job.model_id, DIGITS.data[:3], mc_samples=5, seed=2)
            assert pred.std is not None and pred.std.shape == (3, 10)
            assert (await kts.get_model(job.model_id)).id == job.model_id
            assert job.id in [j.id for j in (await kts.list_jobs(limit=200)).items]
            path = await kts.download_model(job.model_id, tmp_path)
            assert path.name == f"{job.model_id}.keras" and path.stat().st_size > 0
            with pytest.raises(NotFound):
                await kts.get_job("nope")

    asyncio.run(scenario())


def test_importing_the_client_loads_no_keras() -> None:
    code = (
        "import sys, kts_client, kts_client.cli\n"
        "print([m for m in ('keras', 'jax', 'tensorflow', 'torch', 'pandas') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --- PostgreSQL ---------------------------------------------------------------------------------


@pytest.mark.postgres
def test_submit_wait_predict_on_postgres(tmp_path: Path, pg_url: str) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=pg_url, require_auth=False)
    with LiveService(settings) as live, Client(live.url) as kts:
        job = kts.submit(make_spec(epochs=2, name="pg-mlp"))
        events = list(kts.follow(job.id))
        assert [e.epoch for e in events if isinstance(e, ProgressEvent)] == [1, 2]
        done = kts.wait(job.id, timeout=300)
        assert done.status == "succeeded" and done.model_id is not None
        pred = kts.predict(done.model_id, DIGITS.data[:4], mc_samples=10, seed=3)
        assert pred.mean.shape == (4, 10) and pred.classes is not None
        with pytest.raises(NotFound):
            kts.get_model("no-such-model")
