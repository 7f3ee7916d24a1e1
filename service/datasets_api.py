"""/v1/datasets: the built-ins and a user's uploads (.npz or .csv), stored in the database."""
from __future__ import annotations

import io
import uuid

import numpy as np
from flask import request
from flask_openapi3 import APIBlueprint, FileStorage, Tag
from pydantic import BaseModel, Field
from sqlalchemy import select

from core import artifacts, uploads
from core.datasets import BUILTIN
from core.errors import DatasetError
from core.models import Dataset
from service.app import services
from service.auth import current_owner
from service.problems import COMMON_RESPONSES, body

api = APIBlueprint("datasets", __name__, url_prefix="/v1/datasets", abp_tags=[Tag(name="datasets")],
                   abp_security=[{"bearer": []}], abp_responses=COMMON_RESPONSES)


class UploadForm(BaseModel):
    file: FileStorage = Field(description=".npz with x, y (optional x_test, y_test) or .csv with a header row")
    name: str | None = Field(None, max_length=200)
    label_column: str | None = Field(None, max_length=200, description="For .csv: the column holding the label.")


@api.get("", responses={200: body("Built-in and uploaded datasets")})
def list_datasets():
    """Built-in datasets (scikit-learn's bundled ones) and your uploads; use ``id`` as ``dataset.name``."""
    svc = services()
    items = [{"id": name, **info.as_dict()} for name, info in BUILTIN.items()]
    with svc.db.session() as session:
        mine = select(Dataset).where(Dataset.owner == current_owner()).order_by(Dataset.created_at)
        for row in session.execute(mine).scalars():
            items.append({"id": row.id, **row.info, "uploaded_name": row.name, "format": row.format})
    return {"items": items}


@api.post("", responses={201: body("The stored dataset, described")})
def upload_dataset(form: UploadForm):
    """Parsed as data only (no pickles); stored as .npz in the database; returns its id."""
    svc = services()
    filename = form.file.filename or ""
    fmt = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    data = form.file.read(svc.settings.max_upload_bytes + 1)
    if len(data) > svc.settings.max_upload_bytes:
        raise DatasetError(f"the upload is over {svc.settings.max_upload_bytes:,} bytes")
    arrays = uploads.parse(data, fmt, form.label_column)
    dataset_id = "ds-" + uuid.uuid4().hex[:16]
    info = uploads.describe(dataset_id, form.name or filename, arrays)
    buffer = io.BytesIO()
    extra = {} if arrays.x_test is None else {"x_test": arrays.x_test, "y_test": arrays.y_test}
    np.savez(buffer, x=arrays.x, y=arrays.y, **extra)
    buffer.seek(0)
    with svc.db.session() as session:
        session.add(Dataset(id=dataset_id, owner=current_owner(), name=form.name or filename, format=fmt,
                            info=info.as_dict()))
        session.flush()
        artifacts.store(session, buffer, kind="dataset", format="npz", filename=f"{dataset_id}.npz",
                        chunk_bytes=svc.settings.artifact_chunk_bytes, dataset_id=dataset_id)
    return {"id": dataset_id, **info.as_dict()}, 201, {"Location": f"/v1/datasets/{dataset_id}"}


__all__ = ["api", "request"]
