"""Engine, sessions and migrations: the schema always comes from `alembic upgrade head`."""

import importlib.resources
from pathlib import Path

from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

# The migrations live in the top-level `alembic/` folder of the checkout; the wheel ships the same
# files as the `service.migrations` package (pyproject.toml maps one onto the other).
CHECKOUT_ALEMBIC_DIR = Path(__file__).resolve().parent.parent / "alembic"

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            # WAL lets the API read while a worker writes progress.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def migrations_dir() -> Path:
    """The folder of the Alembic scripts, in an installed wheel or in a checkout."""
    try:
        # A folder without __init__.py: a namespace package, whose files() is a MultiplexedPath;
        # joinpath of an existing file gives the real path.
        env = Path(str(importlib.resources.files("service.migrations").joinpath("env.py")))
    except ModuleNotFoundError:
        # An editable install: setuptools' editable finder cannot map a package folder that has
        # no __init__.py, so `service.migrations` is not importable there; read the checkout.
        env = CHECKOUT_ALEMBIC_DIR / "env.py"
    folder = env.parent
    if not all((folder / name).exists() for name in ("env.py", "script.py.mako", "versions")):
        raise RuntimeError(
            f"No migrations at {folder}: install the project (pip install -e . or its wheel)."
        )
    return folder


def upgrade_database(url: str) -> None:
    """Bring the database at `url` to the newest migration."""
    from alembic.config import Config

    from alembic import command

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    make_engine(url).dispose()  # creates the SQLite folder if needed
    command.upgrade(cfg, "head")


def migration_behind(url: str) -> str | None:
    """None when the database is at the newest migration, else what it is at (the API refuses
    to serve a schema older than its code)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(migrations_dir())).get_current_head()
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
    return None if current == head else f"{current or 'empty'} (newest: {head})"
