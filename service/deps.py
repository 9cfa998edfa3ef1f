"""Dependencies declared once as Annotated aliases."""

from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from celery import Celery
from fastapi import Depends, Request
from sqlalchemy.orm import Session

from service.settings import Settings
from service.storage import ArtifactStore

# These dependencies are `async def`: FastAPI runs a plain `def` dependency in a worker thread,
# and each such hop costs about 0.3 ms of CPU (a sync generator costs two), more than the work
# most of them do. Only the database work itself goes to a thread.


async def _session(request: Request) -> AsyncIterator[Session]:
    session = request.app.state.session_factory()  # no I/O until the first query
    try:
        yield session
    finally:
        if session.in_transaction():  # a rollback on the wire: off the event loop
            await anyio.to_thread.run_sync(session.close)
        else:  # committed or unused: closing does no I/O
            session.close()


async def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def _store(request: Request) -> ArtifactStore:
    return request.app.state.store  # type: ignore[no-any-return]


async def _celery(request: Request) -> Celery:
    return request.app.state.celery  # type: ignore[no-any-return]


SessionDep = Annotated[Session, Depends(_session)]
SettingsDep = Annotated[Settings, Depends(_settings)]
StoreDep = Annotated[ArtifactStore, Depends(_store)]
CeleryDep = Annotated[Celery, Depends(_celery)]
