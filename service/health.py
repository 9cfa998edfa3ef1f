"""Liveness and readiness."""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process answers (on the event loop: busy worker threads never delay it)."""
    return {"status": "ok"}


def _check_broker(state: Any) -> None:
    settings = state.settings
    if settings.is_embedded_broker():
        if not settings.broker_folder().is_dir():
            raise RuntimeError("broker folder missing")
        return
    with state.celery.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    """Database, broker and artifact store reachable: 200, else 503."""
    state = request.app.state
    checks: dict[str, str] = {}
    try:
        with state.session_factory() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    try:
        _check_broker(state)
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"unreachable: {type(exc).__name__}"
    checks["artifacts"] = "ok" if state.store.is_writable() else "not writable"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks}, 200 if ready else 503
    )
