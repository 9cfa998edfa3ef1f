"""Migrations agree with the ORM models (SQLite and PostgreSQL); artifact keys stay inside."""

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from service.db import Base, make_engine, upgrade_database
from service.storage import ArtifactKeyInvalid, LocalStore


def _diff(url: str) -> list[object]:
    upgrade_database(url)
    engine = make_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        tables = set(inspect(conn).get_table_names())
    engine.dispose()
    assert {"datasets", "jobs", "models", "alembic_version"} <= tables
    return diff


def test_migrations_match_models_on_sqlite(tmp_path: Path) -> None:
    assert _diff(f"sqlite:///{tmp_path / 'db.sqlite'}") == []


@pytest.mark.postgres
def test_migrations_match_models_on_postgres(pg_url: str) -> None:
    assert _diff(pg_url) == []


def test_artifact_keys_cannot_escape(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "root")
    store.put_bytes("models/abc/model.keras", b"data")
    assert store.read_bytes("models/abc/model.keras") == b"data"
    assert (tmp_path / "root" / "models" / "abc" / "model.keras").exists()
    for bad in (
        "../x",
        "models/../../x",
        "/etc/passwd",
        "a//b",
        "a/./b",
        "",
        "a\\b",
        "a/..",
        "~/x",
        "a/.hidden/../..",
    ):
        with pytest.raises(ArtifactKeyInvalid):
            store.path(bad)
    (tmp_path / "outside").write_text("secret")
    (tmp_path / "root" / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(ArtifactKeyInvalid):
        store.path("link")


def test_head_bytes_reads_only_the_start(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "root")
    store.put_bytes("datasets/d/X.npy", b"0123456789")
    assert store.head_bytes("datasets/d/X.npy", 4) == b"0123"
    assert store.head_bytes("datasets/d/X.npy", 100) == b"0123456789"
    with store.sized_reader("datasets/d/X.npy") as (body, size):
        assert size == 10 and body.read() == b"0123456789"
    with pytest.raises(FileNotFoundError):
        store.head_bytes("datasets/d/gone.npy", 4)
