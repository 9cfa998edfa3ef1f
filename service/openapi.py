"""The OpenAPI document that generated clients can trust.

FastAPI's generated schema is post-processed once, at the app level (the routes stay as they
are): the real error body (`ErrorResponse`) on every 4xx/5xx an operation can answer (a
readiness route's 503 is its own body), the bearer key scheme on every route that takes a
tenant, a schema for each 2xx that FastAPI cannot infer (hand-built JSON, the SSE stream, file
downloads, typed list pages), and the examples of examples/*.json on the training-spec body.
A route's own response_model, or its own error model, always wins over what is added here.
"""

import copy
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, get_args

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from service.auth import TenantDep
from service.deps import SessionDep
from service.quotas import JOB_QUOTA, PREDICT_RATE

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
REF = "#/components/schemas/"
VALIDATION = REF + "HTTPValidationError"
_TENANT = get_args(TenantDep)[1].dependency
_SESSION = get_args(SessionDep)[1].dependency
_QUOTA = JOB_QUOTA.dependency
_PREDICT_RATE = PREDICT_RATE.dependency

# --- Response shapes that the routes build by hand --------------------------------------------


class ErrorDetail(BaseModel):
    loc: list[str | int] = Field(description="Path of the offending field in the request.")
    msg: str = Field(description="What was expected there.")


class ErrorBody(BaseModel):
    code: str = Field(description="Machine-readable: validation_error, not_found, conflict, ...")
    message: str = Field(description="For people; never echoes the request's values.")
    details: list[ErrorDetail] = Field(description="One per offending field; may be empty.")


class ErrorResponse(BaseModel):
    """Every error answer of the service."""

    error: ErrorBody


Outputs = list[float | None]  # a non-finite output is answered as null


class PredictionInterval(BaseModel):
    level: float = Field(description="The requested interval, e.g. 0.9.")
    lower: Outputs
    upper: Outputs


class McPrediction(BaseModel):
    """Monte-Carlo-Dropout statistics of one instance."""

    model_config = ConfigDict(populate_by_name=True)

    mean: Outputs
    std: Outputs
    class_: int | None = Field(None, alias="class", description="Classifiers: the argmax.")
    class_name: str | None = Field(
        None, description="Classifiers whose data set names its classes: class_names[class]."
    )
    predictive_entropy: float | None = Field(None, description="Classifiers only.")
    mutual_information: float | None = Field(None, description="Classifiers only.")
    interval: PredictionInterval | None = Field(None, description="Regression with interval.")
    samples: list[Outputs] | None = Field(None, description="With return_samples: the draws.")


class PredictResponse(BaseModel):
    predictions: list[Outputs | McPrediction] = Field(
        description="Per instance: the model's outputs (mc_samples 0), or MC statistics."
    )
    mc_samples: int
    model_id: str


JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class BatchProgress(BaseModel):
    rows_done: int
    rows: int


class BatchPrediction(BaseModel):
    """The batch-prediction object (its job has the same id, kind batch_predict)."""

    id: str
    model_id: str
    dataset_id: str
    status: JobStatus
    progress: BatchProgress
    mc_samples: int
    seed: int | None
    interval: float | None
    summary: dict[str, Any] | None = Field(description="Null until the job has succeeded.")
    error: dict[str, str] | None = Field(description="{code, message} of a failed job.")
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    plots: list[str] = Field(description="Plot names available now (GET .../plots/{name}).")


class BatchPredictionResults(BaseModel):
    predictions: list[dict[str, Any]] = Field(
        description="One record per data-set row: row, then prediction (plain) or mean, std "
        "and the uncertainty measures (Monte-Carlo)."
    )
    offset: int
    limit: int
    total: int = Field(description="Rows in all.")


class GradientFlag(BaseModel):
    code: str = Field(description="vanishing_gradients, exploding_gradients, engine_fallback")
    epoch: int | None = None
    ratio: float | None = Field(None, description="First to last dense layer's gradient norm.")
    message: str


class LayerHealth(BaseModel):
    name: str
    class_name: str
    activation: str | None
    gradient_norm: float | None
    gradient_finite: bool
    weight_norm: float | None
    activation_mean: float | None
    activation_std: float | None
    saturated_fraction: float | None = Field(description="Sigmoid and tanh layers, else null.")
    dead_fraction: float | None = Field(description="ReLU layers, else null.")


class DiagnosticsEpoch(BaseModel):
    epoch: int
    layers: list[LayerHealth]
    flags: list[GradientFlag]


