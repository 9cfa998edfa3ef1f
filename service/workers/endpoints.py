"""Worker routes: which worker processes are live and what devices they train on."""

from fastapi import APIRouter
from sqlalchemy import select

from service.auth import TenantDep
from service.deps import SessionDep, SettingsDep
from service.rows import Worker
from service.workers.placement import live_since
from service.workers.schemas import WorkerList, WorkerRead

router = APIRouter(prefix="/v1/workers", tags=["workers"])


@router.get("", response_model=WorkerList)
def list_workers(tenant: TenantDep, session: SessionDep, settings: SettingsDep) -> WorkerList:
    """Worker processes seen recently, with their backend, devices and queues."""
    since = live_since(settings)
    rows = session.scalars(select(Worker).where(Worker.last_seen >= since).order_by(Worker.node))
    return WorkerList(items=[WorkerRead.model_validate(r) for r in rows])
