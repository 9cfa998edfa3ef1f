"""Typed errors built from the service's error JSON: `{"error": {"code", "message", "details"}}`."""

from typing import Any

import httpx

Loc = tuple[str | int, ...]


class ApiError(Exception):
    """An error answer of the service: its HTTP status, `error.code`, message and field paths."""

    def __init__(
        self, status: int, code: str, message: str, details: list[tuple[Loc, str]] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details: list[tuple[Loc, str]] = details or []

    def __str__(self) -> str:
        lines = [f"{self.status} {self.code}: {self.message}"]
        lines += [f"  at {format_loc(loc)}: {msg}" for loc, msg in self.details]
        return "\n".join(lines)


class Unauthorized(ApiError):
    """401: an API key is required and missing, unknown or revoked."""


class NotFound(ApiError):
    """404: an unknown id (or another tenant's), or an unknown URL."""


class Conflict(ApiError):
    """409: the resource's state forbids it (ended job, in-use model, reused idempotency key)."""


class PayloadTooLarge(ApiError):
    """413: an upload over the service's limits."""


class ValidationFailed(ApiError):
    """422 (and 400 for a body that is not JSON): `details` name the offending fields."""


class Unavailable(ApiError):
    """503: the database is unreachable; retry, nothing was lost."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: ValidationFailed,
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationFailed,
    503: Unavailable,
}


def format_loc(loc: Loc) -> str:
    """A field path as `model.layers[2].units` (`<body>` for the whole body)."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<body>"


def error_from(response: httpx.Response) -> ApiError:
    """The typed error of an error answer (its body read); a non-JSON body keeps its text."""
    cls = _BY_STATUS.get(response.status_code, ApiError)
    try:
        body: Any = response.json()
        error = body["error"]
        code, message = str(error["code"]), str(error["message"])
        details = [(tuple(d.get("loc") or ()), str(d.get("msg", ""))) for d in error["details"]]
    except (ValueError, KeyError, TypeError, AttributeError):
        text = response.text.strip()[:500] or response.reason_phrase
        return cls(response.status_code, f"http_{response.status_code}", text)
    return cls(response.status_code, code, message, details)


def raise_for_error(response: httpx.Response) -> None:
    """Raise the typed error when the answer is an error (status 400 and above)."""
    if response.status_code >= 400:
        raise error_from(response)