class Diagnostics(BaseModel):
    job_id: str
    status: JobStatus
    flags: list[GradientFlag] = Field(description="The job's warnings.")
    epochs: list[DiagnosticsEpoch]


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, str] = Field(description='database, broker, artifacts: "ok" or why not.')


SHAPES: tuple[type[BaseModel], ...] = (
    ErrorResponse,
    PredictResponse,
    BatchPrediction,
    BatchPredictionResults,
    Diagnostics,
    Health,
    Readiness,
)

# --- What each operation answers --------------------------------------------------------------


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF + name}


def _json(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(name)}}


_BINARY = {"schema": {"type": "string", "format": "binary"}}
_ATTACHMENT = {
    "Content-Disposition": {
        "description": "attachment; filename=... (set on file downloads)",
        "schema": {"type": "string"},
    }
}
_EVENTS = (
    "Server-Sent Events (text/event-stream): one `progress` event per epoch run, data "
    '`{"job_id", "epoch", "epochs", "status", "metrics"}`; then one `done` event whose data is '
    "the job object, and the stream closes. A stream opened late replays the epochs already "
    "run; a `: keep-alive` comment comes about every 15 s."
)
SUCCESS: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {
    ("get", "/healthz"): ("The process answers.", _json("Health")),
    ("get", "/readyz"): ("Every check is ok.", _json("Readiness")),
    ("get", "/v1/jobs/{job_id}/diagnostics"): ("Gradient health.", _json("Diagnostics")),
    ("get", "/v1/jobs/{job_id}/events"): (
        _EVENTS,
        {"text/event-stream": {"schema": {"type": "string"}}},
    ),
    ("get", "/v1/jobs/{job_id}/tensorboard"): (
        "The job's TensorBoard event files, a gzipped tar with one folder named after the job.",
        {"application/gzip": _BINARY},
    ),
    ("get", "/v1/models/{model_id}/artifact"): (
        "The model file: a .keras or SavedModel zip (application/zip) or a TFLite flatbuffer "
        "(application/octet-stream).",
        {"application/zip": _BINARY, "application/octet-stream": _BINARY},
    ),
    ("post", "/v1/models/{model_id}/predict"): ("The predictions.", _json("PredictResponse")),
    ("post", "/v1/models/{model_id}/batch-predictions"): ("Queued.", _json("BatchPrediction")),
    ("get", "/v1/batch-predictions/{batch_id}"): (
        "The batch prediction.",
        _json("BatchPrediction"),
    ),
    ("post", "/v1/batch-predictions/{batch_id}/cancel"): (
        "Cancelled, or asked to stop.",
        _json("BatchPrediction"),
    ),
    ("get", "/v1/batch-predictions/{batch_id}/results"): (
        "format=json: one page of records; csv: the CSV file; parquet: the Parquet file.",
        {
            **_json("BatchPredictionResults"),
            "text/csv": {"schema": {"type": "string"}},
            "application/octet-stream": _BINARY,
        },
    ),
}
FILES = {
    "/v1/models/{model_id}/artifact",
    "/v1/batch-predictions/{batch_id}/results",
    "/v1/jobs/{job_id}/tensorboard",
}

ERRORS: dict[str, tuple[str, tuple[str, str] | None]] = {
    "400": ("The body is not valid JSON (`invalid_json`); the message says where.", None),
    "401": (
        "An API key is required and missing, unknown or revoked (`unauthorized`).",
        ("WWW-Authenticate", "`Bearer`: send an API key."),
    ),
    "404": ("No such id for this tenant (`not_found`).", None),
    "409": (
        "Conflicts with the current state (`conflict`): it has ended, is in use or not ready, "
        "or an Idempotency-Key was reused with another body.",
        None,
    ),
    "413": (
        "The upload is too large (`payload_too_large`), or would pass the tenant's storage "
        "quota (`quota_exceeded`).",
        None,
    ),
    "422": (
        "A field is unknown, missing or out of bounds, or the request cannot be served as asked "
        "(`validation_error`; `invalid_body` for JSON that is not an object). "
        "`details[].loc` names each offending field.",
        None,
    ),
    "429": (
        "A per-tenant quota is reached (`quota_exceeded`): queued or running jobs, or "
        "predict requests per second.",
        ("Retry-After", "Seconds to wait before retrying."),
    ),
    "503": (
        "The database is unavailable (`unavailable`); retry, nothing was lost.",
        ("Retry-After", "Seconds to wait before retrying (5)."),
    ),
}
TOO_LARGE = {("post", "/v1/datasets")}
BEARER = {
    "type": "http",
    "scheme": "bearer",
    "description": "An API key (`kts keys create --tenant NAME`) as `Authorization: Bearer <key>`. "
    "When the service runs with keys off, it is not checked and every request is tenant default.",
}
METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}


