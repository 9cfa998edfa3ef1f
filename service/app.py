"""The FastAPI application factory."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from service import health
from service.batch_predictions import endpoints as batch_predictions
from service.datasets import endpoints as datasets
from service.db import make_engine, make_session_factory
from service.errors import install_error_handlers
from service.jobs import endpoints as jobs
from service.jobs import progress
from service.limits import BodyLimit
from service.logs import endpoints as logs
from service.logs.middleware import RequestIds, bind_path_ids
from service.metrics import endpoints as metrics
from service.models import endpoints as models
from service.openapi import install_openapi
from service.plots import endpoints as plots
from service.queue import make_celery
from service.serving import endpoints as serving
from service.settings import Settings, get_settings
from service.storage import open_store
from service.ui import endpoints as ui
from service.workers import endpoints as workers


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """What the app's start and shutdown do: stop the progress subscriber (made on first use)."""
    yield
    await progress.close_hub(app.state)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="Keras Training Service",
        version="1.0.0",
        description="Train Keras models from a validated JSON spec; predict with uncertainty.",
        dependencies=[Depends(bind_path_ids)],  # job and model ids of the path join log lines
        lifespan=lifespan,
    )
    engine = make_engine(settings.resolved_database_url())
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    app.state.store = open_store(settings)
    app.state.celery = make_celery(settings)
    app.state.require_auth = settings.require_auth is not False
    install_error_handlers(app)
    install_openapi(app)
    domains = (health, datasets, jobs, logs, models, batch_predictions, plots, workers, serving)
    for module in (*domains, metrics, ui):
        app.include_router(module.router)
    app.add_middleware(BodyLimit, settings=settings)
    app.add_middleware(RequestIds)  # outside BodyLimit: its 413 carries the id too
    metrics.install_metrics(app)  # last: its middleware is the outermost
    return app
