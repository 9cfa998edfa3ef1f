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
