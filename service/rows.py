"""ORM rows: only what is stored. API request and response shapes live in each domain's schemas."""

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from service.db import Base

DEFAULT_TENANT = "default"


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every database (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Dataset(Base):
    __tablename__ = "datasets"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(32), unique=True, default=new_id)
    tenant: Mapped[str] = mapped_column(String(100), index=True, default=DEFAULT_TENANT)
    name: Mapped[str] = mapped_column(String(200))
    n_samples: Mapped[int] = mapped_column(Integer)
    input_shape: Mapped[list[int]] = mapped_column(JSON)
    n_classes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    output_dim: Mapped[int] = mapped_column(Integer, default=1)
    task: Mapped[str] = mapped_column(String(20))
    class_names: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    artifact_key: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("tenant", "idempotency_key", name="uq_jobs_tenant_idempotency_key"),
    )

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(32), unique=True, default=new_id)
    tenant: Mapped[str] = mapped_column(String(100), index=True, default=DEFAULT_TENANT)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20), default="train")  # train | optimize
    status: Mapped[str] = mapped_column(String(20), index=True, default="queued")
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    spec_version: Mapped[int] = mapped_column(Integer, default=1)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    epochs: Mapped[int] = mapped_column(Integer)
    history: Mapped[dict[str, list[float | None]]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, float | None]] = mapped_column(JSON, default=dict)
    error: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    model_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    resumed_from_epoch: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    warnings: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # The lease decides which worker trains the job; it is renewed by heartbeats.
    lease_owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    release_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # "compiled" (one jitted function per epoch, JAX) or "fit" (Keras fit), set when it runs
    engine: Mapped[str | None] = mapped_column(String(20), nullable=True)
    # when retention removed its checkpoints (and a failed or cancelled job's artifacts)
    artifacts_pruned_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class JobDiagnostics(Base):
    """Gradient health of one epoch of one job."""

    __tablename__ = "job_diagnostics"
    __table_args__ = (UniqueConstraint("job_id", "epoch"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    epoch: Mapped[int] = mapped_column(Integer)
    layers: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    flags: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)


class JobLogLine(Base):
    """One line of a job's own log (start, epochs, resume, hand-back, end), written by the
    worker that holds the job; `seq` counts up per job, so a reader tails with `after`."""

    __tablename__ = "job_log_lines"

    job_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    time: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    level: Mapped[str] = mapped_column(String(10))
    event: Mapped[str] = mapped_column(String(20))
    message: Mapped[str] = mapped_column(Text)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class TrainedModel(Base):
    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("tenant", "name", "version"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(32), unique=True, default=new_id)
    tenant: Mapped[str] = mapped_column(String(100), index=True, default=DEFAULT_TENANT)
    job_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True
    )
    base_model_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    backend: Mapped[str] = mapped_column(String(20))
    task: Mapped[str] = mapped_column(String(20))
    n_classes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    input_shape: Mapped[list[int]] = mapped_column(JSON)
    has_dropout: Mapped[bool] = mapped_column(Boolean, default=False)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)
    metrics: Mapped[dict[str, float | None]] = mapped_column(JSON, default=dict)
    uncertainty: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    pruning: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    optimization: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    artifact_key: Mapped[str] = mapped_column(String(300))
    notes: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # the registry: a name (the spec's), a version per (tenant, name), tags, aliases
    name: Mapped[str] = mapped_column(String(200), default="model", index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    tags: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    class_names: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    alias_rows: Mapped[list["ModelAlias"]] = relationship(
        lazy="selectin", cascade="all, delete-orphan", passive_deletes=True
    )

    @property
    def aliases(self) -> list[str]:
        return sorted(a.alias for a in self.alias_rows)


class ModelAlias(Base):
    """A movable name (e.g. champion) for one version of a registered model name."""

    __tablename__ = "model_aliases"
    __table_args__ = (UniqueConstraint("tenant", "name", "alias"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200))
    alias: Mapped[str] = mapped_column(String(64))
    model_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("models.id", ondelete="CASCADE"), index=True
    )
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ApiKey(Base):
    """An API key, stored as its SHA-256: the key itself is shown once, at creation."""

    __tablename__ = "api_keys"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(32), unique=True, default=new_id)
    tenant: Mapped[str] = mapped_column(String(100), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(12))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class BatchPrediction(Base):
    """Scoring of a stored data set; its status, lease and errors live on the Job of the same
    id (kind "batch_predict"), so the queue, leases and reconciler serve it unchanged."""

    __tablename__ = "batch_predictions"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(
        String(32), ForeignKey("jobs.id", ondelete="CASCADE"), unique=True
    )
    tenant: Mapped[str] = mapped_column(String(100), index=True, default=DEFAULT_TENANT)
    model_id: Mapped[str] = mapped_column(String(32))
    dataset_id: Mapped[str] = mapped_column(String(32))
    mc_samples: Mapped[int] = mapped_column(Integer, default=0)
    seed: Mapped[int | None] = mapped_column(Integer, nullable=True)
    interval: Mapped[float | None] = mapped_column(Float, nullable=True)
    rows: Mapped[int] = mapped_column(Integer)
    rows_done: Mapped[int] = mapped_column(Integer, default=0)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    results_key: Mapped[str | None] = mapped_column(String(300), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Worker(Base):
    """A worker process (one per device on GPU hosts): what it runs on, when it was last seen."""

    __tablename__ = "workers"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    node: Mapped[str] = mapped_column(String(200), unique=True)
    backend: Mapped[str] = mapped_column(String(20))
    devices: Mapped[list[str]] = mapped_column(JSON)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # what it can run (None: announced before 0010): gpu | cpu, its devices of that kind,
    # and the queues it consumes, comma-joined (grouped on when jobs are checked at submit)
    accelerator: Mapped[str | None] = mapped_column(String(10), nullable=True)
    device_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    queues: Mapped[str | None] = mapped_column(Text, nullable=True)
