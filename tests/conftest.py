"""Shared fixtures: real SQLite and PostgreSQL databases (fresh per test), real brokers."""

import copy
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from service.app import create_app
from service.artifacts import ArtifactStore
from service.db import make_engine, make_session_factory, upgrade_database
from service.settings import Settings
from worker.context import WorkerContext

PG_ADMIN_URL = os.environ.get(
    "KTS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("KTS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

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
        settings, make_session_factory(engine), ArtifactStore(settings.resolved_artifact_dir())
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
