"""The FastAPI application factory."""

from fastapi import FastAPI

from service import health
from service.artifacts import ArtifactStore
from service.batch_predictions import endpoints as batch_predictions
from service.datasets import endpoints as datasets
from service.db import make_engine, make_session_factory
from service.errors import install_error_handlers
from service.jobs import endpoints as jobs
from service.limits import BodyLimit
from service.models import endpoints as models
from service.openapi import install_openapi
from service.queue import make_celery
from service.serving import endpoints as serving
from service.settings import Settings, get_settings
from service.workers import endpoints as workers


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="Keras Training Service",
        version="1.0.0",
        description="Train Keras models from a validated JSON spec; predict with uncertainty.",
    )
    engine = make_engine(settings.resolved_database_url())
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    app.state.store = ArtifactStore(settings.resolved_artifact_dir())
    app.state.celery = make_celery(settings)
    app.state.require_auth = settings.require_auth is not False
    install_error_handlers(app)
    install_openapi(app)
    for module in (health, datasets, jobs, models, batch_predictions, workers, serving):
        app.include_router(module.router)
    app.add_middleware(BodyLimit, settings=settings)
    return app
