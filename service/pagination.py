"""Keyset pagination shared by every list route: newest first, an opaque cursor."""

import base64
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.errors import ErrorDetail, SpecInvalid


class Page(BaseModel):
    items: list[Any]
    next_cursor: str | None


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(str(seq).encode()).decode()


def decode_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        if not text.isdigit() or len(text) > 18:  # a row sequence fits a 64-bit integer
            raise ValueError(text)
        return int(text)
    except (ValueError, UnicodeDecodeError):
        raise SpecInvalid(
            [ErrorDetail(("cursor",), "Expected a cursor from a previous page.")]
        ) from None


def page(
    session: Session, model: Any, limit: int, cursor: str | None, *filters: Any
) -> tuple[list[Any], str | None]:
    """Newest first, keyset-paginated on the row sequence."""
    query = select(model).where(*filters).order_by(model.seq.desc()).limit(limit + 1)
    after = decode_cursor(cursor)
    if after is not None:
        query = query.where(model.seq < after)
    rows = list(session.scalars(query))
    next_cursor = encode_cursor(rows[limit - 1].seq) if len(rows) > limit else None
    return rows[:limit], next_cursor
