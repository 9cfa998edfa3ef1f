"""Data-set routes: upload, get, list."""

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Path, Query, Response, UploadFile

from service.auth import TenantDep
from service.datasets import parsing, service
from service.datasets.arrays import describe, load_builtin, save_arrays
from service.datasets.schemas import DatasetRead, DatasetRows
from service.datasets.service import get_dataset
from service.deps import SessionDep, SettingsDep, StoreDep
from service.errors import NotFound
from service.pagination import Page, page
from service.quotas import check_storage, dataset_bytes
from service.rows import Dataset, new_id
from service.spec.training import BUILTIN_DATASETS

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
        check_storage(session, tenant, settings, dataset_bytes(meta.n_samples, meta.input_shape))
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


Offset = Annotated[int, Query(ge=0, le=2**62, description="First row (0-based).")]
Limit = Annotated[int, Query(ge=1, le=100, description="Rows to return.")]


@router.get("/builtin/{name}/rows", response_model=DatasetRows)
def builtin_rows(
    name: Annotated[str, Path(max_length=64)],
    tenant: TenantDep,
    offset: Offset = 0,
    limit: Limit = 10,
) -> DatasetRows:
    """Rows of a built-in data set (features as the model sees them, and labels)."""
    if name not in BUILTIN_DATASETS:
        names = ", ".join(BUILTIN_DATASETS)
        raise NotFound(f"No built-in data set is named {name[:64]!r}. Built-in: {names}.")
    return service.read_rows(load_builtin(name), offset, limit)


@router.get("/{dataset_id}/rows", response_model=DatasetRows)
def dataset_rows(
    dataset_id: str,
    tenant: TenantDep,
    session: SessionDep,
    store: StoreDep,
    offset: Offset = 0,
    limit: Limit = 10,
) -> DatasetRows:
    """Rows of an uploaded data set, e.g. to try a prediction on one."""
    row = get_dataset(session, dataset_id, tenant)
    return service.read_rows(service.stored_arrays(store, row), offset, limit)


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
