"""Resolved model rows kept for a moment per API process, so a prediction's lookup (an id or
NAME@ALIAS) costs no database round trip on every request. A moved alias or a deleted model is
seen by this process at once (its routes forget the rows) and by other processes within
ROW_SECONDS.
"""

import threading
import time
from typing import Any

from service.rows import TrainedModel

ROW_SECONDS = 2.0
MAX_ROWS = 10_000
_lock = threading.Lock()


def cached_row(state: Any, ref: str, tenant: str) -> TrainedModel:
    """The model `ref` names for this tenant (404 when none), from the cache when fresh."""
    from service.models.service import get_model

    rows: dict[tuple[str, str], tuple[TrainedModel, float]] = _rows(state)
    now = time.monotonic()
    hit = rows.get((tenant, ref))
    if hit is not None and hit[1] > now:
        return hit[0]
    with state.session_factory() as session:
        row = get_model(session, ref, tenant)
        session.expunge(row)  # read-only from here on, outside any session
    with _lock:
        if len(rows) >= MAX_ROWS:
            rows.clear()
        rows[(tenant, ref)] = (row, now + ROW_SECONDS)
    return row


def forget_rows(state: Any) -> None:
    with _lock:
        _rows(state).clear()


def _rows(state: Any) -> Any:
    if not hasattr(state, "model_rows"):
        state.model_rows = {}
    return state.model_rows
