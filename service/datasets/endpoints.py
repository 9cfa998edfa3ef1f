"""Data-set routes: upload, get, list."""

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, Response, UploadFile

from service.auth import TenantDep
from service.datasets import parsing, service
from service.datasets.arrays import describe, save_arrays
from service.datasets.schemas import DatasetRead
from service.datasets.service import get_dataset
from service.deps import SessionDep, SettingsDep, StoreDep
from service.pagination import Page, page
from service.rows import Dataset, new_id

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


@router.post("", status_code=201, response_model=DatasetRead)
def upload_dataset(
    tenant: TenantDep,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    file: Annotated[UploadFile, File(description=".npz with X (or x) and y, or .csv")],
    target: Annotated[str | None, Form(max_length=200, description="CSV label column")] = None,
    name: Annotated[str | None, Form(max_length=200)] = None,
    task: Annotated[Literal["classification", "regression"] | None, Form()] = None,
) -> DatasetRead:
    """Upload a data set (.npz or .csv)."""
    with store.scratch() as scratch:
        arrays = parsing.parse_upload(
            file.file, file.filename or "", target, task, parsing.Limits.of(settings), scratch
        )
        meta, class_names = describe(arrays), arrays.class_names
        dataset_id = new_id()
        key = f"datasets/{dataset_id}"
        save_arrays(store, key, arrays)
        del arrays  # the memory maps close before their scratch files go
    row = Dataset(
        tenant=tenant,
        id=dataset_id,
        name=name or file.filename or dataset_id,
        n_samples=meta.n_samples,
        input_shape=list(meta.input_shape),
        n_classes=meta.n_classes,
        output_dim=meta.output_dim,
        task=meta.task,
        class_names=class_names,
        artifact_key=key,
    )
    session.add(row)
    session.commit()
    return DatasetRead.of(row)


@router.get("/{dataset_id}", response_model=DatasetRead)
def read_dataset(dataset_id: str, tenant: TenantDep, session: SessionDep) -> DatasetRead:
    """One data set."""
    return DatasetRead.of(get_dataset(session, dataset_id, tenant))


@router.get("", response_model=Page)
def list_datasets(
    tenant: TenantDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
) -> Page:
    """Data sets, newest first."""
    rows, next_cursor = page(session, Dataset, limit, cursor, Dataset.tenant == tenant)
    return Page(items=[DatasetRead.of(r) for r in rows], next_cursor=next_cursor)


@router.delete("/{dataset_id}", status_code=204)
def delete_dataset(
    dataset_id: str, tenant: TenantDep, session: SessionDep, store: StoreDep
) -> Response:
    """Delete a data set and its files (409 while a queued or running job uses it)."""
    service.delete_dataset(session, store, get_dataset(session, dataset_id, tenant))
    session.commit()
    return Response(status_code=204)
