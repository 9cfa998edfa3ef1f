"""Typed domain errors and the one place that turns them into the error JSON of API.md."""

import json
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.spec.suggest import closest, quoted, short, unknown_field

PARAMETER_PLACES = ("query", "header", "path", "cookie")
FASTAPI_BODY_ERROR = "There was an error parsing the body"
UNPARSEABLE = (
    "The request body is not valid JSON: nested too deeply, or a number with too many digits."
)


@dataclass(frozen=True)
class ErrorDetail:
    loc: tuple[str | int, ...]
    msg: str


class ApiError(Exception):
    status_code = 400
    code = "bad_request"
    retry_after: int | None = None  # seconds, sent as Retry-After

    def __init__(self, message: str, details: list[ErrorDetail] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class SpecInvalid(ApiError):
    status_code = 422
    code = "validation_error"

    def __init__(self, details: list[ErrorDetail], message: str | None = None) -> None:
        super().__init__(message or (details[0].msg if details else "Invalid request."), details)


class NotFound(ApiError):
    status_code = 404
    code = "not_found"


class Conflict(ApiError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(ApiError):
    status_code = 413
    code = "payload_too_large"


class Unavailable(ApiError):
    status_code = 503
    code = "unavailable"


class StorageFull(ApiError):
    """The artifact disk is full (or over its quota): nothing was stored."""

    status_code = 507
    code = "storage_full"


def error_body(code: str, message: str, details: list[ErrorDetail] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    return {
        "error": {
            "code": code,
            "message": message,
            "details": [{"loc": list(d.loc), "msg": d.msg} for d in details],
        }
    }


def _body_path(loc: tuple[Any, ...], body: Any, error_type: str) -> tuple[str | int, ...]:
    """Map a pydantic loc onto the request body, dropping union tags and validator names."""
    parts = list(loc)
    if parts and parts[0] in PARAMETER_PLACES:  # ["header", "idempotency-key"]: as given
        return tuple(parts)
    if parts and parts[0] == "body":
        parts = parts[1:]
    out: list[str | int] = []
    cur = body
    for i, part in enumerate(parts):
        if _is_tag(cur, parts, i):
            continue  # a union tag named like a field of the object: {"builtin": ..., "x": 1}
        if isinstance(cur, dict) and part in cur:
            out.append(part)
            cur = cur[part]
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            out.append(part)
            cur = cur[part]
        elif i == len(parts) - 1 and error_type == "missing":
            out.append(part)
        elif cur is body and body is None and isinstance(part, str | int):
            out.append(part)  # no parsed body (form fields, query): keep the path as given
    return tuple(out)


def _is_tag(cur: Any, parts: list[Any], i: int) -> bool:
    """parts[i] names a scalar field of `cur` while the next part is another field of it."""
    if not isinstance(cur, dict) or i + 1 >= len(parts) or parts[i] not in cur:
        return False
    return parts[i + 1] in cur and not isinstance(cur[parts[i]], dict | list)


def _value_at(body: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        try:
            body = body[part]
        except (KeyError, IndexError, TypeError):
            return None
    return body


def _message(
    err: dict[str, Any], path: tuple[str | int, ...], body: Any, root: type[BaseModel] | None
) -> str:
    """pydantic's message, with a hint where a close field or value exists. pydantic messages
    name the expectation, never the input value; a name or tag is repeated only cut short."""
    kind, ctx, msg = err["type"], err.get("ctx") or {}, str(err["msg"])
    if kind == "extra_forbidden" and err["loc"]:
        base = f"Unknown field '{short(str(err['loc'][-1]))}'"
        named = bool(path) and path[-1] == err["loc"][-1]  # the body path ends at the name
        hint = unknown_field(root, body, path) if root is not None and named else None
        return f"{base}; {hint}" if hint else f"{base}."
    if kind in ("literal_error", "enum"):
        value = err["input"] if "input" in err else _value_at(body, path)
        guess = (
            closest(value, quoted(str(ctx.get("expected", "")))) if isinstance(value, str) else None
        )
        return f"{msg}; did you mean '{guess}'?" if guess else msg
    if kind == "union_tag_invalid" and "expected_tags" in ctx:
        expected = str(ctx["expected_tags"])
        base = f"Expected {ctx.get('discriminator', 'type')} to be one of: {expected}"
        tag = ctx.get("tag")
        guess = closest(tag, quoted(expected)) if isinstance(tag, str) else None
        return f"{base}; did you mean '{guess}'?" if guess else f"{base}."
    return msg


def details_from_pydantic(
    errors: list[Any], body: Any, root: type[BaseModel] | None = None
) -> list[ErrorDetail]:
    """One detail per pydantic error, at its path in the body; `root` is the body's model
    class, walked to suggest the closest field name for an unknown one."""
    details = []
    for err in errors:
        path = _body_path(tuple(err["loc"]), body, err["type"])
        message = _message(err, path, body, root)
        # an unknown field's name is the input: a 100 KB name is not echoed back whole
        shown = tuple(short(p) if isinstance(p, str) and len(p) > 100 else p for p in path)
        details.append(ErrorDetail(shown, message))
    return details


def _body_model(request: Request) -> type[BaseModel] | None:
    """The model class of the matched route's JSON body, if it has one."""
    field = getattr(request.scope.get("route"), "body_field", None)
    model = getattr(getattr(field, "field_info", None), "annotation", None)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _json_position(raw: Any, errors: list[Any]) -> str:
    """Where the JSON breaks, as json.loads reports it (only run once parsing has failed)."""
    try:
        json.loads(raw)
    except json.JSONDecodeError as exc:
        return f": line {exc.lineno}, column {exc.colno}: {exc.msg}"
    except RecursionError:
        return ": it is nested too deeply"
    except (ValueError, TypeError):
        pass
    reasons = [e["ctx"]["error"] for e in errors if "error" in (e.get("ctx") or {})]
    return f": {short(str(reasons[0]))}" if reasons else ""


async def _invalid_json(request: Request, exc: RequestValidationError) -> JSONResponse:
    body = getattr(exc, "body", None)
    raw = body if isinstance(body, str | bytes) else await request.body()
    where = _json_position(raw, list(exc.errors()))
    return JSONResponse(
        error_body("invalid_json", f"The request body is not valid JSON{where}."), 400
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        if exc.retry_after is not None:
            headers = {"Retry-After": str(exc.retry_after)}
        return JSONResponse(
            error_body(exc.code, exc.message, exc.details), exc.status_code, headers=headers
        )

    @app.exception_handler(OperationalError)
    async def _database_down(_request: Request, _exc: OperationalError) -> JSONResponse:
        # PostgreSQL restarting, SQLite locked past its timeout: retry later, nothing is lost
        return JSONResponse(
            error_body("unavailable", "The database is unavailable; retry shortly."),
            503,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            return await _invalid_json(request, exc)
        body = getattr(exc, "body", None)
        if body is None and request.headers.get("content-type", "").startswith("application/json"):
            try:
                body = json.loads(await request.body())
            except (ValueError, RecursionError):
                body = None
        if isinstance(body, FormData):  # a multipart upload: its fields are the body's keys
            body = dict.fromkeys(body, True)
        if body is not None and not isinstance(body, dict):
            return JSONResponse(error_body("invalid_body", "Expected a JSON object."), 422)
        details = details_from_pydantic(errors, body, _body_model(request))
        message = details[0].msg if details else "Invalid request."
        return JSONResponse(error_body("validation_error", message, details), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == FASTAPI_BODY_ERROR:
            # FastAPI's own parse failed past a JSONDecodeError: nesting, a 5,000-digit number
            return JSONResponse(error_body("invalid_json", UNPARSEABLE), 400)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), exc.status_code)
