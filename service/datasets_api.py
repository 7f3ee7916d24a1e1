"""/v1/datasets: the built-ins and a user's uploads (.npz or .csv), stored in the database."""
from __future__ import annotations

import io
import uuid

from flask import Response, request
from flask_openapi3 import APIBlueprint, FileStorage, Tag
from pydantic import BaseModel, Field
from sqlalchemy import select

from core import artifacts, storage, uploads
from core.datasets import BUILTIN, availability
from core.errors import DatasetError, PayloadTooLarge
from core.layers import NulFree
from core.models import Dataset
from service.app import services
from service.auth import current_owner
from service.problems import COMMON_RESPONSES, body

api = APIBlueprint("datasets", __name__, url_prefix="/v1/datasets", abp_tags=[Tag(name="datasets")],
                   abp_security=[{"bearer": []}], abp_responses=COMMON_RESPONSES)


#: ``datasets.name`` is VARCHAR(200): longer is refused here, not by PostgreSQL as a DataError.
MAX_NAME = 200


class UploadForm(NulFree):
    """NUL in a field is refused as that field (PostgreSQL text cannot hold it), by the recipe's one check."""

    file: FileStorage = Field(description=".npz with x, y (optional x_test, y_test) or .csv with a header row")
    name: str | None = Field(None, max_length=MAX_NAME)
    label_column: str | None = Field(
        None, max_length=200, description="For .csv: the column holding the label.")


@api.get("", responses={200: body("Built-in and uploaded datasets")})
def list_datasets():
    """Built-in datasets (scikit-learn's bundled ones, Fashion-MNIST when its Debian package is installed) and
    your uploads; use ``id`` as ``dataset.name``. A built-in's figures are fixed (no file is read here)."""
    svc = services()
    items = [{"id": name, **info.as_dict(), **availability(info, svc.settings)} for name, info in BUILTIN.items()]
    with svc.db.session() as session:
        mine = select(Dataset).where(Dataset.owner == current_owner()).order_by(Dataset.created_at)
        for row in session.execute(mine).scalars():
            items.append({"id": row.id, **row.info, "uploaded_name": row.name, "format": row.format})
    return {"items": items}


@api.post("", responses={201: body("The stored dataset, described")})
def upload_dataset(form: UploadForm):
    """Parsed as data only (no pickles), every array's size checked from its header before it is read;
    stored compressed in its compact dtypes; returns its id."""
    svc = services()
    filename = form.file.filename or ""
    if len(filename) > MAX_NAME or "\x00" in filename:
        raise DatasetError(f"the file name must be at most {MAX_NAME} characters, without NUL",
                           errors=[{"loc": ["file"], "msg": "file name too long or has a NUL character"}])
    fmt = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    stream = form.file.stream  # werkzeug spooled it to a temporary file past 500 kB: parsed from there
    stream.seek(0, io.SEEK_END)
    if stream.tell() > svc.settings.max_upload_bytes:
        raise PayloadTooLarge(f"the upload is over {svc.settings.max_upload_bytes:,} bytes")
    stream.seek(0)
    arrays = uploads.parse(stream, fmt, form.label_column, max_bytes=svc.settings.max_dataset_bytes)
    dataset_id = "ds-" + uuid.uuid4().hex[:16]
    info = uploads.describe(dataset_id, form.name or filename, arrays)
    buffer = uploads.stored(arrays)
    del arrays
    with svc.db.session() as session:
        storage.admit_upload(session, current_owner(), svc.settings, buffer.getbuffer().nbytes)
        session.add(Dataset(id=dataset_id, owner=current_owner(), name=form.name or filename, format=fmt,
                            info=info.as_dict()))
        session.flush()
        artifacts.store(session, buffer, kind="dataset", format="npz", filename=f"{dataset_id}.npz",
                        chunk_bytes=svc.settings.artifact_chunk_bytes, dataset_id=dataset_id)
    return {"id": dataset_id, **info.as_dict()}, 201, {"Location": f"/v1/datasets/{dataset_id}"}



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


__all__ = ["api", "request"]
