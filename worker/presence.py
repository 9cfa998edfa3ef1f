"""Worker processes announce themselves (backend, devices) so operators see what each one
trains on (GET /v1/workers); the node's reconciler keeps them marked as seen."""

import logging

from sqlalchemy import select, update

from service.rows import Worker, utcnow
from worker.context import WorkerContext

log = logging.getLogger(__name__)


_announced: set[str] = set()


def announce(ctx: WorkerContext, owner: str) -> None:
    """Record this process (once): its lease owner name, backend and devices."""
    from inference.runtime import devices, init_keras

    if owner in _announced:
        return

    backend, seen = init_keras(), devices()
    log.info("worker process %s: backend %s, devices %s", owner, backend, ", ".join(seen))
    now = utcnow()
    with ctx.session_factory() as session:
        row = session.scalar(select(Worker).where(Worker.node == owner))
        if row is None:
            session.add(Worker(node=owner, backend=backend, devices=seen, started_at=now))
        else:
            row.backend, row.devices, row.started_at, row.last_seen = backend, seen, now, now
        session.commit()
    _announced.add(owner)


def touch(ctx: WorkerContext, node: str) -> None:
    """Mark every process of this Celery node as seen now."""
    with ctx.session_factory() as session:
        session.execute(
            update(Worker).where(Worker.node.like(f"{node}/%")).values(last_seen=utcnow())
        )
        session.commit()
