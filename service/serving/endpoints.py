"""TensorFlow Serving's REST predict route and the Open Inference Protocol v2 routes.

The bodies are read by pydantic's JSON parser in a worker thread, as /v1 predict reads its
own, and answered with orjson (numpy arrays written directly)."""

from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import orjson
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session

from service.auth import TenantDep
from service.deps import SessionDep
from service.models import service as models
from service.models.predictions import predict_limiter
from service.quotas import PREDICT_RATE
from service.serving import service as serving
from service.serving.schemas import (
    InferRequest,
    InferResponse,
    ModelMetadata,
    ModelReady,
    ServerLive,
    ServerReady,
    TFServingColumns,
    TFServingRequest,
    TFServingRows,
)

router = APIRouter(tags=["serving"])
M = TypeVar("M", bound=BaseModel)


def _inlined(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its $defs inlined: a raw-body route's request schema,
    which FastAPI does not add to the document's components."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(v) for v in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return walk({**defs[ref.removeprefix("#/$defs/")], **rest})
        return {k: walk(v) for k, v in node.items()}

    return walk(schema)  # type: ignore[no-any-return]


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    content = {"application/json": {"schema": _inlined(model)}}
    return {"requestBody": {"required": True, "content": content}}


def _parse(model: type[M], raw: bytes) -> M:
    try:  # pydantic's JSON parser reads the bytes directly: no json.loads pass first
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_input=False)) from None


async def _answer(request: Request, answer: Callable[[bytes], dict[str, Any]]) -> Response:
    """Read the body, then parse, look up and predict in a worker thread."""
    raw = await request.body()

    def run() -> bytes:
        # orjson writes numpy arrays directly, and NaN (no JSON value) as null
        return orjson.dumps(answer(raw), option=orjson.OPT_SERIALIZE_NUMPY)

    limiter = predict_limiter(request.app.state)
    body = await anyio.to_thread.run_sync(run, limiter=limiter)
    return Response(body, media_type="application/json")


@router.post(
    "/v1/models/{model_id}:predict",
    dependencies=[PREDICT_RATE],
    response_model=TFServingRows | TFServingColumns,
    summary="Predict (TensorFlow Serving REST API)",
    openapi_extra=_json_body(TFServingRequest),
)
async def tfserving_predict(model_id: str, tenant: TenantDep, request: Request) -> Response:
    """TensorFlow Serving's predict: row (`instances`) or columnar (`inputs`) format."""
    state = request.app.state

    def answer(raw: bytes) -> dict[str, Any]:
        body = _parse(TFServingRequest, raw)
        with state.session_factory() as session:
            row = models.get_model(session, model_id, tenant)
        return serving.tfserving_predict(state, row, body, state.settings)

    return await _answer(request, answer)


@router.get("/v2/health/live", response_model=ServerLive, summary="Server live (Open Inference v2)")
def server_live() -> ServerLive:
    """The process answers (no API key needed)."""
    return ServerLive(live=True)


@router.get(
    "/v2/health/ready",
    response_model=ServerReady,
    summary="Server ready (Open Inference v2)",
    responses={
        503: {
            "model": ServerReady,
            "description": "Not ready: the database or the artifact store cannot be reached.",
        }
    },
)
def server_ready(request: Request) -> Any:
    """Ready for inference: the database and the artifact store answer (no API key needed)."""
    ready = serving.server_ready(request.app.state)
    return JSONResponse({"ready": ready}, 200 if ready else 503)


def _ready(request: Request, session: Session, name: str, version: str | None, tenant: str) -> Any:
    row = serving.find_model(session, name, version, tenant)
    ready = serving.model_ready(request.app.state, row)
    return JSONResponse({"name": row.name, "ready": ready}, 200 if ready else 503)


@router.get(
    "/v2/models/{name}/ready", response_model=ModelReady, summary="Model ready (Open Inference v2)"
)
def model_ready(name: str, tenant: TenantDep, request: Request, session: SessionDep) -> Any:
    """The latest version of a name (or a model id) can serve: 200, else 503."""
    return _ready(request, session, name, None, tenant)


@router.get(
    "/v2/models/{name}/versions/{version}/ready",
    response_model=ModelReady,
    summary="Model version ready (Open Inference v2)",
)
def model_version_ready(
    name: str, version: str, tenant: TenantDep, request: Request, session: SessionDep
) -> Any:
    """That version of the name can serve: 200, else 503."""
    return _ready(request, session, name, version, tenant)


@router.get(
    "/v2/models/{name}", response_model=ModelMetadata, summary="Model metadata (Open Inference v2)"
)
def model_metadata(name: str, tenant: TenantDep, session: SessionDep) -> ModelMetadata:
    """Inputs and outputs of the latest version of a name (or of a model id)."""
    row = serving.find_model(session, name, None, tenant)
    return serving.metadata(row, serving.versions_of(session, row))


@router.get(
    "/v2/models/{name}/versions/{version}",
    response_model=ModelMetadata,
    summary="Model version metadata (Open Inference v2)",
)
def model_version_metadata(
    name: str, version: str, tenant: TenantDep, session: SessionDep
) -> ModelMetadata:
    """Inputs and outputs of one version of a name."""
    row = serving.find_model(session, name, version, tenant)
    return serving.metadata(row, serving.versions_of(session, row))


async def _infer(request: Request, name: str, version: str | None, tenant: str) -> Response:
    state = request.app.state

    def answer(raw: bytes) -> dict[str, Any]:
        body = _parse(InferRequest, raw)
        with state.session_factory() as session:
            row = serving.find_model(session, name, version, tenant)
        return serving.infer(state, row, body, state.settings)

    return await _answer(request, answer)


@router.post(
    "/v2/models/{name}/infer",
    dependencies=[PREDICT_RATE],
    response_model=InferResponse,
    summary="Infer (Open Inference v2)",
    openapi_extra=_json_body(InferRequest),
)
async def infer(name: str, tenant: TenantDep, request: Request) -> Response:
    """Inference on the latest version of a name (or a model id)."""
    return await _infer(request, name, None, tenant)


@router.post(
    "/v2/models/{name}/versions/{version}/infer",
    dependencies=[PREDICT_RATE],
    response_model=InferResponse,
    summary="Infer on a version (Open Inference v2)",
    openapi_extra=_json_body(InferRequest),
)
async def infer_version(name: str, version: str, tenant: TenantDep, request: Request) -> Response:
    """Inference on one version of a name."""
    return await _infer(request, name, version, tenant)
