"""Uploaded datasets kept in the database, and the catalogue an owner sees: the built-ins and their own uploads.

An upload is parsed and described before any transaction opens (a large file takes seconds to read); then its
quota is checked and its row and compressed file are stored in one transaction. The API's view only reads the
form and shapes the answer.
"""

from __future__ import annotations

import io
import uuid
from typing import IO, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import artifacts, storage, uploads
from core.datasets import BUILTIN, DatasetInfo, availability
from core.db import Database
from core.errors import DatasetError, PayloadTooLarge
from core.models import Dataset
from core.settings import Settings

#: ``datasets.name`` is VARCHAR(200): longer is refused here, not by PostgreSQL as a DataError.
MAX_NAME = 200


def catalogue(session: Session, owner: str, settings: Settings) -> list[dict[str, Any]]:
    """The built-ins (their figures are fixed: no file is read) with whether they are installed, then the
    owner's uploads, oldest first; each item's ``id`` is what a recipe's ``dataset.name`` takes."""
    items = [{"id": name, **info.as_dict(), **availability(info, settings)} for name, info in BUILTIN.items()]
    mine = select(Dataset).where(Dataset.owner == owner).order_by(Dataset.created_at)
    for row in session.execute(mine).scalars():
        items.append({"id": row.id, **row.info, "uploaded_name": row.name, "format": row.format})
    return items


def store_upload(
    db: Database,
    owner: str,
    settings: Settings,
    stream: IO[bytes],
    filename: str,
    name: str | None = None,
    label_column: str | None = None,
) -> DatasetInfo:
    """Parse ``stream`` as data only (``.npz`` or ``.csv``, by ``filename``'s extension), every array's size
    checked from its header before it is read; store it compressed in its compact dtypes under a new id
    (the returned info's ``name``)."""
    if len(filename) > MAX_NAME or "\x00" in filename:
        raise DatasetError(
            f"the file name must be at most {MAX_NAME} characters, without NUL",
            errors=[{"loc": ["file"], "msg": "file name too long or has a NUL character"}],
        )
    fmt = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    stream.seek(0, io.SEEK_END)
    if stream.tell() > settings.max_upload_bytes:
        raise PayloadTooLarge(f"the upload is over {settings.max_upload_bytes:,} bytes")
    stream.seek(0)
    arrays = uploads.parse(stream, fmt, label_column, max_bytes=settings.max_dataset_bytes)
    dataset_id = "ds-" + uuid.uuid4().hex[:16]
    info = uploads.describe(dataset_id, name or filename, arrays)
    buffer = uploads.stored(arrays)
    del arrays
    with db.session() as session:
        storage.admit_upload(session, owner, settings, buffer.getbuffer().nbytes)
        session.add(Dataset(id=dataset_id, owner=owner, name=name or filename, format=fmt, info=info.as_dict()))
        session.flush()
        artifacts.store(
            session,
            buffer,
            kind="dataset",
            format="npz",
            filename=f"{dataset_id}.npz",
            chunk_bytes=settings.artifact_chunk_bytes,
            dataset_id=dataset_id,
        )
    return info