def _dependency_calls(dependant: Any) -> set[Any]:
    calls: set[Any] = set()
    for dep in dependant.dependencies:
        calls |= {dep.call} | _dependency_calls(dep)
    return calls


def _conflicts(method: str, path: str) -> bool:
    """Cancelling or deleting what has ended or is in use, results not ready, a reused key."""
    if method == "delete":
        return path.count("{") == 1  # a resource, not one of its aliases
    return path.endswith(("/cancel", "/results")) or (method, path) == ("post", "/v1/jobs")


def _error_statuses(method: str, path: str, op: dict[str, Any], calls: set[Any]) -> list[str]:
    content = op.get("requestBody", {}).get("content", {})
    answers = {
        "400": "application/json" in content,
        "401": _TENANT in calls,
        "404": "{" in path,
        "409": _conflicts(method, path),
        "413": (method, path) in TOO_LARGE,
        "422": bool(op.get("parameters")) or "requestBody" in op,
        "429": bool(calls & {_QUOTA, _PREDICT_RATE}),
        "503": bool(calls & {_TENANT, _SESSION}),  # the key lookup reads the database too
    }
    return [status for status, answered in answers.items() if answered]


def _error_response(status: str, description: str | None = None) -> dict[str, Any]:
    text, header = ERRORS.get(status, ("An error.", None))
    response: dict[str, Any] = {
        "description": description or text,
        "content": _json("ErrorResponse"),
    }
    if header:
        response["headers"] = {header[0]: {"description": header[1], "schema": {"type": "string"}}}
    return response


def _success(op: dict[str, Any]) -> dict[str, Any]:
    """The operation's 2xx response ({} when it has none)."""
    return next((r for s, r in op.get("responses", {}).items() if s.startswith("2")), {})


def _json_schema(response: dict[str, Any]) -> dict[str, Any]:
    return response.get("content", {}).get("application/json", {}).get("schema", {})  # type: ignore[no-any-return]


def _finish_success(method: str, path: str, op: dict[str, Any]) -> None:
    """A schema for a 2xx that FastAPI could not infer (a route's own response_model wins)."""
    response = _success(op)
    if (method, path) not in SUCCESS or not response or "$ref" in _json_schema(response):
        return
    response["description"], content = SUCCESS[(method, path)]
    response["content"] = copy.deepcopy(content)
    if path in FILES:
        response["headers"] = copy.deepcopy(_ATTACHMENT)


def _readiness(path: str, op: dict[str, Any], calls: set[Any]) -> None:
    """A readiness route (its path ends in /ready or /readyz) answers 503 with its own body when
    not ready, and the error body when the database it reads is down."""
    own = _json_schema(_success(op))
    if not path.endswith(("/ready", "/readyz")) or not own:
        return
    declared = op["responses"].get("503", {})  # the route's own words, if it gave them
    text = declared["description"] if _json_schema(declared) == own else "Not ready (see why)."
    schema = own
    if calls & {_TENANT, _SESSION}:
        text += " The error body when the database is unavailable."
        schema = {"anyOf": [own, _ref("ErrorResponse")]}
    op["responses"]["503"] = {
        "description": text,
        "content": {"application/json": {"schema": schema}},
    }


def _finish_operation(method: str, path: str, op: dict[str, Any], dependant: Any) -> None:
    calls = _dependency_calls(dependant) if dependant is not None else set()
    _finish_success(method, path, op)
    responses: dict[str, Any] = op.setdefault("responses", {})
    for status, response in list(responses.items()):
        # FastAPI's own 422 names HTTPValidationError; a route's own error model stays
        if status[0] in "45" and _json_schema(response).get("$ref") in (None, VALIDATION):
            keep = response.get("description") if status not in ERRORS else None
            responses[status] = _error_response(status, keep)
    for status in _error_statuses(method, path, op, calls):
        responses.setdefault(status, _error_response(status))
    _readiness(path, op, calls)
    if _TENANT in calls:
        op["security"] = [{"bearerAuth": []}]
    op["responses"] = dict(sorted(op["responses"].items()))


def _item_ref(paths: dict[str, Any], path: str) -> str | None:
    """The schema of GET {path}/{id}: the item of the list at GET {path}."""
    one = re.compile(re.escape(path) + r"/\{[^/{}]+\}")
    for child, item in paths.items():
        if one.fullmatch(child) and "get" in item:
            ref = _json_schema(_success(item["get"])).get("$ref")
            return ref if isinstance(ref, str) else None
    return None


