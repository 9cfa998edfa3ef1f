"""The model registry: names with per-name versions, movable aliases, tags, and deletion.

A model is addressed by its id, `NAME@ALIAS`, `NAME@VERSION` or `NAME@latest` wherever an id
is accepted (predict, optimize, batch predictions, base_model).
"""

import re
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.errors import Conflict, ErrorDetail, NotFound, SpecInvalid
from service.jobs.service import TERMINAL
from service.rows import BatchPrediction, Job, ModelAlias, TrainedModel, utcnow
from service.storage import ArtifactStore

ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
RESERVED = ("latest",)


MAX_VERSION_DIGITS = 18


def resolve(session: Session, ref: str, tenant: str | None) -> TrainedModel | None:
    """The model an id or NAME@ALIAS / NAME@VERSION / NAME@latest names, or None."""
    query = select(TrainedModel)
    if tenant is not None:
        query = query.where(TrainedModel.tenant == tenant)
    if "@" not in ref:
        return session.scalar(query.where(TrainedModel.id == ref))
    name, selector = ref.rsplit("@", 1)
    query = query.where(TrainedModel.name == name)
    if selector.isdecimal() and selector.isascii():
        if len(selector) > MAX_VERSION_DIGITS:  # past a 64-bit integer: no such version
            return None
        return session.scalar(query.where(TrainedModel.version == int(selector)))
    if selector == "latest":
        return session.scalar(query.order_by(TrainedModel.version.desc()).limit(1))
    return session.scalar(
        query.join(ModelAlias, ModelAlias.model_id == TrainedModel.id).where(
            ModelAlias.alias == selector
        )
    )


def next_version(session: Session, tenant: str, name: str) -> int:
    """The next version of a name (the unique constraint settles a race: the writer retries)."""
    top = session.scalar(
        select(func.max(TrainedModel.version)).where(
            TrainedModel.tenant == tenant, TrainedModel.name == name
        )
    )
    return int(top or 0) + 1


def set_alias(session: Session, model: TrainedModel, alias: str) -> TrainedModel:
    """Point `alias` of the model's name at this version, in one statement-level move."""
    if not ALIAS.match(alias) or alias in RESERVED:
        raise SpecInvalid(
            [
                ErrorDetail(
                    ("alias",),
                    "Expected an alias of letters, digits, _ and - starting with a letter "
                    f"(not {', '.join(RESERVED)}).",
                )
            ]
        )
    row = session.scalar(
        select(ModelAlias)
        .where(
            ModelAlias.tenant == model.tenant,
            ModelAlias.name == model.name,
            ModelAlias.alias == alias,
        )
        .with_for_update()
    )
    if row is None:
        session.add(
            ModelAlias(tenant=model.tenant, name=model.name, alias=alias, model_id=model.id)
        )
    else:
        row.model_id, row.updated_at = model.id, utcnow()
    session.flush()
    session.expire(model, ["alias_rows"])
    return model


def delete_alias(session: Session, model: TrainedModel, alias: str) -> None:
    row = next((a for a in model.alias_rows if a.alias == alias), None)
    if row is None:
        raise NotFound(f"This model has no alias {alias[:64]}.")
    session.delete(row)
    session.flush()


def users_of(session: Session, model: TrainedModel) -> str | None:
    """What still needs the model (a derived model, a running job on it), or None."""
    derived = session.scalar(
        select(TrainedModel.id).where(TrainedModel.base_model_id == model.id).limit(1)
    )
    if derived is not None:
        return f"model {derived} was derived from it"
    open_jobs = session.scalars(
        select(Job).where(Job.tenant == model.tenant, Job.status.notin_(TERMINAL))
    )
    for job in open_jobs:
        spec = job.spec or {}
        base = (spec.get("base_model") or {}).get("model_id")
        if model.id in (spec.get("source_model_id"), spec.get("model_id"), base):
            return f"{job.kind} job {job.id} is {job.status}"
    batch = session.scalar(
        select(BatchPrediction.id)
        .join(Job, Job.id == BatchPrediction.id)
        .where(BatchPrediction.model_id == model.id, Job.status.notin_(TERMINAL))
        .limit(1)
    )
    return f"batch prediction {batch} is running" if batch else None


def delete_model(session: Session, store: ArtifactStore, model: TrainedModel) -> None:
    """Delete the model and its files (409 while something still needs it)."""
    user = users_of(session, model)
    if user is not None:
        raise Conflict(f"The model is in use: {user}.")
    session.delete(model)
    session.flush()
    store.delete_tree(f"models/{model.id}")
    store.delete_tree(f"plots/models/{model.id}")


def filters(
    tenant: str, *, name: str | None, tag: str | None, alias: str | None, job_id: str | None
) -> list[Any]:
    """SQL filters of the model list."""
    out: list[Any] = [TrainedModel.tenant == tenant]
    if name is not None:
        out.append(TrainedModel.name == name)
    if job_id is not None:
        out.append(TrainedModel.job_id == job_id)
    if alias is not None:
        out.append(
            TrainedModel.id.in_(
                select(ModelAlias.model_id).where(
                    ModelAlias.tenant == tenant, ModelAlias.alias == alias
                )
            )
        )
    if tag is not None:
        if ":" not in tag:
            raise SpecInvalid([ErrorDetail(("tag",), "Expected KEY:VALUE.")])
        key, value = tag.split(":", 1)
        out.append(TrainedModel.tags[key].as_string() == value)
    return out
