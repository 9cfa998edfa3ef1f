"""Model routes: read, download and predict. Only predict loads Keras, lazily."""

from typing import Annotated, Literal

import anyio
import orjson
from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError

from service.auth import TenantDep
from service.deps import CeleryDep, SessionDep, SettingsDep, StoreDep
from service.errors import ErrorDetail, SpecInvalid
from service.jobs.schemas import JobRead
from service.models import registry
from service.models import service as models
from service.models.compression import CompressionRequest
from service.models.predictions import predict_limiter
from service.models.rows_cache import cached_row, forget_rows
from service.models.schemas import ModelRead, PredictOptions, PredictRequest, TagsUpdate
from service.pagination import Page, page
from service.queue import enqueue
from service.quotas import JOB_QUOTA, PREDICT_RATE
from service.rows import TrainedModel
from service.storage.responses import download

router = APIRouter(prefix="/v1/models", tags=["models"])
NPY = "application/x-npy"


@router.get("", response_model=Page)
def list_models(
    tenant: TenantDep,
    session: SessionDep,
    name: Annotated[str | None, Query(max_length=200)] = None,
    tag: Annotated[str | None, Query(max_length=300, description="KEY:VALUE")] = None,
    alias: Annotated[str | None, Query(max_length=64)] = None,
    job_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
) -> Page:
    """Models, newest first, filtered by name, tag, alias or job."""
    filters = registry.filters(tenant, name=name, tag=tag, alias=alias, job_id=job_id)
    rows, next_cursor = page(session, TrainedModel, limit, cursor, *filters)
    return Page(items=[ModelRead.of(r) for r in rows], next_cursor=next_cursor)


@router.put("/{model_id}/aliases/{alias}", response_model=ModelRead)
def set_alias(
    model_id: str, alias: str, tenant: TenantDep, session: SessionDep, request: Request
) -> ModelRead:
    """Point an alias of the model's name (e.g. champion) at this version."""
    row = registry.set_alias(session, models.get_model(session, model_id, tenant), alias)
    session.commit()
    forget_rows(request.app.state)
    return ModelRead.of(row)


@router.delete("/{model_id}/aliases/{alias}", status_code=204)
def delete_alias(
    model_id: str, alias: str, tenant: TenantDep, session: SessionDep, request: Request
) -> Response:
    """Remove an alias from this version."""
    registry.delete_alias(session, models.get_model(session, model_id, tenant), alias)
    session.commit()
    forget_rows(request.app.state)
    return Response(status_code=204)


@router.put("/{model_id}/tags", response_model=ModelRead)
def set_tags(model_id: str, body: TagsUpdate, tenant: TenantDep, session: SessionDep) -> ModelRead:
    """Replace the model's tags."""
    row = models.get_model(session, model_id, tenant)
    row.tags = dict(body.tags)
    session.commit()
    return ModelRead.of(row)


@router.delete("/{model_id}", status_code=204)
def delete_model(
    model_id: str, tenant: TenantDep, session: SessionDep, store: StoreDep, request: Request
) -> Response:
    """Delete a model and its files (409 while a derived model or a running job needs it)."""
    registry.delete_model(session, store, models.get_model(session, model_id, tenant))
    session.commit()
    forget_rows(request.app.state)
    return Response(status_code=204)


@router.get("/{model_id}", response_model=ModelRead)
def read_model(model_id: str, tenant: TenantDep, session: SessionDep) -> ModelRead:
    """One trained model: summary, metrics, lineage."""
    return ModelRead.of(models.get_model(session, model_id, tenant))


@router.get("/{model_id}/artifact")
def download_model(
    model_id: str,
    tenant: TenantDep,
    request: Request,
    session: SessionDep,
    store: StoreDep,
    format: Annotated[
        Literal["keras", "saved_model", "tflite"], Query(description="File format")
    ] = "keras",
    quantize: Annotated[
        Literal["float16", "int8"] | None, Query(description="tflite only: weight type")
    ] = None,
) -> Response:
    """The model as a .keras zip, a SavedModel .zip, or a TFLite flatbuffer."""
    row = models.get_model(session, model_id, tenant)
    if quantize is not None and format != "tflite":
        raise SpecInvalid([ErrorDetail(("quantize",), "Expected quantize with format=tflite.")])
    if format == "keras":
        return download(store, row.artifact_key, "application/zip", f"{model_id}.keras")
    from service.models.predictions import export_key  # loads Keras (TensorFlow) lazily

    key = export_key(request.app.state, row, format, quantize)
    if format == "saved_model":
        return download(store, key, "application/zip", f"{model_id}-saved_model.zip")
    return download(
        store,
        key,
        "application/octet-stream",
        f"{model_id}{'-' + quantize if quantize else ''}.tflite",
    )


@router.post(
    "/{model_id}/optimize", status_code=202, response_model=JobRead, dependencies=[JOB_QUOTA]
)
def optimize_model(
    model_id: str,
    tenant: TenantDep,
    body: CompressionRequest,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    celery: CeleryDep,
) -> JobRead:
    """Queue a job that derives a new model (folded, pruned or smaller weights)."""
    row = models.get_model(session, model_id, tenant)
    job = models.create_compression_job(session, store, row, body, tenant)
    session.commit()
    enqueue(celery, settings, "optimize", job.id, job.spec.get("resources"))
    return JobRead.of(job)


@router.post(
    "/{model_id}/predict",
    dependencies=[PREDICT_RATE],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": PredictRequest.model_json_schema(
                        ref_template="#/components/schemas/{model}"
                    )
                },
                NPY: {
                    "schema": {
                        "type": "string",
                        "format": "binary",
                        "description": "One .npy array of rows (numpy.save); the options "
                        "(mc_samples, seed, return_samples, interval) as query parameters.",
                    }
                },
            },
        }
    },
)
async def predict(
    model_id: str, tenant: TenantDep, request: Request, settings: SettingsDep
) -> Response:
    """Predictions, plain or with Monte-Carlo-Dropout uncertainty."""
    raw = await request.body()
    is_npy = request.headers.get("content-type", "").startswith(NPY)
    try:  # pydantic's JSON parser reads the bytes directly: no json.loads pass first
        if is_npy:
            options: PredictOptions = PredictOptions.model_validate(dict(request.query_params))
        else:
            options = PredictRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_input=False)) from None

    def run() -> bytes:  # one thread for the lookup and the work: each hop costs
        from service.models.predictions import from_npy, predict_rows, to_array

        row = cached_row(request.app.state, model_id, tenant)
        if is_npy:
            X = from_npy(raw, row.input_shape, settings.max_instances)
        else:
            X = to_array(options.instances, row.input_shape)  # type: ignore[attr-defined]
        models.check_predict(row, settings, options, len(X))
        predictions = predict_rows(request.app.state, row, X, options)  # loads Keras once
        content = {
            "predictions": predictions,
            "mc_samples": options.mc_samples,
            "model_id": model_id,
        }
        # orjson writes numpy arrays directly, and NaN (no JSON value) as null
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)

    limiter = predict_limiter(request.app.state)
    answer = await anyio.to_thread.run_sync(run, limiter=limiter)
    return Response(answer, media_type="application/json")
