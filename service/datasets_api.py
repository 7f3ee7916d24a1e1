"""/v1/datasets: the built-ins and a user's uploads (.npz or .csv), stored in the database (``core.dataset_store``)."""

from __future__ import annotations

from flask import Response
from flask_openapi3 import APIBlueprint, FileStorage, Tag
from pydantic import BaseModel, Field

from core import dataset_store, storage
from core.layers import NulFree
from service.auth import current_owner
from service.extensions import services
from service.problems import COMMON_RESPONSES
from service.representation import Dataset, DatasetList, dataset_body, dataset_list_body, documented

api = APIBlueprint(
    "datasets",
    __name__,
    url_prefix="/v1/datasets",
    abp_tags=[Tag(name="datasets")],
    abp_security=[{"bearer": []}],
    abp_responses=COMMON_RESPONSES,
)


class UploadForm(NulFree):
    """NUL in a field is refused as that field (PostgreSQL text cannot hold it), by the recipe's one check."""

    file: FileStorage = Field(description=".npz with x, y (optional x_test, y_test) or .csv with a header row")
    name: str | None = Field(None, max_length=dataset_store.MAX_NAME)
    label_column: str | None = Field(None, max_length=200, description="For .csv: the column holding the label.")


@api.get("", responses={200: documented("Built-in and uploaded datasets", DatasetList)})
def list_datasets():
    """Built-in datasets (scikit-learn's bundled ones, Fashion-MNIST when its Debian package is installed) and
    your uploads; use ``id`` as ``dataset.name``. A built-in's figures are fixed (no file is read here)."""
    svc = services()
    with svc.db.session() as session:
        return dataset_list_body(dataset_store.catalogue(session, current_owner(), svc.settings))


@api.post("", responses={201: documented("The stored dataset, described", Dataset)})
def upload_dataset(form: UploadForm):
    """Parsed as data only (no pickles), every array's size checked from its header before it is read;
    stored compressed in its compact dtypes; returns its id."""
    svc = services()
    # werkzeug spooled the file to a temporary file past 500 kB: it is parsed from there
    info = dataset_store.store_upload(
        svc.db, current_owner(), svc.settings, form.file.stream, form.file.filename or "", form.name, form.label_column
    )
    return dataset_body({"id": info.name, **info.as_dict()}), 201, {"Location": f"/v1/datasets/{info.name}"}


class DatasetPath(BaseModel):
    dataset_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="An upload's id (ds-…) from POST /v1/datasets.")


@api.delete("/<dataset_id>", responses={204: {"description": "Deleted, with its stored file"}})
def delete_dataset(path: DatasetPath):
    """An upload goes with its stored file, freeing its bytes of your quota (GET /v1/usage). 409 while a queued
    or running job trains on it, and for a built-in."""
    svc = services()
    with svc.db.session() as session:
        storage.delete_dataset(session, path.dataset_id, current_owner())
    return Response(status=204)
