"""What a worker process holds: settings, database engine and artifact store, made per process."""

import os
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from service.db import make_engine, make_session_factory
from service.settings import Settings, get_settings
from service.storage import ArtifactStore, open_store


@dataclass
class WorkerContext:
    settings: Settings
    session_factory: sessionmaker[Session]
    store: ArtifactStore
    celery: Any = None  # made on first use, to re-enqueue jobs


_contexts: dict[int, WorkerContext] = {}


def worker_context() -> WorkerContext:
    """One context per process: engines must not cross a fork."""
    pid = os.getpid()
    if pid not in _contexts:
        settings = get_settings()
        engine = make_engine(settings.resolved_database_url())
        _contexts[pid] = WorkerContext(settings, make_session_factory(engine), open_store(settings))
    return _contexts[pid]
