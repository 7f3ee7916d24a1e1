"""Files kept in the database in chunks, written once and streamed back.

A single bytea/BLOB value is read whole into memory and caps at 1 GB, so a file is stored as rows of
at most ``artifact_chunk_bytes`` with its total size and sha256 on the artifact row.
"""
from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from typing import BinaryIO

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core.db import Database
from core.models import Artifact, ArtifactChunk


def store(
    session: Session,
    source: BinaryIO,
    *,
    kind: str,
    format: str,
    filename: str,
    chunk_bytes: int,
    job_id: str | None = None,
    dataset_id: str | None = None,
) -> Artifact:
    """Write ``source`` chunk by chunk in the caller's transaction; the artifact exists once it commits."""
    artifact = Artifact(
        id=uuid.uuid4().hex, job_id=job_id, dataset_id=dataset_id, kind=kind, format=format,
        filename=filename, size=0, sha256="", chunk_count=0,
    )
    session.add(artifact)
    session.flush()
    digest, size, seq = hashlib.sha256(), 0, 0
    while block := source.read(chunk_bytes):
        digest.update(block)
        size += len(block)
        session.add(ArtifactChunk(artifact_id=artifact.id, seq=seq, data=block))
        session.flush()
        seq += 1
    artifact.size, artifact.sha256, artifact.chunk_count = size, digest.hexdigest(), seq
    return artifact


def stream(db: Database, artifact: Artifact) -> Iterator[bytes]:
    """Yield the chunks one query at a time so a download never holds more than one chunk in memory."""
    for seq in range(artifact.chunk_count):
        with db.session() as session:
            data = session.execute(
                select(ArtifactChunk.data).where(
                    ArtifactChunk.artifact_id == artifact.id, ArtifactChunk.seq == seq
                )
            ).scalar_one()
        yield bytes(data)


def read_all(db: Database, artifact: Artifact) -> bytes:
    return b"".join(stream(db, artifact))


def delete_for(session: Session, *, job_id: str | None = None, dataset_id: str | None = None,
               kind: str | None = None) -> None:
    """Explicit, not only ON DELETE CASCADE: SQLite enforces foreign keys only when told to."""
    column = Artifact.job_id if job_id is not None else Artifact.dataset_id
    where = [column == (job_id if job_id is not None else dataset_id)]
    if kind is not None:
        where.append(Artifact.kind == kind)
    ids = select(Artifact.id).where(*where)
    session.execute(delete(ArtifactChunk).where(ArtifactChunk.artifact_id.in_(ids)))
    session.execute(delete(Artifact).where(*where))


def find(session: Session, job_id: str, kind: str) -> Artifact | None:
    return session.execute(select(Artifact).where(Artifact.job_id == job_id, Artifact.kind == kind)).scalars().first()
