"""`kts jobs list|show|follow|cancel|diagnostics|logs|delete`."""

import json
import time
from typing import Annotated, Any, Literal

import typer

from kts_client.cli.common import (
    CursorOpt,
    JsonOpt,
    LimitOpt,
    client,
    fields,
    next_page,
    number,
    print_json,
    stdout,
    table,
    wants_json,
    when,
)
from kts_client.cli.train import follow_job, metrics_text
from kts_client.client import Client
from service.jobs.schemas import JobRead
from service.logs.service import as_text

app = typer.Typer(help="Training, optimize and batch-prediction jobs.", no_args_is_help=True)
Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]


@app.command("list")
def list_jobs(
    ctx: typer.Context,
    status: Annotated[Status | None, typer.Option("--status", help="Only this status.")] = None,
    limit: LimitOpt = None,
    cursor: CursorOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Jobs, newest first."""
    with client(ctx) as kts:
        page = kts.list_jobs(status=status, limit=limit, cursor=cursor)
    if wants_json(ctx, json_out):
        print_json(page)
        return
    rows = [
        (
            j.id,
            j.name,
            j.kind,
            j.status,
            f"{j.progress.epoch}/{j.progress.epochs}",
            j.model_id or "-",
            when(j.created_at),
        )
        for j in page.items
    ]
    table(["id", "name", "kind", "status", "epoch", "model", "created"], rows)
    next_page(page)


def show_job(job: JobRead) -> None:
    """A job's main fields as a table."""
    error = f"{job.error.get('code')}: {job.error.get('message')}" if job.error else "-"
    fields(
        [
            ("id", job.id),
            ("name", job.name),
            ("kind", job.kind),
            ("status", job.status),
            ("progress", f"{job.progress.epoch}/{job.progress.epochs}"),
            ("model", job.model_id or "-"),
            ("error", error),
            ("metrics", metrics_text(job.metrics) or "-"),
            ("engine", job.engine or "-"),
            ("attempts", str(job.attempts)),
            ("created", when(job.created_at)),
            ("started", when(job.started_at)),
            ("finished", when(job.finished_at)),
            ("warnings", ", ".join(w.get("code", "?") for w in job.warnings) or "-"),
        ]
    )


@app.command("show")
def show(ctx: typer.Context, job_id: str, json_out: JsonOpt = False) -> None:
    """One job."""
    with client(ctx) as kts:
        job = kts.get_job(job_id)
    if wants_json(ctx, json_out):
        print_json(job)
    else:
        show_job(job)


@app.command("follow")
def follow(ctx: typer.Context, job_id: str, json_out: JsonOpt = False) -> None:
    """Show a job's epochs live until it ends (exit 1 unless it succeeded)."""
    with client(ctx) as kts:
        job = follow_job(kts, job_id, wants_json(ctx, json_out))
    if job.status != "succeeded":
        raise typer.Exit(1)


@app.command("cancel")
def cancel(ctx: typer.Context, job_id: str, json_out: JsonOpt = False) -> None:
    """Ask a queued or running job to stop."""
    with client(ctx) as kts:
        job = kts.cancel(job_id)
    if wants_json(ctx, json_out):
        print_json(job)
    else:
        stdout.print(f"job {job.id} {job.status}", soft_wrap=True)


@app.command("delete")
def delete(ctx: typer.Context, job_id: str) -> None:
    """Delete an ended job."""
    with client(ctx) as kts:
        kts.delete_job(job_id)
    stdout.print(f"deleted job {job_id}", soft_wrap=True)


@app.command("diagnostics")
def diagnostics(
    ctx: typer.Context,
    job_id: str,
    epoch: Annotated[int | None, typer.Option("--epoch", help="Default: the last one.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Gradient health: the job's flags and one epoch's layers."""
    with client(ctx) as kts:
        found = kts.diagnostics(job_id)
    if wants_json(ctx, json_out):
        print_json(found)
        return
    for flag in found.get("flags", []):
        stdout.print(f"{flag.get('code')} (epoch {flag.get('epoch')}): {flag.get('message')}")
    epochs = found.get("epochs", [])
    chosen = [e for e in epochs if epoch is None or e["epoch"] == epoch][-1:]
    if not chosen:
        stdout.print("no diagnostics recorded" + (f" for epoch {epoch}" if epoch else ""))
        return
    _layers(chosen[0])


LAYER_KEYS = [
    "gradient_norm",
    "weight_norm",
    "activation_mean",
    "activation_std",
    "saturated_fraction",
    "dead_fraction",
]
LAYER_COLUMNS = ["layer", "class", "activation", "grad", "weight", "act mean", "act std"]
LAYER_COLUMNS += ["saturated", "dead"]


def _layers(record: dict[str, Any]) -> None:
    rows = [
        [x.get("name"), x.get("class_name"), x.get("activation") or "-"]
        + [number(x.get(k)) for k in LAYER_KEYS]
        for x in record.get("layers", [])
    ]
    table(LAYER_COLUMNS, rows, title=f"epoch {record['epoch']}")


LOG_PAGE = 1000  # the route's largest page


@app.command("logs")
def logs(
    ctx: typer.Context,
    job_id: str,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines until the job ends.")
    ] = False,
    level: Annotated[
        Literal["info", "warning", "error"] | None,
        typer.Option("--level", help="Only lines at this level or above."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """A job's own log: start, epochs, resume, hand-back and its end (with a traceback)."""
    with client(ctx) as kts:
        _print_logs(kts, job_id, follow, level, wants_json(ctx, json_out))


def _print_logs(kts: Client, job_id: str, follow: bool, level: str | None, as_json: bool) -> None:
    after = 0
    while True:
        page = kts.job_logs(job_id, after=after, limit=LOG_PAGE, level=level)
        for line in page.lines:
            if as_json:
                print(json.dumps(line.model_dump(mode="json")), flush=True)
        if page.lines and not as_json:
            print(as_text(page), end="", flush=True)
        after = page.next_after
        if len(page.lines) == LOG_PAGE:
            continue  # more written already
        if not follow or page.status in ("succeeded", "failed", "cancelled"):
            return
        time.sleep(1.0)
