"""Worker processes announce themselves (backend, devices, the queues they consume) so
operators see what each one trains on (GET /v1/workers) and the API can tell which jobs no
live worker can run (service/workers/placement.py); the node's reconciler keeps them marked
as seen."""

import logging
import threading
from collections.abc import Iterable

from sqlalchemy import select, update

from service.rows import Worker, utcnow
from worker.context import WorkerContext

log = logging.getLogger(__name__)


_announced: set[str] = set()


def accelerator_of(devices: list[str]) -> str:
    """gpu when the process sees a GPU (JAX "gpu:0", TensorFlow "/device:GPU:0"), else cpu."""
    return "gpu" if any("gpu" in d.lower() or "cuda" in d.lower() for d in devices) else "cpu"


def trainable_devices(backend: str, devices: list[str], accelerator: str) -> int:
    """Devices one job can train on here: those of its accelerator under JAX (Keras's
    distribution API), one under TensorFlow."""
    if backend != "jax":
        return 1
    return max(1, sum(1 for d in devices if accelerator_of([d]) == accelerator))


def consumed_queues() -> list[str]:
    """The queues this Celery worker consumes (-Q, else the default queue)."""
    from worker.celery_app import app

    queues = app.amqp.queues
    return sorted(queues.consume_from or queues)


def takes_gpu_jobs(queues: Iterable[str], base: str) -> bool:
    """Whether these queues carry gpu jobs (service/queue.py: {base}.gpu and .gpu.xN)."""
    gpu = f"{base}.gpu"
    return any(q == gpu or q.startswith(f"{gpu}.x") for q in queues)


def gpu_missing() -> bool:
    """True, after logging why, when this worker consumes GPU queues (--accelerator gpu) but
    its backend sees no GPU (e.g. JAX without its CUDA plugin falls back to CPU): it must
    not take GPU jobs (worker/celery_app.py then stops it, exit status 1)."""
    from inference.runtime import devices, init_keras
    from service.settings import get_settings

    queues = consumed_queues()
    if not takes_gpu_jobs(queues, get_settings().queue):
        return False
    seen = devices()
    if accelerator_of(seen) == "gpu":
        return False
    log.error(
        "this worker consumes GPU queues (%s) but its %s backend sees no GPU (devices: %s): "
        "stopping. Install JAX's CUDA plugin (pip install 'keras-training-service[gpu]') "
        "or start it with --accelerator cpu.",
        ",".join(queues), init_keras(), ", ".join(seen),
    )  # fmt: skip
    return True


def announce(ctx: WorkerContext, owner: str) -> None:
    """Record this process (once): its lease owner name, backend, devices and queues."""
    from inference.runtime import devices, init_keras

    if owner in _announced:
        return

    backend, seen = init_keras(), devices()
    accelerator = accelerator_of(seen)
    count, queues = trainable_devices(backend, seen, accelerator), consumed_queues()
    log.info(
        "worker process %s: backend %s, devices %s, queues %s",
        owner, backend, ", ".join(seen), ",".join(queues),
    )  # fmt: skip
    now = utcnow()
    values = {
        "backend": backend, "devices": seen, "accelerator": accelerator, "device_count": count,
        "queues": ",".join(queues), "started_at": now, "last_seen": now,
    }  # fmt: skip
    with ctx.session_factory() as session:
        row = session.scalar(select(Worker).where(Worker.node == owner))
        if row is None:
            session.add(Worker(node=owner, **values))
        else:
            for name, value in values.items():
                setattr(row, name, value)
        session.commit()
    _announced.add(owner)


def announce_soon(owner: str) -> None:
    """Announce from a thread, so a worker is known before its first job without delaying
    its start (importing the backend takes seconds)."""
    from worker.context import worker_context

    def run() -> None:
        try:
            announce(worker_context(), owner)
        except Exception:  # presence is advisory: the first job announces again
            log.warning("could not announce worker %s", owner, exc_info=True)

    threading.Thread(target=run, daemon=True, name="kts-announce").start()


def touch(ctx: WorkerContext, node: str) -> None:
    """Mark every process of this Celery node as seen now."""
    with ctx.session_factory() as session:
        session.execute(
            update(Worker).where(Worker.node.like(f"{node}/%")).values(last_seen=utcnow())
        )
        session.commit()
