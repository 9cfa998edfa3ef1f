"""Row ownership: every data set, job, model and batch prediction belongs to a tenant."""

from typing import Any


def owned(model: Any, tenant: str | None) -> list[Any]:
    """Filter on the owning tenant (None: the worker, which acts on any tenant's ids)."""
    return [] if tenant is None else [model.tenant == tenant]
