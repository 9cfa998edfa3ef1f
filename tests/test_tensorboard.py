"""TensorBoard event files: written by the worker on both engines, downloaded as a .tar.gz,
read back (scalars per epoch and history key, weight and gradient histograms), bounded,
continued across a resume, deleted with the job, and fetched by `kts tensorboard`."""

import io
import os
import struct
import subprocess
import sys
import tarfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from tensorboardX.proto.event_pb2 import Event

from kts_client import ApiError, Client
from service.rows import Job
from service.settings import Settings
from tests.conftest import make_spec, submit
from tests.test_client import LiveService
from worker.context import WorkerContext
from worker.jobs.lease import request_release
from worker.jobs.lifecycle import run_job
from worker.training.checkpoint import Checkpoints
from worker.training.tensorboard import histogram_every

KTS = str(Path(sys.executable).parent / "kts")


def read_events(data: bytes) -> list[Event]:
    """The events of one file: TFRecord framing (length, its CRC, the record, its CRC)."""
    events, at = [], 0
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at : at + 8])
        events.append(Event.FromString(data[at + 12 : at + 12 + length]))
        at += 12 + length + 4
    assert at == len(data)
    return events


def archive_files(response: Any, job_id: str) -> dict[str, list[Event]]:
    """The events of each file in a downloaded archive, by file name (in name order)."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/gzip"
    assert f"{job_id}-tensorboard.tar.gz" in response.headers["content-disposition"]
    files = {}
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
        for member in tar.getmembers():
            folder, name = member.name.split("/")
            assert folder == job_id and name.startswith("events.out.tfevents.")
            data = tar.extractfile(member)
            assert data is not None
            files[name] = read_events(data.read())
    return dict(sorted(files.items()))


def scalars(events: list[Event]) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = defaultdict(dict)
    for event in events:
        for value in event.summary.value:
            if not value.HasField("histo"):
                out[value.tag][event.step] = value.simple_value
    return out


def histograms(events: list[Event]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for event in events:
        for value in event.summary.value:
            if value.HasField("histo"):
                assert value.histo.num > 0 and len(value.histo.bucket) > 1
                out[value.tag].append(event.step)
    return out


def all_events(files: dict[str, list[Event]]) -> list[Event]:
    return [event for events in files.values() for event in events]


@pytest.mark.parametrize("engine", ["fit", "compiled"])
def test_both_engines_write_scalars_and_histograms(
    client: TestClient, ctx: WorkerContext, engine: str
) -> None:
    spec = make_spec(
        epochs=3,
        engine=engine,
        optimizer={"type": "sgd", "learning_rate": 0.01, "momentum": 0.9},
        lr_schedule={"type": "one_cycle", "max_learning_rate": 0.05},  # (it cycles momentum)
    )
    job_id = submit(client, spec)
    assert run_job(ctx, job_id) == "succeeded"
    job = client.get(f"/v1/jobs/{job_id}").json()
    files = archive_files(client.get(f"/v1/jobs/{job_id}/tensorboard"), job_id)
    assert len(files) == 1
    events = all_events(files)
    found = scalars(events)
    history = job["history"]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"} <= set(history)
    assert {"momentum", "epoch_seconds"} <= set(history)
    assert set(found) == set(history)
    for key, column in history.items():
        assert list(found[key]) == [1, 2, 3], key
        assert list(found[key].values()) == pytest.approx(column, rel=1e-6), key
    hist = histograms(events)
    for layer in ("dense", "dense_1"):
        for weight in ("kernel", "bias"):
            assert hist[f"weights/{layer}/{weight}"] == [1, 2, 3]
            assert hist[f"gradients/{layer}/{weight}"] == [1, 2, 3]
    assert hist["weights/batch_normalization/moving_mean"] == [1, 2, 3]  # non-trainable too
    assert "gradients/batch_normalization/moving_mean" not in hist


def test_histograms_are_bounded_and_the_files_go_with_the_job(
    client: TestClient, ctx: WorkerContext, settings: Settings
) -> None:
    assert histogram_every(5, 2) == 3 and histogram_every(3, 50) == 1
    bounded = WorkerContext(
        settings.model_copy(update={"tensorboard_histogram_epochs": 2}),
        ctx.session_factory,
        ctx.store,
    )
    job_id = submit(client, make_spec(epochs=5))
    assert run_job(bounded, job_id) == "succeeded"
    events = all_events(archive_files(client.get(f"/v1/jobs/{job_id}/tensorboard"), job_id))
    assert list(scalars(events)["loss"]) == [1, 2, 3, 4, 5]
    assert histograms(events)["gradients/dense/kernel"] == [3, 5]  # every 3rd and the last

    assert client.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert not ctx.store.path(f"jobs/{job_id}/tensorboard").exists()
    assert client.get(f"/v1/jobs/{job_id}/tensorboard").status_code == 404


def test_no_files_is_a_404_with_the_error_body(
    client: TestClient, ctx: WorkerContext, settings: Settings
) -> None:
    off = WorkerContext(
        settings.model_copy(update={"tensorboard": False}), ctx.session_factory, ctx.store
    )
    job_id = submit(client, make_spec(epochs=1))
    assert run_job(off, job_id) == "succeeded"
    for path in (f"/v1/jobs/{job_id}/tensorboard", "/v1/jobs/no-such-job/tensorboard"):
        r = client.get(path)
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "not_found"
    assert (
        "KTS_TENSORBOARD" in client.get(f"/v1/jobs/{job_id}/tensorboard").json()["error"]["message"]
    )


def wait_for(predicate: Any, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_resumed_job_continues_its_steps(
    client: TestClient, ctx: WorkerContext, settings: Settings
) -> None:
    quick = WorkerContext(
        settings.model_copy(update={"heartbeat_seconds": 0.1}), ctx.session_factory, ctx.store
    )
    job_id = submit(client, make_spec(epochs=400, batch_size=8))
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(run_job(quick, job_id, "node/1")))
    thread.start()
    wait_for(lambda: client.get(f"/v1/jobs/{job_id}").json()["progress"]["epoch"] >= 2)
    assert request_release(quick, "node") == 1
    thread.join(timeout=120)
    assert result == ["released"]
    checkpoint = Checkpoints(ctx.store, job_id).load()
    assert checkpoint is not None
    done = int(checkpoint["epoch"])
    assert done >= 2
    with ctx.session_factory() as session:  # the resumed attempt trains two more epochs
        job = session.scalar(select(Job).where(Job.id == job_id))
        assert job is not None
        job.spec = {**job.spec, "epochs": done + 2}
        job.epochs = done + 2
        session.commit()
    assert run_job(ctx, job_id, "node/2") == "succeeded"

    first, second = archive_files(client.get(f"/v1/jobs/{job_id}/tensorboard"), job_id).values()
    assert list(scalars(first)["loss"]) == list(range(1, done + 1))
    assert list(scalars(second)["loss"]) == [done + 1, done + 2]
    assert histograms(second)["gradients/dense/kernel"] == [done + 1, done + 2]
    purge = [e for e in second if e.HasField("session_log")]
    assert [e.step for e in purge] == [done + 1]  # TensorBoard hides steps past the checkpoint


def kts(url: str, *args: str, path: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `kts --url URL ARGS...` with only `path` on PATH (where `tensorboard` may be)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KTS_")}
    return subprocess.run(
        [KTS, "--url", url, *args],
        env={**env, "PATH": path},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def test_client_and_cli_download_and_open(
    settings: Settings, ctx: WorkerContext, tmp_path: Path
) -> None:
    fake = tmp_path / "bin"  # a stand-in `tensorboard` that records how it was started
    fake.mkdir()
    launched = tmp_path / "launched.txt"
    (fake / "tensorboard").write_text(f'#!/bin/sh\necho "$@" > {launched}\n')
    (fake / "tensorboard").chmod(0o755)
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "cli"
    with LiveService(settings, worker=False) as live, Client(live.url) as kts_client:
        job_id = kts_client.submit(make_spec(epochs=1)).id
        assert run_job(ctx, job_id) == "succeeded"
        run_dir = kts_client.download_tensorboard(job_id, tmp_path / "py")
        assert run_dir == tmp_path / "py" / job_id
        assert [p.name.startswith("events.out.tfevents.") for p in run_dir.iterdir()] == [True]
        with pytest.raises(ApiError) as missing:
            kts_client.download_tensorboard("no-such-job", tmp_path / "py")
        assert missing.value.status == 404

        def cli(*args: str, path: Path = empty) -> subprocess.CompletedProcess[str]:
            return kts(live.url, "tensorboard", *args, path=str(path), cwd=tmp_path)

        got = cli(job_id, "--no-open", "--dir", str(out))
        assert got.returncode == 0, got.stderr
        assert len(list((out / job_id).glob("events.out.tfevents.*"))) == 1
        assert not launched.exists()

        hint = cli(job_id, "--dir", str(out))
        assert hint.returncode == 0 and "pip install tensorboard" in hint.stderr

        opened = cli(job_id, "--dir", str(out), "--port", "6123", path=fake)
        assert opened.returncode == 0, opened.stderr
        assert launched.read_text().split() == ["--logdir", str(out), "--port", "6123"]

        unknown = cli("no-such-job", "--no-open")
        assert unknown.returncode == 1 and "not_found" in unknown.stderr
        assert not (tmp_path / "kts-tensorboard").exists()  # nothing made for an error
