"""All settings in one place; every field has an embedded-mode default and a KTS_ variable."""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KTS_", extra="ignore")

    data_dir: Path = Field(Path("kts-data"), description="Root folder of the embedded mode.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default: SQLite file under data_dir."
    )
    broker_url: str | None = Field(
        None, description="Celery broker URL; default: a file-system broker under data_dir."
    )
    artifact_dir: Path | None = Field(
        None, description="Artifact folder; default data_dir/artifacts."
    )
    artifact_url: str | None = Field(
        None,
        description="s3://bucket/prefix: artifacts in S3-compatible object storage instead of "
        "artifact_dir, so API and workers on different hosts share only the database, the "
        "broker and the bucket.",
    )
    s3_endpoint_url: str | None = Field(
        None, description="Object storage endpoint (MinIO: http://minio:9000); default: AWS."
    )
    s3_region: str | None = Field(None, description="Object storage region; default: AWS's.")
    s3_access_key_id: str | None = Field(
        None, description="Object storage key id; default: AWS_ACCESS_KEY_ID, profiles, roles."
    )
    s3_secret_access_key: SecretStr | None = Field(
        None, description="Object storage secret; default: AWS_SECRET_ACCESS_KEY and the like."
    )
    s3_part_size: int = Field(
        64 * 1024**2,
        ge=5 * 1024**2,
        description="Files past this size are uploaded in parts of this size (S3's least: 5 MiB).",
    )
    cache_dir: Path | None = Field(
        None,
        description="With artifact_url: local folder of downloaded artifacts and staging "
        "files, one per host; default data_dir/cache.",
    )
    cache_max_bytes: int = Field(
        10 * 1024**3,
        description="With artifact_url: most bytes of downloaded artifacts one process keeps; "
        "least recently used files not in use are removed past it.",
    )
    queue: str = Field("kts", description="Celery queue that training tasks go to.")
    broker_polling_interval: float = Field(
        0.1, description="Seconds between polls of the server-less broker (embedded mode)."
    )

    require_auth: bool | None = Field(
        None,
        description="Require API keys. Default: required unless `kts serve` binds to loopback; "
        "keys are always required off loopback.",
    )
    auth_cache_seconds: float = Field(
        10.0,
        ge=0,
        description="Each API process remembers a valid key's tenant this long, so requests "
        "with a known key read no database; a revoked key is refused within it (0: no cache).",
    )
    api_workers: int = Field(
        1,
        ge=1,
        description="API processes of `kts serve` (its --workers): each has its own database "
        "pool, loaded-model cache and predict limits; the embedded worker is started once.",
    )
    progress_push: bool = Field(
        True,
        description="With a Redis broker, workers publish each epoch and status change on "
        "Redis pub/sub and open event streams follow it instead of reading the database every "
        "0.25 s (the embedded broker always polls).",
    )
    lease_seconds: float = Field(
        30.0, description="A running job's lease; a worker that stops renewing it loses the job."
    )
    heartbeat_seconds: float = Field(5.0, description="How often a worker renews its leases.")
    max_attempts: int = Field(
        3, description="Tries per job; past it a job whose worker died fails as worker_lost."
    )
    reconcile_seconds: float = Field(
        10.0, description="How often workers look for expired leases and lost messages."
    )
    requeue_after_seconds: float = Field(
        60.0, description="A queued job not started after this long is enqueued again."
    )
    max_uncompressed_bytes: int = Field(
        2 * 1024**3, description="Largest uncompressed size of an uploaded .npz archive."
    )
    max_upload_bytes: int = Field(512 * 1024 * 1024, description="Largest accepted upload.")
    max_body_bytes: int = Field(
        1024 * 1024, description="Largest JSON body of the other routes (specs, requests)."
    )
    max_predict_bytes: int = Field(
        128 * 1024 * 1024, description="Largest body of a predict request (JSON or .npy)."
    )
    max_active_jobs_per_tenant: int = Field(
        1000, description="Most queued or running jobs of one tenant (0: no limit); past it, 429."
    )
    max_stored_bytes_per_tenant: int = Field(
        100 * 1024**3, description="Most bytes of data sets one tenant may store (0: no limit)."
    )
    predict_rate_per_tenant: float = Field(
        500.0,
        description="Predict requests per second per tenant and API process (0: no limit); "
        "bursts of two seconds' worth pass.",
    )
    max_rows: int = Field(5_000_000, description="Most rows a data set may have.")
    max_features: int = Field(1_000_000, description="Most input values per row.")
    max_classes: int = Field(100_000, description="Most classes a data set's labels may name.")
    max_layers: int = Field(200, description="Most layers in a spec.")
    max_units: int = Field(65_536, description="Most units in one dense layer.")
    max_epochs: int = Field(10_000, description="Most epochs a job may ask for.")
    max_instances: int = Field(10_000, description="Most instances in one predict call.")
    max_mc_samples: int = Field(10_000, description="Most Monte-Carlo samples per predict call.")
    max_mc_values: int = Field(
        50_000_000, description="Most instances x samples x outputs computed per predict call."
    )
    max_returned_samples: int = Field(
        2_000_000,
        description="Most instances x mc_samples x outputs returned with return_samples (the "
        "answer's size), below max_mc_values.",
    )
    predict_threads: int = Field(
        4, description="Predictions computed at once per API process; more requests wait."
    )
    model_cache_size: int = Field(32, description="Most loaded models kept per API process.")
    model_cache_bytes: int = Field(
        2 * 1024**3,
        description="Memory budget of the loaded-model cache (weights x 3 for the MC clone and "
        "compiled functions); least recently used models are evicted past it.",
    )
    metrics_cache_seconds: float = Field(
        5.0,
        description="GET /metrics reads the job figures from the database at most this often; "
        "scrapes in between answer the last reading.",
    )

    backend: Literal["jax", "tensorflow"] | None = Field(
        None,
        description="Keras backend of workers and of the API's prediction path; default: JAX "
        "where installed, else TensorFlow (KERAS_BACKEND, when set, also decides).",
    )
    retention_days: float | None = Field(
        None,
        description="Remove the checkpoints of jobs that ended this many days ago, and the "
        "artifacts of failed and cancelled ones; default: keep everything.",
    )
    device_memory_budget_bytes: int = Field(
        1 << 30,
        description="Training rows up to this size are placed on the device once per job; "
        "larger data is fed to the compiled epoch in chunks of this size.",
    )
    tensorboard: bool = Field(
        True,
        description="Workers write TensorBoard event files for each training job "
        "(GET /v1/jobs/{job_id}/tensorboard).",
    )
    tensorboard_histogram_epochs: int = Field(
        50,
        ge=1,
        description="Most epochs of a job that get weight and gradient histograms: past it, "
        "every N-th epoch (N = ceil(epochs / this)) and the last.",
    )

    log_format: Literal["json", "text"] = Field(
        "json",
        description="Log lines of `kts serve` and `kts worker` on stderr: one JSON object per "
        "line (with request_id, tenant, job_id, model_id), or text for a terminal.",
    )
    log_level: str = Field("INFO", description="Least level logged: DEBUG, INFO, WARNING or ERROR.")
    task_events: bool = Field(
        False,
        description="Celery task events (for Flower): the API sends task-sent events and "
        "workers send task events; `kts worker --events` turns it on for that worker.",
    )
    job_log_max_lines: int = Field(
        2000,
        description="Most lines kept in one job's log: past it, its oldest epoch lines are "
        "dropped (start, resume and end lines stay).",
    )

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'kts.sqlite').resolve()}"

    def resolved_artifact_dir(self) -> Path:
        return (self.artifact_dir or self.data_dir / "artifacts").resolve()

    def resolved_cache_dir(self) -> Path:
        return (self.cache_dir or self.data_dir / "cache").resolve()

    def is_embedded_broker(self) -> bool:
        return self.broker_url is None

    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    def broker_folder(self) -> Path:
        return (self.data_dir / "broker").resolve()


@lru_cache
def get_settings() -> Settings:
    return Settings()
