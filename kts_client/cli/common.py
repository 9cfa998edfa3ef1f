"""What every user command shares: the global options, the client, and the output in tables
(rich) or JSON (`--json`)."""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from kts_client._ops import Page
from kts_client.client import Client
from kts_client.errors import ApiError, format_loc

stdout = Console()
stderr = Console(stderr=True)
if not stdout.is_terminal:  # piped: wide enough that ids are never cut or wrapped
    stdout = Console(width=200)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON objects, not tables.")]
LimitOpt = Annotated[int | None, typer.Option("--limit", min=1, max=200, help="Page size.")]
CursorOpt = Annotated[str | None, typer.Option("--cursor", help="next_cursor of a page.")]


@dataclass(frozen=True)
class State:
    """The global options: where the service is, the key, and JSON output."""

    url: str | None
    api_key: str | None
    json: bool


def state(ctx: typer.Context) -> State:
    """The global options (the root callback stores them)."""
    found = ctx.find_object(State)
    return found if found is not None else State(None, None, False)


def client(ctx: typer.Context) -> Client:
    """A client for --url / --api-key (or KTS_URL / KTS_API_KEY)."""
    s = state(ctx)
    return Client(s.url, s.api_key)


def wants_json(ctx: typer.Context, flag: bool) -> bool:
    """--json given before the command or after it."""
    return flag or state(ctx).json


def plain(value: Any) -> Any:
    """A pydantic model, a page or a list as JSON-ready data."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Page):
        return {"items": [plain(i) for i in value.items], "next_cursor": value.next_cursor}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def print_json(value: Any) -> None:
    """One JSON document on stdout, for scripts."""
    print(json.dumps(plain(value), indent=2, default=str), flush=True)


def print_api_error(exc: ApiError) -> None:
    """The error code, message and each field path, on stderr."""
    stderr.print(f"error: {exc.code} ({exc.status}): {exc.message}", markup=False, soft_wrap=True)
    for loc, msg in exc.details:
        stderr.print(f"  at {format_loc(loc)}: {msg}", markup=False, soft_wrap=True)


def when(value: datetime | None) -> str:
    """A timestamp to the second, or a dash."""
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def number(value: Any) -> str:
    """A metric as 4 significant digits, or a dash."""
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
    """Print rows as a rich table."""
    out = Table(*columns, title=title, show_lines=False)
    for row in rows:
        out.add_row(*(str(c) for c in row))
    stdout.print(out)


def fields(pairs: Sequence[tuple[str, Any]], title: str | None = None) -> None:
    """Print name/value pairs as a two-column table."""
    out = Table("field", "value", title=title, show_header=False)
    for name, value in pairs:
        out.add_row(name, value if isinstance(value, str) else json.dumps(value, default=str))
    stdout.print(out)


def next_page(page: Page[Any]) -> None:
    """Say how to get the next page, if there is one."""
    if page.next_cursor:
        stderr.print(f"more: --cursor {page.next_cursor}", markup=False)
