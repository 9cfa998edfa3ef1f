"""Which workers can run a job, read from what workers announce (worker/presence.py): the
submit-time check of `resources`, and the `waiting_for` note of a queued job no live worker
can take. A worker can take a job when it consumes the job's queue (service/queue.py), so
both questions are answered from the queue names workers record, with one small query.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.errors import ErrorDetail, SpecInvalid
from service.queue import queue_for
from service.rows import Worker, utcnow
from service.settings import Settings
from service.spec.resources import MAX_DEVICES, Resources


def live_since(settings: Settings) -> datetime:
    """Workers seen since then count as live (the window GET /v1/workers uses)."""
    return utcnow() - timedelta(seconds=3 * settings.reconcile_seconds + settings.lease_seconds)


def _queue_sets(settings: Settings, rows: Iterable[str | None]) -> list[set[str]]:
    # a worker announced before queues were recorded consumed the base queue only
    return [set(q.split(",")) if q else {settings.queue} for q in rows]


@dataclass(frozen=True)
class Placement:
    """The queues live workers consume, read once per request."""

    settings: Settings
    live_queues: frozenset[str]

    @classmethod
    def read(cls, session: Session, settings: Settings) -> "Placement":
        rows = session.scalars(
            select(Worker.queues).where(Worker.last_seen >= live_since(settings)).distinct()
        )
        live = frozenset().union(*_queue_sets(settings, rows))
        return cls(settings, live)

    def waiting_for(self, resources: Mapping[str, Any] | None) -> str | None:
        """What a queued job waits for, or None when a live worker consumes its queue."""
        if queue_for(self.settings, resources) in self.live_queues:
            return None
        return f"{needs(resources)}: none is live"


def needs(resources: Mapping[str, Any] | None) -> str:
    """The worker a job needs, in words: "a gpu worker with at least 4 devices"."""
    asked = Resources.of(resources)
    accelerator, devices = asked.accelerator, asked.devices
    who = "a worker" if accelerator == "any" else f"a {accelerator} worker"
    return who if devices == 1 else f"{who} with at least {devices} devices"


def most_devices_seen(session: Session, settings: Settings, accelerator: str) -> int | None:
    """The most devices a job of this accelerator can be routed to by any worker ever seen
    (live or not: a fleet scaled to zero still accepts work), None when none was seen."""
    rows = session.scalars(select(Worker.queues).distinct())
    most = None
    for queues in _queue_sets(settings, rows):
        for n in range(MAX_DEVICES, 0, -1):
            if queue_for(settings, {"accelerator": accelerator, "devices": n}) in queues:
                most = max(most or 0, n)
                break
    return most


def check_resources(session: Session, settings: Settings, resources: Resources) -> None:
    """422 for more devices than any worker seen has."""
    devices = resources.devices
    if devices == 1:
        return  # every worker has one device: nothing to read
    most = most_devices_seen(session, settings, resources.accelerator)
    if most is not None and devices > most:
        kind = "" if resources.accelerator == "any" else f"{resources.accelerator} "
        raise SpecInvalid(
            [
                ErrorDetail(
                    ("resources", "devices"),
                    f"Expected devices <= {most}: the most devices of any {kind}worker seen "
                    f"is {most}. Received: devices={devices}",
                )
            ]
        )
