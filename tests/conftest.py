"""Shared fixtures: real SQLite and PostgreSQL databases (fresh per test), real brokers."""

import copy
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, make_url, text

from inference.runtime import choose_backend
from service.app import create_app
from service.auth import create_key
from service.db import make_engine, make_session_factory, upgrade_database
from service.settings import Settings
from service.storage import LocalStore
from worker.context import WorkerContext

# The suite runs on the service's default backend (JAX where installed; KTS_BACKEND=tensorflow
# runs it on the other), fixed before any test module imports Keras. Subprocesses inherit it.
BACKEND = choose_backend()
os.environ["KTS_BACKEND"] = BACKEND

PG_ADMIN_URL = os.environ.get(
    "KTS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _redis_url_of_this_process() -> str:
    """Redis database 15 (or KTS_TEST_REDIS_URL's), one lower per pytest-xdist worker: tests
    running side by side never see each other's queues."""
    url = urlsplit(os.environ.get("KTS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # gw0, gw1, ...
    db = int(url.path.strip("/") or 15) - int(worker.removeprefix("gw") or 0)
    return url._replace(path=f"/{db % 16}").geturl()


REDIS_URL = _redis_url_of_this_process()


# --- Gating of the `postgres`-marked tests (they need PostgreSQL and Redis) -------------------


def _servers() -> list[tuple[str, str, int]]:
    pg = make_url(PG_ADMIN_URL)
    redis = urlsplit(REDIS_URL)
    return [
        ("PostgreSQL", pg.host or "127.0.0.1", pg.port or 5432),
        ("Redis", redis.hostname or "127.0.0.1", redis.port or 6379),
    ]


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _missing_servers() -> str | None:
    """One line naming the servers that do not answer, or None when all do."""
    down = [
        f"{name} on {host}:{port}" for name, host, port in _servers() if not _reachable(host, port)
    ]
    if not down:
        return None
    them = "them" if len(down) > 1 else "it"
    return f"{' and '.join(down)} not reachable: start {them} or run .ci/run"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


_SKIPPED_LINE = pytest.StashKey[str]()


# The longest files start first: pytest-xdist hands out whole files in collection order, and a
# long file handed out last would run alone at the end while the other processes sit idle.
LONGEST_FIRST = (
    "test_chaos.py",
    "test_schemathesis.py",
    "test_readme_walkthrough.py",
    "test_object_storage.py",
    "test_ui_browser.py",
    "test_end_to_end.py",
)


def _start_rank(item: pytest.Item) -> int:
    name = item.path.name
    return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first (stable otherwise); a test that takes a fresh PostgreSQL
    database is a `postgres` test, marked or not."""
    items.sort(key=_start_rank)
    for item in items:
        if "pg_url" in getattr(item, "fixturenames", ()) and not item.get_closest_marker(
            "postgres"
        ):
            item.add_marker(pytest.mark.postgres)


@pytest.hookimpl(trylast=True)  # after `-m`/`-k` deselection: only selected tests count
def pytest_collection_finish(session: pytest.Session) -> None:
    """Skip the `postgres` tests when their servers are down; under CI=true, fail instead."""
    needing = [item for item in session.items if item.get_closest_marker("postgres")]
    if not needing:
        return
    missing = _missing_servers()  # checked once per session
    if missing is None:
        return
    tests = f"{len(needing)} postgres test{'' if len(needing) == 1 else 's'}"
    if _in_ci():
        pytest.exit(f"CI=true and {tests} selected, but {missing}", returncode=1)
    skip = pytest.mark.skip(reason=missing)
    for item in needing:
        item.add_marker(skip)
    session.config.stash[_SKIPPED_LINE] = f"{tests} skipped: {missing}"


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    line = config.stash.get(_SKIPPED_LINE, None)
    if line:
        terminalreporter.write_line(line, yellow=True)


BASE_SPEC: dict[str, Any] = {
    "name": "digits-mlp",
    "dataset": {"builtin": "digits"},
    "epochs": 3,
    "seed": 7,
    "model": {
        "layers": [
            {"type": "dense", "units": 32, "activation": "elu", "kernel_initializer": "he_normal"},
            {"type": "batch_normalization"},
            {"type": "dropout", "rate": 0.2},
            {"type": "dense", "units": 10, "activation": "softmax"},
        ]
    },
}


def make_spec(**overrides: Any) -> dict[str, Any]:
    """A small valid spec (digits MLP); top-level keys in `overrides` replace the base's."""
    spec = copy.deepcopy(BASE_SPEC)
    spec.update(copy.deepcopy(overrides))
    return spec


def sqlite_settings(root: Path, **extra: Any) -> Settings:
    return Settings(data_dir=root, **{"require_auth": False, **extra})


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = sqlite_settings(tmp_path / "data")
    upgrade_database(s.resolved_database_url())
    return s


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def ctx(settings: Settings) -> WorkerContext:
    """The worker's context on the same database and artifact folder as `client`."""
    engine = make_engine(settings.resolved_database_url())
    return WorkerContext(
        settings, make_session_factory(engine), LocalStore(settings.resolved_artifact_dir())
    )


def submit(client: TestClient, spec: dict[str, Any]) -> str:
    r = client.post("/v1/jobs", json=spec)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    name = f"kts_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture
def secured(settings: Settings) -> Iterator[tuple[TestClient, dict[str, str], dict[str, str]]]:
    """A client with keys required, and the headers of tenants alice and bob."""
    app = create_app(settings.model_copy(update={"require_auth": True}))
    with app.state.session_factory() as session:
        alice, bob = create_key(session, "alice"), create_key(session, "bob")
        session.commit()
    with TestClient(app) as client:
        yield client, {"Authorization": f"Bearer {alice}"}, {"Authorization": f"Bearer {bob}"}
