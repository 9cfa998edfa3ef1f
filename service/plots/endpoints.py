"""Plot routes: a job's, a model's or a batch prediction's plot as PNG or SVG.

They are sync routes: a drawing runs in the server's thread pool, never on the event loop.
"""

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from service.auth import TenantDep
from service.deps import SessionDep, StoreDep
from service.plots import service as plots
from service.plots.schemas import IMAGE_RESPONSES, MEDIA, PlotFormat

router = APIRouter(tags=["plots"])

Name = Annotated[str, Path(description="The plot's name (see the object's `plots`).")]
Format = Annotated[PlotFormat, Query(description="png (the default) or svg")]


def _answer(data: bytes, fmt: str) -> Response:
    return Response(data, media_type=MEDIA[fmt])


@router.get("/v1/jobs/{job_id}/plots/{name}", response_class=Response, responses=IMAGE_RESPONSES)
def job_plot(
    job_id: str,
    name: Name,
    tenant: TenantDep,
    session: SessionDep,
    store: StoreDep,
    format: Format = "png",
) -> Response:
    """learning_curves, gradient_health or activation_saturation of a job."""
    request = plots.job_plot(session, job_id, tenant, name)
    return _answer(plots.image(store, request, format), format)


@router.get(
    "/v1/models/{model_id}/plots/{name}", response_class=Response, responses=IMAGE_RESPONSES
)
def model_plot(
    model_id: str,
    name: Name,
    tenant: TenantDep,
    session: SessionDep,
    store: StoreDep,
    format: Format = "png",
) -> Response:
    """The reliability plot of a model with an uncertainty block."""
    request = plots.model_plot(session, model_id, tenant, name)
    return _answer(plots.image(store, request, format), format)


@router.get(
    "/v1/batch-predictions/{batch_id}/plots/{name}",
    response_class=Response,
    responses=IMAGE_RESPONSES,
)
def batch_prediction_plot(
    batch_id: str,
    name: Name,
    tenant: TenantDep,
    session: SessionDep,
    store: StoreDep,
    format: Format = "png",
) -> Response:
    """entropy_histogram or uncertain_rows of a batch prediction that has succeeded."""
    request = plots.batch_plot(session, store, batch_id, tenant, name)
    return _answer(plots.image(store, request, format), format)
