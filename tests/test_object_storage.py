"""Artifacts in S3-compatible object storage, against moto's real HTTP server: the store itself,
its bounded download cache, a whole API + worker run that writes nothing locally, and two worker
processes without a shared folder, one killed mid-job."""

import hashlib
import io
import os
import signal
import socket
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.app import create_app
from service.datasets.arrays import load_builtin
from service.db import make_engine, make_session_factory, upgrade_database
from service.errors import Unavailable
from service.rows import Job
from service.storage import ArtifactKeyInvalid, open_store
from service.storage.cache import LOCK, FileCache
from service.storage.s3 import S3Store, parse_url, s3_errors
from tests.conftest import REDIS_URL, make_spec, submit
from tests.s3 import S3Server, moto_server
from tests.test_batch_predictions import upload
from tests.test_end_to_end import kts
from worker.context import WorkerContext
from worker.jobs.lifecycle import run_job

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


@pytest.fixture
def bucket(s3: S3Server) -> str:
    return s3.new_bucket()


def store_of(s3: S3Server, url: str, root: Path, **extra: Any) -> S3Store:
    store = open_store(s3.settings(url, root, **extra))
    assert isinstance(store, S3Store)
    return store


# --- The store -------------------------------------------------------------------------------


def test_urls_name_a_bucket_and_a_prefix() -> None:
    assert parse_url("s3://b") == ("b", "")
    assert parse_url("s3://b/a/b/") == ("b", "a/b/")
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        parse_url("/var/artifacts")


