"""A full artifact disk (a 2 MiB tmpfs): a job fails `storage_full` with no model row and no
half-written file, an upload answers 507 `storage_full` and stores nothing, and once space is
back the next job and upload succeed."""

import io
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from service.app import create_app
from service.db import make_engine, make_session_factory, upgrade_database
from service.rows import Dataset, TrainedModel
from service.storage import LocalStore
from tests.conftest import _in_ci, make_spec, sqlite_settings, submit
from worker.context import WorkerContext
from worker.jobs.lifecycle import run_job

pytestmark = pytest.mark.slow


def _mount(folder: Path, size: str) -> None:
    """Mount (or remount) a tmpfs of `size` on `folder`; skip where this cannot run."""
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" if not os.path.ismount(folder) else f"remount,size={size}"
    why = "mounting a tmpfs needs root" if os.geteuid() != 0 else None
    if why is None:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True
        )
        why = f"mount failed: {done.stderr.decode().strip()}" if done.returncode else None
    if why is not None:
        if _in_ci():
            pytest.fail(f"CI=true but {why}")
        pytest.skip(why)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An artifact folder on a 2 MiB tmpfs, unmounted afterwards."""
    folder = tmp_path / "artifacts"
    _mount(folder, "2m")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def full_setup(tmp_path: Path, small_disk: Path) -> Iterator[tuple[TestClient, WorkerContext]]:
    settings = sqlite_settings(tmp_path / "data", artifact_dir=small_disk)
    upgrade_database(settings.resolved_database_url())
    engine = make_engine(settings.resolved_database_url())
    ctx = WorkerContext(settings, make_session_factory(engine), LocalStore(small_disk))
    with TestClient(create_app(settings)) as client:
        yield client, ctx
    engine.dispose()


def _stray_files(folder: Path) -> list[str]:
    """Half-written files (temp names) and leftovers of upload staging."""
    temps = [str(p) for p in folder.rglob(".tmp-*")]
    scratch = folder / ".scratch"
    staged = [str(p) for p in scratch.rglob("*")] if scratch.exists() else []
    return temps + staged


def _count(ctx: WorkerContext, row: type) -> int:
    with ctx.session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(row)) or 0)


def _npz(rows: int, features: int) -> bytes:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, features)).astype(np.float32)
    y = rng.integers(0, 3, size=rows)
    buf = io.BytesIO()
    np.savez(buf, X=X, y=y)
    return buf.getvalue()


# ~300,000 parameters: with Adam's two slots the saved model is about 3.6 MB
WIDE = [
    {"type": "dense", "units": 4000, "activation": "relu"},
    {"type": "dense", "units": 10, "activation": "softmax"},
]
SMALL = [
    {"type": "dense", "units": 8, "activation": "relu"},
    {"type": "dense", "units": 10, "activation": "softmax"},
]


def test_full_disk_fails_the_job_and_the_upload_cleanly_then_recovers(
    full_setup: tuple[TestClient, WorkerContext], small_disk: Path
) -> None:
    client, ctx = full_setup
    job_id = submit(client, make_spec(epochs=1, model={"layers": WIDE}))
    assert run_job(ctx, job_id) == "failed"
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "failed" and job["error"]["code"] == "storage_full", job
    assert "storage is full" in job["error"]["message"]
    assert job.get("model_id") is None
    assert _count(ctx, TrainedModel) == 0
    assert _stray_files(small_disk) == []

    r = client.post(
        "/v1/datasets", files={"file": ("big.npz", _npz(2000, 500), "application/octet-stream")}
    )
    assert r.status_code == 507, r.text
    assert r.json()["error"]["code"] == "storage_full", r.json()
    assert _count(ctx, Dataset) == 0
    assert not (small_disk / "datasets").exists() or not any((small_disk / "datasets").iterdir())
    assert _stray_files(small_disk) == []

    _mount(small_disk, "64m")  # space is back
    again = submit(client, make_spec(epochs=1, model={"layers": SMALL}))
    assert run_job(ctx, again) == "succeeded"
    assert client.get(f"/v1/jobs/{again}").json()["status"] == "succeeded"
    assert _count(ctx, TrainedModel) == 1
    r = client.post(
        "/v1/datasets", files={"file": ("big.npz", _npz(2000, 500), "application/octet-stream")}
    )
    assert r.status_code == 201, r.text
    assert _stray_files(small_disk) == []


def test_a_filled_disk_answers_507_until_the_filler_goes(
    full_setup: tuple[TestClient, WorkerContext], small_disk: Path
) -> None:
    """Small writes fail too once a filler file takes the last byte; deleting it is enough."""
    client, _ctx = full_setup
    filler = small_disk / "filler"
    with open(filler, "wb", buffering=0) as fh:  # to the last block, as a runaway log would
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == 28
    small = _npz(20, 4)
    r = client.post("/v1/datasets", files={"file": ("s.npz", small, "application/octet-stream")})
    assert r.status_code == 507 and r.json()["error"]["code"] == "storage_full", r.text
    filler.unlink()
    r = client.post("/v1/datasets", files={"file": ("s.npz", small, "application/octet-stream")})
    assert r.status_code == 201, r.text
