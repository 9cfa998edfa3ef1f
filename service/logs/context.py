"""The ids every log line carries (request, tenant, job, model), held per request or per job.

One mutable dict per scope, in a context variable: FastAPI runs sync dependencies and routes in
worker threads on a copy of the context, so a value set there (the tenant) would not be seen
afterwards if it were a variable of its own; an update of the shared dict is.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

FIELDS = ("request_id", "tenant", "job_id", "model_id")
_scope: ContextVar[dict[str, str] | None] = ContextVar("kts_log_scope", default=None)


def open_scope(**fields: str | None) -> object:
    """Start a scope (a request, a job run) holding `fields`; returns the token to close it."""
    return _scope.set({k: v for k, v in fields.items() if v})


def close_scope(token: object) -> None:
    _scope.reset(token)  # type: ignore[arg-type]


@contextmanager
def log_scope(**fields: str | None) -> Iterator[None]:
    """Log lines written inside carry `fields` and whatever `bind` adds meanwhile."""
    token = open_scope(**fields)
    try:
        yield
    finally:
        close_scope(token)


def bind(**fields: str | None) -> None:
    """Add ids to the current scope; outside any scope (a test, a script) it does nothing."""
    current = _scope.get()
    if current is not None:
        current.update({k: v for k, v in fields.items() if v})


def current() -> dict[str, str]:
    """The ids of the current scope, in FIELDS order."""
    scope = _scope.get() or {}
    return {k: scope[k] for k in FIELDS if k in scope}