def test_objects_round_trip_under_the_prefix(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    store = store_of(s3, f"s3://{bucket}/team/kts", tmp_path)
    store.put_bytes("models/m1/model.keras", b"weights")
    with store.writer("models/m1/notes.txt") as fh:
        fh.write(b"written whole")
    source = tmp_path / "src.bin"
    source.write_bytes(b"x" * 1000)
    store.put_file("jobs/j1/tensorboard/events.out.tfevents.1", source)
    assert s3.keys(bucket) == [
        "team/kts/jobs/j1/tensorboard/events.out.tfevents.1",
        "team/kts/models/m1/model.keras",
        "team/kts/models/m1/notes.txt",
    ]
    assert store.read_bytes("models/m1/notes.txt") == b"written whole"
    assert store.exists("models/m1/model.keras") and not store.exists("models/m1/other")
    assert store.size("jobs/j1/tensorboard/events.out.tfevents.1") == 1000
    assert store.list("models/m1") == ["models/m1/model.keras", "models/m1/notes.txt"]
    assert store.list("models/m") == []  # a folder, not a string prefix
    with store.reader("models/m1/model.keras") as body:
        assert body.read(3) == b"wei"
    assert store.head_bytes("models/m1/model.keras", 3) == b"wei"  # a ranged GET
    assert store.head_bytes("models/m1/model.keras", 1000) == b"weights"
    with store.local_file("models/m1/model.keras") as path:
        assert path.name == "model.keras" and path.read_bytes() == b"weights"
    for missing in (store.read_bytes, store.size):
        with pytest.raises(FileNotFoundError):
            missing("models/m1/gone")
    with pytest.raises(FileNotFoundError), store.local_file("models/m1/gone"):
        pass
    with pytest.raises(ArtifactKeyInvalid):
        store.put_bytes("../outside", b"")
    store.delete("models/m1/notes.txt")
    store.delete("models/m1/notes.txt")  # gone already: no error
    store.delete_tree("models/m1")
    assert s3.keys(bucket) == ["team/kts/jobs/j1/tensorboard/events.out.tfevents.1"]
    assert store.is_writable()
    assert not store_of(s3, "s3://no-such-bucket", tmp_path / "other").is_writable()


def test_a_failed_writer_leaves_no_object(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    store = store_of(s3, f"s3://{bucket}", tmp_path)
    with pytest.raises(RuntimeError), store.writer("datasets/d1/X.npy") as fh:
        fh.write(b"half of it")
        raise RuntimeError("the upload's source broke")
    assert s3.keys(bucket) == []
    assert not any((store.cache.root / "scratch").iterdir())  # staging removed


def test_a_large_file_goes_up_in_parts(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    store = store_of(s3, f"s3://{bucket}", tmp_path, s3_part_size=5 * MiB)
    data = np.random.default_rng(0).bytes(11 * MiB)
    with store.writer("datasets/big/X.npy") as fh:
        fh.write(data)
    head = s3.client().head_object(Bucket=bucket, Key="datasets/big/X.npy")
    assert head["ETag"].strip('"').endswith("-3")  # three parts: 5 + 5 + 1 MiB
    with store.local_file("datasets/big/X.npy") as path:
        assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(data).digest()


def test_the_cache_keeps_its_bound_and_files_in_use(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    store = store_of(s3, f"s3://{bucket}", tmp_path, cache_max_bytes=3000)
    for n in range(6):
        store.put_bytes(f"plots/p/{n}.bin", bytes([n]) * 1000)
    dead = tmp_path / "cache" / "p999999999"  # left by a process that was killed
    dead.mkdir(parents=True)
    with store.local_file("plots/p/0.bin") as held:
        assert not dead.exists()
        for n in range(1, 6):
            with store.local_file(f"plots/p/{n}.bin") as path:
                assert path.read_bytes() == bytes([n]) * 1000
            assert store.cache.bytes <= 3000 + 1000  # the bound, past it only the held file
        assert held.read_bytes() == bytes([0]) * 1000  # in use: never evicted
    assert store.cache.bytes <= 3000
    on_disk = list((tmp_path / "cache").rglob("*.bin"))
    assert sum(p.stat().st_size for p in on_disk) <= 3000
    # a rewritten object is fetched again (the ETag changed), not served stale
    store.put_bytes("plots/p/5.bin", b"new")
    with store.local_file("plots/p/5.bin") as path:
        assert path.read_bytes() == b"new"


def test_cache_folders_are_per_process(tmp_path: Path) -> None:
    cache = FileCache(tmp_path, 10)
    with cache.file("a/b.txt", "v1", lambda p: p.write_bytes(b"0123456789abc")) as path:
        folder = path.parent.parent
        assert folder.parent == tmp_path
        assert folder.name.startswith(f"p{socket.gethostname()}-{os.getpid()}-")
        assert (folder / LOCK).is_file()
        assert path.read_bytes() == b"0123456789abc"  # larger than the bound: kept while used
    assert cache.bytes == 0 and not path.exists()


def test_threads_missing_the_same_file_download_it_once(tmp_path: Path) -> None:
    cache = FileCache(tmp_path, 10)  # smaller than the file: only pins keep it
    calls: list[int] = []
    release = threading.Event()

    def slow_download(path: Path) -> None:
        calls.append(1)
        release.wait()
        path.write_bytes(b"x" * 100)

    seen: list[bytes] = []

    def reader() -> None:
        with cache.file("models/m/model.keras", "e1", slow_download) as path:
            seen.append(path.read_bytes())

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for t in threads:
        t.start()
    pins = lambda: sum(e.pins for e in cache._entries.values())  # noqa: E731
    wait_until(lambda: pins() == 8)  # one fetching, seven waiting on it
    # other files come and go past the bound meanwhile: the one in flight is never evicted
    for n in range(3):
        with cache.file(f"plots/p/{n}.png", "e1", lambda p: p.write_bytes(b"y" * 50)):
            pass
    release.set()
    for t in threads:
        t.join()
    assert calls == [1] and seen == [b"x" * 100] * 8
    assert cache.bytes == 0  # all unpinned, past the bound: evicted


def test_a_failed_download_lets_a_waiting_thread_fetch_it(tmp_path: Path) -> None:
    cache = FileCache(tmp_path, 1000)
    first, go = threading.Event(), threading.Event()
    attempts: list[int] = []

    def flaky(path: Path) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            first.set()
            go.wait()
            raise Unavailable("the store broke off")
        path.write_bytes(b"ok")

    errors: list[BaseException] = []
    got: list[bytes] = []

    def reader() -> None:
        try:
            with cache.file("k/f.bin", "e1", flaky) as path:
                got.append(path.read_bytes())
        except Unavailable as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    first.wait()
    wait_until(lambda: sum(e.pins for e in cache._entries.values()) == 3)
    go.set()
    for t in threads:
        t.join()
    assert len(errors) == 1 and got == [b"ok", b"ok"] and len(attempts) == 2


HOLDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from service.storage.cache import FileCache
    cache = FileCache(Path(sys.argv[1]), 1000)
    with cache.file("a/b.txt", "v1", lambda p: p.write_bytes(b"held")) as path:
        print(path.parent.parent, flush=True)
        sys.stdin.readline()  # lives (and holds its folder's lock) until told to end
""")


def test_cleanup_removes_only_folders_whose_lock_is_free(tmp_path: Path) -> None:
    """Another live process's folder stays even when its pid is ours or dead here (a cache
    volume shared by containers); folders left by ended processes go."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=Path(__file__).parent.parent,
    )
    assert child.stdout is not None and child.stdin is not None
    live = Path(child.stdout.readline().decode().strip())
    try:
        # a folder named like another host's pid 1 whose process ended: its lock is free
        dead = tmp_path / "pother-host-1-0123abcd"
        dead.mkdir()
        (dead / LOCK).touch()
        (dead / "x").write_bytes(b"stale")
        with FileCache(tmp_path, 1000).file("c/d.txt", "v1", lambda p: p.write_bytes(b"")):
            pass
        assert not dead.exists()
        assert (live / LOCK).is_file() and list(live.rglob("b.txt"))  # still in use
    finally:
        child.stdin.close()
        child.wait(timeout=60)
    with FileCache(tmp_path, 1000).file("c/d.txt", "v1", lambda p: p.write_bytes(b"")):
        pass
    assert not live.exists()  # its process ended: now it goes


def wait_until(predicate: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_store_failures_are_unavailable_and_missing_objects_not_found() -> None:
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import ClientError, ReadTimeoutError, ResponseStreamingError
    from urllib3.exceptions import ProtocolError

    def client_error(code: str) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": code}}, "GetObject")

    failures: list[Exception] = [
        client_error("AccessDenied"),
        client_error("NoSuchBucket"),
        client_error("SlowDown"),
        S3UploadFailedError("Failed to upload: NoSuchBucket"),
        ReadTimeoutError(endpoint_url="http://s3"),
        ResponseStreamingError(error=ProtocolError("broken off")),
        ProtocolError("broken off"),
    ]
    for failure in failures:
        with pytest.raises(Unavailable), s3_errors("k"):
            raise failure
    for code in ("NoSuchKey", "404"):
        with pytest.raises(FileNotFoundError), s3_errors("k"):
            raise client_error(code)


def test_a_missing_bucket_answers_503_not_500(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    settings = s3.settings(f"s3://{bucket}/kts", tmp_path)
    upgrade_database(settings.resolved_database_url())
    digits = load_builtin("digits")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        dataset = upload(client, digits.X[:50], digits.y[:50])
        client.get(f"/v1/datasets/{dataset}/rows", params={"limit": 2})  # cached here now
        objects = [{"Key": k} for k in s3.keys(bucket)]
        s3.client().delete_objects(Bucket=bucket, Delete={"Objects": objects})
        s3.client().delete_bucket(Bucket=bucket)
        buf = io.BytesIO()
        np.savez(buf, X=digits.X[:50], y=digits.y[:50])
        answers = {
            "read": client.get(f"/v1/datasets/{dataset}/rows", params={"limit": 2}),
            "write": client.post("/v1/datasets", files={"file": ("d.npz", buf.getvalue())}),
        }
        for what, r in answers.items():
            assert r.status_code == 503, (what, r.text)
            assert r.json()["error"]["code"] == "unavailable", (what, r.text)
        assert client.get("/readyz").status_code == 503
        assert client.get("/v1/datasets").status_code == 200  # the database still answers


# --- API and worker on object storage --------------------------------------------------------


def nothing_local(data_dir: Path) -> None:
    """No artifact folder, and no file left in the cache's staging folder."""
    assert not (data_dir / "artifacts").exists()
    scratch = data_dir / "cache" / "scratch"
    assert not scratch.exists() or not any(scratch.iterdir())


def test_api_and_worker_share_only_the_database_and_the_bucket(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    url = f"s3://{bucket}/kts"
    api = s3.settings(url, tmp_path / "api")
    (tmp_path / "api").mkdir()
    upgrade_database(api.resolved_database_url())
    worker = s3.settings(url, tmp_path / "worker", database_url=api.resolved_database_url())
    ctx = WorkerContext(
        worker, make_session_factory(make_engine(worker.database_url or "")), open_store(worker)
    )
    with TestClient(create_app(api)) as client:
        digits = load_builtin("digits")
        dataset = upload(client, digits.X[:400], digits.y[:400])
        rows = client.get(f"/v1/datasets/{dataset}/rows", params={"limit": 2})
        assert rows.status_code == 200 and len(rows.json()["rows"]) == 2
        job_id = submit(client, make_spec(dataset={"id": dataset}, epochs=3))
        assert run_job(ctx, job_id, "w/1") == "succeeded"
        model_id = client.get(f"/v1/jobs/{job_id}").json()["model_id"]
        predict(client, model_id, digits.X[:3])
        downloads(client, job_id, model_id)
        batch_id = batch(client, ctx, model_id, dataset)
        keys = s3.keys(bucket, "kts/")
        for key in (
            f"kts/datasets/{dataset}/X.npy",
            f"kts/models/{model_id}/model.keras",
            f"kts/batch_predictions/{batch_id}/results.parquet",
        ):
            assert key in keys
        assert any(k.startswith(f"kts/jobs/{job_id}/tensorboard/") for k in keys)
        assert any(k.startswith(f"kts/plots/jobs/{job_id}/") for k in keys)
        assert not any(k.startswith(f"kts/jobs/{job_id}/ckpt-") for k in keys)  # cleaned up
        assert client.delete(f"/v1/models/{model_id}").status_code == 204
        assert not s3.keys(bucket, f"kts/models/{model_id}/")
    nothing_local(tmp_path / "api")
    nothing_local(tmp_path / "worker")


def predict(client: TestClient, model_id: str, X: np.ndarray) -> None:
    body = {"instances": X.tolist(), "mc_samples": 10, "seed": 1}
    r = client.post(f"/v1/models/{model_id}/predict", json=body)
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == 3


def downloads(client: TestClient, job_id: str, model_id: str) -> None:
    art = client.get(f"/v1/models/{model_id}/artifact")
    assert art.status_code == 200, art.text
    assert art.headers["content-disposition"] == f'attachment; filename="{model_id}.keras"'
    assert int(art.headers["content-length"]) == len(art.content)
    with zipfile.ZipFile(io.BytesIO(art.content)) as zf:
        assert "config.json" in zf.namelist()
    board = client.get(f"/v1/jobs/{job_id}/tensorboard")
    assert board.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(board.content)) as tar:
        assert any(".tfevents." in n for n in tar.getnames())
    plot = client.get(f"/v1/jobs/{job_id}/plots/learning_curves")
    assert plot.status_code == 200 and plot.content.startswith(b"\x89PNG")


def batch(client: TestClient, ctx: WorkerContext, model_id: str, dataset: str) -> str:
    r = client.post(
        f"/v1/models/{model_id}/batch-predictions",
        json={"dataset": {"id": dataset}, "mc_samples": 5, "seed": 2},
    )
    assert r.status_code == 202, r.text
    batch_id = str(r.json()["id"])
    assert run_job(ctx, batch_id, "w/1") == "succeeded"
    url = f"/v1/batch-predictions/{batch_id}/results"
    assert client.get(url, params={"limit": 5}).json()["total"] == 400
    assert len(client.get(url, params={"format": "csv"}).text.strip().splitlines()) == 401
    parquet = client.get(url, params={"format": "parquet"})
    assert pq.read_table(io.BytesIO(parquet.content)).num_rows == 400
    plot = client.get(f"/v1/batch-predictions/{batch_id}/plots/entropy_histogram")
    assert plot.status_code == 200
    return batch_id


# --- Two worker processes, no shared folder --------------------------------------------------


def start_worker(name: str, env: dict[str, str], folder: Path) -> subprocess.Popen[bytes]:
    folder.mkdir(parents=True)
    log = open(folder / "worker.log", "wb")  # noqa: SIM115
    env = {**env, "KTS_DATA_DIR": str(folder)}  # its own scratch and cache
    command = [kts(), "worker", "--hostname", f"{name}@%h"]
    return subprocess.Popen(command, env=env, stdout=log, stderr=log, start_new_session=True)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_for(what: str, predicate: Any, folders: list[Path], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            logs = "\n".join(
                (f / "worker.log").read_text(errors="replace")[-3000:] for f in folders
            )
            raise AssertionError(f"timed out waiting for {what}:\n{logs}")
        time.sleep(0.2)


@pytest.mark.slow
def test_a_killed_workers_job_resumes_on_another_host(
    s3: S3Server, bucket: str, tmp_path: Path, pg_url: str
) -> None:
    url = f"s3://{bucket}/kts"
    # leases short enough for a quick rescue, long enough for a loaded 2-core machine
    fast = {"lease_seconds": 10.0, "heartbeat_seconds": 1.0, "reconcile_seconds": 1.0}
    queue = f"kts-s3-{uuid.uuid4().hex[:8]}"
    api = s3.settings(
        url, tmp_path / "api", database_url=pg_url, broker_url=REDIS_URL, queue=queue, **fast
    )
    upgrade_database(pg_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KTS_")}
    env.update(s3.env(url), KTS_DATABASE_URL=pg_url, KTS_BROKER_URL=REDIS_URL, KTS_QUEUE=queue)
    env.update({f"KTS_{k.upper()}": str(v) for k, v in fast.items()})
    env["KTS_BACKEND"] = os.environ["KTS_BACKEND"]
    folders = [tmp_path / "host-a", tmp_path / "host-b"]
    workers = {"a": start_worker("a", env, folders[0]), "b": start_worker("b", env, folders[1])}
    engine = make_engine(pg_url)
    try:
        with TestClient(create_app(api)) as client:
            spec = make_spec(epochs=40, batch_size=8, seed=None, early_stopping={"patience": 100})
            job_id = submit(client, spec)

            def job() -> dict[str, Any]:
                return dict(client.get(f"/v1/jobs/{job_id}").json())

            checkpoint = f"kts/jobs/{job_id}/checkpoint.json"
            wait_for(
                "a checkpoint in the bucket",
                lambda: job()["progress"]["epoch"] >= 3 and checkpoint in s3.keys(bucket, "kts/"),
                folders,
            )
            with engine.connect() as conn:
                owner = conn.scalar(select(Job.lease_owner).where(Job.id == job_id)) or ""
            doomed, rescuer = ("a", "b") if owner.startswith("a@") else ("b", "a")
            assert owner.startswith(f"{doomed}@")
            stop(workers[doomed], signal.SIGKILL)  # mid-epoch, no chance to clean up
            wait_for("the job to finish", lambda: job()["status"] != "running", folders)
            done = job()
            assert done["status"] == "succeeded", done
            # the survivor took it over (a slow heartbeat under load may add an attempt)
            assert workers[rescuer].poll() is None and done["attempts"] >= 2
            assert done["resumed_from_epoch"] >= 2
            assert len(done["history"]["loss"]) == 40
            model = client.get(f"/v1/models/{done['model_id']}/artifact")
            assert model.status_code == 200
        assert f"kts/models/{done['model_id']}/model.keras" in s3.keys(bucket, "kts/")
        assert checkpoint not in s3.keys(bucket, "kts/")  # cleaned up after success
    finally:
        for proc in workers.values():
            stop(proc)
        engine.dispose()
    for folder in (*folders, tmp_path / "api"):
        nothing_local(folder)
