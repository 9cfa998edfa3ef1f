"""Job request and response shapes (the request body of a training job is the spec,
service/spec/training.py)."""

from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from service.plots.catalog import job_plots
from service.rows import Job
from service.spec.resources import DEFAULT_RESOURCES, Resources
from service.spec.versions import upgrade

if TYPE_CHECKING:
    from service.workers.placement import Placement


class Progress(BaseModel):
    epoch: int
    epochs: int


class JobRead(BaseModel):
    id: str
    name: str
    kind: str
    status: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: Progress
    history: dict[str, list[float | None]]
    metrics: dict[str, float | None]
    error: dict[str, str] | None
    model_id: str | None
    attempts: int
    resumed_from_epoch: int | None
    warnings: list[dict[str, Any]]
    spec_version: int
    engine: str | None
    spec: dict[str, Any]
    plots: list[str] = Field(
        default_factory=list, description="Plot names available now (GET .../plots/{name})."
    )
    resources: dict[str, Any] = Field(
        default_factory=DEFAULT_RESOURCES.model_dump,
        description="What the job needs from its worker (accelerator, devices).",
    )
    waiting_for: str | None = Field(
        None,
        description="A queued job no live worker can take: the worker it waits for, e.g. "
        '"a gpu worker: none is live". null otherwise.',
    )

    @classmethod
    def of(cls, row: Job, placement: "Placement | None" = None) -> "JobRead":
        """The job as the API shows it; with `placement`, a queued job says what it waits for."""
        resources = Resources.of((row.spec or {}).get("resources")).model_dump()
        waiting = placement.waiting_for(resources) if placement and row.status == "queued" else None
        return cls(
            id=row.id,
            name=row.name,
            kind=row.kind,
            status=row.status,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            progress=Progress(epoch=row.epoch, epochs=row.epochs),
            history=row.history or {},
            metrics=row.metrics or {},
            error=row.error,
            model_id=row.model_id,
            attempts=row.attempts,
            resumed_from_epoch=row.resumed_from_epoch,
            warnings=row.warnings or [],
            spec_version=row.spec_version,
            engine=row.engine,
            spec=upgraded(row) if row.kind == "train" else row.spec,
            plots=job_plots(row),
            resources=resources,
            waiting_for=waiting,
        )


class ValidateResult(BaseModel):
    valid: bool = True
    summary: dict[str, Any]
    loss: str
    metrics: list[str]
    epochs: int
    dataset: dict[str, Any]


def upgraded(row: Job) -> dict[str, Any]:
    """A stored training spec in today's version (stored jobs keep the version they had)."""
    return upgrade({**row.spec, "spec_version": row.spec_version})
