"""The migrations build exactly the schema the ORM rows describe, on SQLite and PostgreSQL."""

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

import service.rows  # noqa: F401  (registers every table on Base.metadata)
from service.db import Base, make_engine, migrations_dir, upgrade_database


def _upgrade_and_compare(url: str) -> list[object]:
    """Upgrade a fresh database to head; what autogenerate would still add or drop."""
    upgrade_database(url)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            tables = set(inspect(conn).get_table_names())
    finally:
        engine.dispose()
    assert set(Base.metadata.tables) | {"alembic_version"} == tables
    return list(diff)


def test_one_head() -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    heads = ScriptDirectory.from_config(cfg).get_heads()
    assert len(heads) == 1, f"Expected one migration head. Received: heads={heads}"


def test_sqlite_at_head_matches_the_models(tmp_path: Path) -> None:
    assert _upgrade_and_compare(f"sqlite:///{tmp_path / 'fresh.sqlite'}") == []


@pytest.mark.postgres
def test_postgres_at_head_matches_the_models(pg_url: str) -> None:
    assert _upgrade_and_compare(pg_url) == []


def _alembic(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    return cfg


def _job_row(tenant: str, key: str, n: int) -> dict[str, object]:
    return {
        "id": f"{n:032x}", "tenant": tenant, "name": "j", "kind": "train", "status": "queued",
        "spec": "{}", "spec_version": 2, "key": key, "epoch": 0, "epochs": 1, "history": "{}",
        "metrics": "{}", "attempts": 0, "warnings": "[]",
    }  # fmt: skip


def _idempotency_keys_move_to_tenant_and_key(url: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    from alembic import command

    cfg = _alembic(url)
    make_engine(url).dispose()
    command.upgrade(cfg, "0008")
    engine = make_engine(url)
    insert = text(
        "INSERT INTO jobs (id, tenant, name, kind, status, spec, spec_version, idempotency_key,"
        " epoch, epochs, history, metrics, attempts, cancel_requested, release_requested,"
        " warnings, created_at) VALUES (:id, :tenant, :name, :kind, :status, :spec,"
        " :spec_version, :key, :epoch, :epochs, :history, :metrics, :attempts, false, false,"
        " :warnings, CURRENT_TIMESTAMP)"
    )
    try:
        with engine.begin() as conn:
            conn.execute(insert, _job_row("team-a", "team-a:nightly", 1))
            conn.execute(insert, _job_row("team-b", "team-b:nightly", 2))
        command.upgrade(cfg, "head")
        with engine.begin() as conn:
            keys = conn.execute(text("SELECT tenant, idempotency_key FROM jobs ORDER BY id"))
            assert list(keys) == [("team-a", "nightly"), ("team-b", "nightly")]
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(insert, _job_row("team-a", "nightly", 3))  # unique per tenant
        command.downgrade(cfg, "0008")
        with engine.begin() as conn:
            keys = conn.execute(text("SELECT idempotency_key FROM jobs ORDER BY id"))
            assert [k for (k,) in keys] == ["team-a:nightly", "team-b:nightly"]
    finally:
        engine.dispose()


def test_sqlite_idempotency_keys_become_unique_per_tenant(tmp_path: Path) -> None:
    _idempotency_keys_move_to_tenant_and_key(f"sqlite:///{tmp_path / 'keys.sqlite'}")


@pytest.mark.postgres
def test_postgres_idempotency_keys_become_unique_per_tenant(pg_url: str) -> None:
    _idempotency_keys_move_to_tenant_and_key(pg_url)
