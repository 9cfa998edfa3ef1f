"""`kts datasets upload|list|show|delete`."""

from pathlib import Path
from typing import Annotated, Literal

import typer

from kts_client.cli.common import (
    CursorOpt,
    JsonOpt,
    LimitOpt,
    client,
    next_page,
    print_json,
    stdout,
    table,
    wants_json,
    when,
)
from service.datasets.schemas import DatasetRead

app = typer.Typer(help="Uploaded data sets.", no_args_is_help=True)
COLUMNS = ["id", "name", "rows", "input shape", "task", "classes", "created"]


def _row(d: DatasetRead) -> list[str]:
    classes = "-" if d.n_classes is None else str(d.n_classes)
    return [d.id, d.name, str(d.n_samples), str(d.input_shape), d.task, classes, when(d.created_at)]


@app.command("upload")
def upload(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help=".npz or .csv")],
    target: Annotated[str | None, typer.Option("--target", help="The CSV's label column.")] = None,
    name: Annotated[str | None, typer.Option("--name")] = None,
    task: Annotated[Literal["classification", "regression"] | None, typer.Option()] = None,
    json_out: JsonOpt = False,
) -> None:
    """Upload a .npz (arrays X and y) or a .csv (with --target)."""
    with client(ctx) as kts:
        dataset = kts.upload_dataset(file, target=target, name=name, task=task)
    if wants_json(ctx, json_out):
        print_json(dataset)
    else:
        table(COLUMNS, [_row(dataset)])


@app.command("list")
def list_datasets(
    ctx: typer.Context, limit: LimitOpt = None, cursor: CursorOpt = None, json_out: JsonOpt = False
) -> None:
    """Data sets, newest first."""
    with client(ctx) as kts:
        page = kts.list_datasets(limit=limit, cursor=cursor)
    if wants_json(ctx, json_out):
        print_json(page)
        return
    table(COLUMNS, [_row(d) for d in page.items])
    next_page(page)


@app.command("show")
def show(ctx: typer.Context, dataset_id: str, json_out: JsonOpt = False) -> None:
    """One data set."""
    with client(ctx) as kts:
        dataset = kts.get_dataset(dataset_id)
    if wants_json(ctx, json_out):
        print_json(dataset)
    else:
        table(COLUMNS, [_row(dataset)])


@app.command("delete")
def delete(ctx: typer.Context, dataset_id: str) -> None:
    """Delete a data set (refused while a queued or running job uses it)."""
    with client(ctx) as kts:
        kts.delete_dataset(dataset_id)
    stdout.print(f"deleted data set {dataset_id}", soft_wrap=True)