def _typed_pages(doc: dict[str, Any]) -> None:
    """List routes answer {items, next_cursor}: name the type of their items."""
    paths, schemas = doc["paths"], doc["components"]["schemas"]
    for path, item in paths.items():
        op = item.get("get")
        names = {p.get("name") for p in (op or {}).get("parameters", [])}
        if op is None or "{" in path or not {"limit", "cursor"} <= names:
            continue
        ref = _item_ref(paths, path)
        if ref is None or _json_schema(_success(op)).get("$ref") not in (None, REF + "Page"):
            continue
        name = ref.removeprefix(REF) + "Page"
        schemas.setdefault(name, _page_schema(name, ref))
        _success(op)["content"] = _json(name)


def _page_schema(name: str, item_ref: str) -> dict[str, Any]:
    cursor = "Pass it back as cursor for the next page; null on the last page."
    return {
        "type": "object",
        "title": name,
        "properties": {
            "items": {"type": "array", "items": {"$ref": item_ref}, "title": "Items"},
            "next_cursor": {"anyOf": [{"type": "string"}, {"type": "null"}], "description": cursor},
        },
        "required": ["items", "next_cursor"],
    }


def _summary(stem: str, readme: str) -> str:
    """The README's table row or bullet for examples/{stem}.json, else the stem in words."""
    row = re.compile(rf"^\s*(?:[-*]|\|)\s*`{re.escape(stem)}\.json`\s*[|:—–-]?\s*(.+?)[\s|]*$")
    for line in readme.splitlines():
        if found := row.match(line):
            return found.group(1)
    return stem.replace("_", " ").capitalize()


def load_examples(folder: Path = EXAMPLES_DIR) -> dict[str, dict[str, Any]]:
    """OpenAPI examples from the folder's *.json specs, named by file stem ({} without it)."""
    readme = folder / "README.md"
    text = readme.read_text() if readme.is_file() else ""
    return {
        path.stem: {
            "summary": _summary(path.stem, text),
            "description": f"examples/{path.name}",
            "value": json.loads(path.read_text()),
        }
        for path in sorted(folder.glob("*.json"))
    }


def _add_examples(doc: dict[str, Any], examples: dict[str, Any]) -> None:
    for item in doc["paths"].values():
        for method, op in item.items():
            media = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            if method in METHODS and media.get("schema", {}).get("$ref") == REF + "TrainingSpec":
                media["examples"] = copy.deepcopy(examples)


def _add_shapes(schemas: dict[str, Any]) -> None:
    _, top = models_json_schema([(m, "validation") for m in SHAPES], ref_template=REF + "{model}")
    for name, schema in top.get("$defs", {}).items():
        schemas.setdefault(name, schema)  # a route's own model of that name wins


def _drop_unused(doc: dict[str, Any]) -> None:
    """FastAPI's validation-error schemas (every 4xx now names ErrorResponse), and the untyped
    Page once every list route has its typed page."""
    schemas = doc["components"]["schemas"]
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    if f'"{REF}Page"' not in json.dumps(doc):
        schemas.pop("Page", None)


def _dependants(app: FastAPI) -> dict[tuple[str, str], Any]:
    """(method, path) -> the dependency tree of every API route, included routers' too."""
    try:  # FastAPI >= 0.16x includes routers lazily: walk their effective routes
        from fastapi.routing import iter_route_contexts

        routes: Any = iter_route_contexts(app.routes)
    except ImportError:
        routes = app.routes
    return {
        (method.lower(), route.path_format): route.dependant
        for route in routes
        if isinstance(getattr(route, "original_route", route), APIRoute)
        for method in route.methods or ()
    }


def finish(doc: dict[str, Any], app: FastAPI) -> dict[str, Any]:
    """FastAPI's generated document, post-processed (see the module's docstring)."""
    components = doc.setdefault("components", {})
    _add_shapes(components.setdefault("schemas", {}))
    components.setdefault("securitySchemes", {})["bearerAuth"] = BEARER
    dependants = _dependants(app)
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                _finish_operation(method, path, op, dependants.get((method, path)))
    _typed_pages(doc)
    _add_examples(doc, load_examples())
    _drop_unused(doc)
    return doc


def install_openapi(app: FastAPI) -> None:
    """Serve the post-processed document at /openapi.json; built on first use, then cached."""
    generate = app.openapi
    built: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        raw = generate()  # FastAPI's cache: the same object until the routes change
        if not built or raw is not built[-1]:
            built[:] = [finish(copy.deepcopy(raw), app)]
            app.openapi_schema = built[-1]  # so generate() hands back the finished one
        return built[-1]

    app.openapi = openapi  # type: ignore[method-assign]
