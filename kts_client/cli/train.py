"""`kts train` and the live view of a job's epochs (shared with `kts jobs follow`)."""

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from kts_client.cli.common import (
    JsonOpt,
    client,
    number,
    plain,
    print_json,
    stderr,
    stdout,
    wants_json,
)
from kts_client.client import Client
from kts_client.data import load_spec
from kts_client.events import DoneEvent, ProgressEvent
from service.jobs.schemas import JobRead

Task = Literal["classification", "regression"]


def train(
    ctx: typer.Context,
    spec: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Spec JSON file.")],
    data: Annotated[
        Path | None,
        typer.Option("--data", exists=True, dir_okay=False, help="Upload this .csv/.npz first."),
    ] = None,
    target: Annotated[str | None, typer.Option("--target", help="The CSV's label column.")] = None,
    task: Annotated[Task | None, typer.Option("--task", help="Override the inferred task.")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Show epochs live.")] = False,
    idempotency_key: Annotated[str | None, typer.Option("--idempotency-key")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Submit a training spec; with --data, upload it first and train on it."""
    as_json = wants_json(ctx, json_out)
    body = load_spec(spec)
    with client(ctx) as kts:
        if data is not None:
            dataset = kts.upload_dataset(data, target=target, task=task)
            body["dataset"] = {"id": dataset.id}
            stderr.print(f"data set {dataset.id} ({dataset.n_samples} rows)", soft_wrap=True)
        job = kts.submit(body, idempotency_key)
        if not follow:
            if as_json:
                print_json(job)
            else:
                stdout.print(f"job {job.id} {job.status}", soft_wrap=True)
            return
        stderr.print(f"job {job.id} queued", soft_wrap=True)
        final = follow_job(kts, job.id, as_json)
    if final.status != "succeeded":
        raise typer.Exit(1)


def metrics_text(metrics: dict[str, Any]) -> str:
    """An epoch's metrics in one line, the learning rate last."""
    shown = [(k, v) for k, v in metrics.items() if k not in ("learning_rate", "epoch_seconds")]
    shown.sort(key=lambda kv: (kv[0].startswith("val_"), kv[0] != "loss", kv[0]))
    parts = [f"{k} {number(v)}" for k, v in shown]
    if "learning_rate" in metrics:
        parts.append(f"lr {number(metrics['learning_rate'])}")
    if "epoch_seconds" in metrics:
        parts.append(f"{number(metrics['epoch_seconds'])}s")
    return "  ".join(parts)


def follow_job(kts: Client, job_id: str, as_json: bool = False) -> JobRead:
    """Follow a job to its end: a live bar (or JSON lines), then its summary."""
    if as_json:
        return _follow_json(kts, job_id)
    columns = (
        TextColumn("epoch"),
        MofNCompleteColumn(),
        BarColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[metrics]}"),
    )
    job: JobRead | None = None
    with Progress(*columns, console=stdout, transient=False) as bar:
        task = bar.add_task("train", total=None, metrics="waiting for the first epoch")
        for event in kts.follow(job_id):
            if isinstance(event, ProgressEvent):
                text = metrics_text(event.metrics)
                bar.update(task, completed=event.epoch, total=event.epochs, metrics=text)
                bar.console.print(f"epoch {event.epoch}/{event.epochs}  {text}", markup=False)
            else:
                job = event.job
    assert job is not None  # follow() ends with a DoneEvent
    summarize(kts, job)
    return job


def _follow_json(kts: Client, job_id: str) -> JobRead:
    for event in kts.follow(job_id):
        if isinstance(event, DoneEvent):
            print(json.dumps({"event": "done", "job": plain(event.job)}), flush=True)
            return event.job
        print(json.dumps({"event": "progress", **dataclasses.asdict(event)}), flush=True)
    raise AssertionError("follow() ends with a DoneEvent")


def summarize(kts: Client, job: JobRead) -> None:
    """The job's outcome: status, error, model id, final metrics, uncertainty."""
    stdout.print(f"job {job.id} {job.status}", soft_wrap=True)
    if job.error:
        stderr.print(f"error: {job.error.get('code')}: {job.error.get('message')}", markup=False)
    if job.model_id is None:
        return
    model = kts.get_model(job.model_id)
    named = f" ({model.name}@{model.version})" if getattr(model, "name", None) else ""
    stdout.print(f"model {model.id}{named}", soft_wrap=True)
    if job.metrics:
        stdout.print(metrics_text(job.metrics), markup=False)
    if model.uncertainty:
        stdout.print(uncertainty_table(model.uncertainty))


def uncertainty_table(uncertainty: dict[str, Any]) -> Table:
    """Plain against MC Dropout on the validation rows."""
    plain_, mc = uncertainty.get("plain") or {}, uncertainty.get("mc_dropout") or {}
    title = (
        f"uncertainty on {uncertainty.get('rows')} {uncertainty.get('split')} rows "
        f"({uncertainty.get('mc_samples')} MC samples)"
    )
    out = Table("metric", "plain", "mc_dropout", title=title)
    for name in dict.fromkeys([*plain_, *mc]):
        out.add_row(name, number(plain_.get(name)), number(mc.get(name)))
    return out
