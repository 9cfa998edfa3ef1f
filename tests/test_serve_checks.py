"""`kts serve` refuses a database whose schema is behind the code, naming the command to run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.config import Config

from alembic import command
from service.db import migration_behind, migrations_dir, upgrade_database

KTS = str(Path(sys.executable).parent / "kts")


def _at(url: str, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", url)
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, revision)


@pytest.mark.postgres
def test_serve_refuses_a_database_behind_its_migrations(pg_url: str, tmp_path: Path) -> None:
    _at(pg_url, "0005")
    assert migration_behind(pg_url) is not None
    env = {
        **os.environ,
        "KTS_DATABASE_URL": pg_url,
        "KTS_BROKER_URL": "redis://127.0.0.1:6379/15",
        "KTS_DATA_DIR": str(tmp_path / "data"),
    }
    done = subprocess.run(
        [KTS, "serve", "--port", "1"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert "kts migrate" in done.stderr
    upgrade_database(pg_url)
    assert migration_behind(pg_url) is None
