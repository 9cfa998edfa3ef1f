"""Dependencies declared once as Annotated aliases."""

from collections.abc import Iterator
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request
from sqlalchemy.orm import Session

from service.artifacts import ArtifactStore
from service.settings import Settings


def _session(request: Request) -> Iterator[Session]:
    with request.app.state.session_factory() as session:
        yield session


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _store(request: Request) -> ArtifactStore:
    return request.app.state.store  # type: ignore[no-any-return]


def _celery(request: Request) -> Celery:
    return request.app.state.celery  # type: ignore[no-any-return]


SessionDep = Annotated[Session, Depends(_session)]
SettingsDep = Annotated[Settings, Depends(_settings)]
StoreDep = Annotated[ArtifactStore, Depends(_store)]
CeleryDep = Annotated[Celery, Depends(_celery)]
