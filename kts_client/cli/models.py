"""`kts models list|show|predict|download|alias|tags|delete`."""

from pathlib import Path
from typing import Annotated, Literal

import typer

from kts_client.cli import rows as rowio
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
from kts_client.cli.train import metrics_text, uncertainty_table
from service.models.schemas import ModelRead

app = typer.Typer(help="Trained models: inspect, predict, download, name.", no_args_is_help=True)
Ref = Annotated[str, typer.Argument(help="Model id, NAME@ALIAS, NAME@VERSION or NAME@latest.")]


def _name(model: ModelRead) -> str:
    name = getattr(model, "name", None)
    return f"{name}@{getattr(model, 'version', '?')}" if name else "-"


@app.command("list")
def list_models(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option("--name")] = None,
    tag: Annotated[str | None, typer.Option("--tag", help="KEY:VALUE")] = None,
    alias: Annotated[str | None, typer.Option("--alias")] = None,
    job_id: Annotated[str | None, typer.Option("--job-id")] = None,
    limit: LimitOpt = None,
    cursor: CursorOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Models, newest first."""
    with client(ctx) as kts:
        page = kts.list_models(
            name=name, tag=tag, alias=alias, job_id=job_id, limit=limit, cursor=cursor
        )
    if wants_json(ctx, json_out):
        print_json(page)
        return
    rows = [
        (
            m.id,
            _name(m),
            ", ".join(getattr(m, "aliases", []) or []) or "-",
            ", ".join(f"{k}={v}" for k, v in (getattr(m, "tags", {}) or {}).items()) or "-",
            m.task,
            when(m.created_at),
        )
        for m in page.items
    ]
    table(["id", "name", "aliases", "tags", "task", "created"], rows)
    next_page(page)


@app.command("show")
def show(ctx: typer.Context, ref: Ref, json_out: JsonOpt = False) -> None:
    """One model: lineage, metrics, uncertainty, layers."""
    with client(ctx) as kts:
        model = kts.get_model(ref)
    if wants_json(ctx, json_out):
        print_json(model)
        return
    fields(
        [
            ("id", model.id),
            ("name", _name(model)),
            ("aliases", ", ".join(getattr(model, "aliases", []) or []) or "-"),
            ("tags", getattr(model, "tags", {}) or {}),
            (
                "task",
                f"{model.task} ({model.n_classes} classes)" if model.n_classes else model.task,
            ),
            ("input shape", model.input_shape),
            ("backend", model.backend),
            ("job", model.job_id or "-"),
            ("base model", model.base_model_id or "-"),
            ("created", when(model.created_at)),
            ("metrics", metrics_text(model.metrics) or "-"),
        ]
    )
    layers = model.summary.get("layers", [])
    rows = [(x["name"], x["class_name"], x["output_shape"], x["params"]) for x in layers]
    table(["layer", "class", "output shape", "params"], rows)
    if model.uncertainty:
        stdout.print(uncertainty_table(model.uncertainty))


@app.command("predict")
def predict(
    ctx: typer.Context,
    ref: Ref,
    rows: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help=".csv or .npy rows")],
    mc: Annotated[int, typer.Option("--mc", min=0, help="Monte-Carlo-Dropout samples.")] = 0,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    interval: Annotated[float | None, typer.Option("--interval", help="Regression.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write .csv or .parquet.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Predict rows: class, p ± std, entropies (classifiers) or mean ± std; all with --out."""
    X = rowio.read_rows(rows)
    with client(ctx) as kts:
        model = kts.get_model(ref)  # its task, and an alias resolved once for both calls
        pred = kts.predict(model.id, X, mc_samples=mc, seed=seed, interval=interval)
    if out is not None:
        rowio.write_predictions(pred, out)
        stdout.print(f"wrote {len(pred)} rows to {out}", soft_wrap=True)
    elif wants_json(ctx, json_out):
        print_json(rowio.as_json(pred))
    elif model.task == "classification":
        table(*rowio.classifier_rows(pred, getattr(model, "class_names", None)))
    else:
        table(*rowio.output_rows(pred))


@app.command("download")
def download(
    ctx: typer.Context,
    ref: Ref,
    dest: Annotated[Path, typer.Argument(help="File or folder.")] = Path("."),
    format: Annotated[
        Literal["keras", "saved_model", "tflite"], typer.Option("--format")
    ] = "keras",
    quantize: Annotated[
        Literal["float16", "int8"] | None, typer.Option("--quantize", help="tflite only")
    ] = None,
) -> None:
    """Download the model file (.keras, SavedModel .zip or .tflite)."""
    with client(ctx) as kts:
        path = kts.download_model(ref, dest, format=format, quantize=quantize)
    stdout.print(f"{path} ({number(path.stat().st_size)} bytes)", soft_wrap=True)


@app.command("alias")
def alias(
    ctx: typer.Context,
    ref: Ref,
    name: Annotated[str, typer.Argument(help="The alias, e.g. champion.")],
    delete: Annotated[bool, typer.Option("--delete", help="Remove it instead.")] = False,
) -> None:
    """Point an alias (NAME@ALIAS) at this model, or --delete it."""
    with client(ctx) as kts:
        if delete:
            kts.delete_alias(ref, name)
            stdout.print(f"removed alias {name} from {ref}", soft_wrap=True)
            return
        model = kts.set_alias(ref, name)
    stdout.print(f"{_name(model).split('@')[0]}@{name} -> {model.id}", soft_wrap=True)


@app.command("tags")
def tags(
    ctx: typer.Context,
    ref: Ref,
    pairs: Annotated[list[str] | None, typer.Argument(help="KEY=VALUE ... (replaces all)")] = None,
) -> None:
    """Replace the model's tags (none given: remove them all)."""
    parsed = dict(p.split("=", 1) for p in pairs or [] if "=" in p)
    if len(parsed) != len(pairs or []):
        raise typer.BadParameter("Expected KEY=VALUE pairs.")
    with client(ctx) as kts:
        model = kts.set_tags(ref, parsed)
    stdout.print(f"{model.id} tags {getattr(model, 'tags', parsed)}", soft_wrap=True)


@app.command("delete")
def delete(ctx: typer.Context, ref: Ref) -> None:
    """Delete a model and its files."""
    with client(ctx) as kts:
        kts.delete_model(ref)
    stdout.print(f"deleted model {ref}", soft_wrap=True)
