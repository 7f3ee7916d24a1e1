"""Files kept in the database in chunks, written once and streamed back.

A single bytea/BLOB value is read whole into memory and caps at 1 GB, so a file is stored as rows of
at most ``artifact_chunk_bytes`` with its total size and sha256 on the artifact row.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterator
from typing import BinaryIO

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core.db import Database
from core.errors import CorruptArtifact
from core.models import Artifact, ArtifactChunk

log = logging.getLogger(__name__)


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
        id=uuid.uuid4().hex,
        job_id=job_id,
        dataset_id=dataset_id,
        kind=kind,
        format=format,
        filename=filename,
        size=0,
        sha256="",
        chunk_count=0,
    )
    session.add(artifact)
    session.flush()
    digest, size, seq = hashlib.sha256(), 0, 0
    while block := source.read(chunk_bytes):
        digest.update(block)
        size += len(block)
        session.add(ArtifactChunk(artifact_id=artifact.id, seq=seq, data=block, sha256=hashlib.sha256(block).hexdigest()))
        session.flush()
        seq += 1
    artifact.size, artifact.sha256, artifact.chunk_count = size, digest.hexdigest(), seq
    return artifact


def _fetch(db: Database, artifact_id: str, seq: int) -> tuple[bytes, str | None] | None:
    with db.session() as session:
        conn = session.connection()
        if conn.dialect.name == "postgresql":
            import psycopg  # the PostgreSQL driver; the API on SQLite never loads it

            raw = conn.connection.dbapi_connection
            if isinstance(raw, psycopg.Connection):
                # bytea in binary form: psycopg's default text (hex) form reads about 3× slower
                with raw.cursor(binary=True) as cur:
                    cur.execute(
                        "SELECT data, sha256 FROM artifact_chunks WHERE artifact_id = %s AND seq = %s", (artifact_id, seq)
                    )
                    row = cur.fetchone()
                return None if row is None else (row[0], row[1])
        found = session.execute(
            select(ArtifactChunk.data, ArtifactChunk.sha256).where(
                ArtifactChunk.artifact_id == artifact_id, ArtifactChunk.seq == seq
            )
        ).one_or_none()
        return None if found is None else (found.data, found.sha256)


def _chunk(db: Database, artifact: Artifact, seq: int) -> tuple[bytes, bool]:
    """(bytes, whether they were checked against the chunk's own sha256)."""
    row = _fetch(db, artifact.id, seq)
    if row is None:
        raise CorruptArtifact(f"stored file {artifact.filename} is missing part {seq}; it cannot be served")
    data, expected = bytes(row[0]), row[1]
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        log.error("artifact %s part %d fails its sha256 check", artifact.id, seq)
        raise CorruptArtifact(f"stored file {artifact.filename} fails its sha256 check; it cannot be served")
    return data, expected is not None


def stream(db: Database, artifact: Artifact) -> Iterator[bytes]:
    """The chunks one query at a time (a download never holds more than one chunk in memory), each checked
    against its sha256. The first chunk is read and checked before this returns, so a corrupted
    single-chunk file — most models — is an error response, never a download; a later bad chunk aborts
    the transfer short of its Content-Length."""
    first, checked = _chunk(db, artifact, 0) if artifact.chunk_count else (b"", True)

    def rest() -> Iterator[bytes]:
        if artifact.chunk_count:
            yield first
        # chunks stored before per-chunk digests existed are checked against the whole file's instead
        digest = None if checked else hashlib.sha256(first)
        for seq in range(1, artifact.chunk_count):
            data, _ = _chunk(db, artifact, seq)
            if digest is not None:
                digest.update(data)
            yield data
        if digest is not None and digest.hexdigest() != artifact.sha256:
            log.error("artifact %s fails its whole-file sha256 check", artifact.id)
            raise CorruptArtifact(f"stored file {artifact.filename} fails its sha256 check")

    return rest()


def read_all(db: Database, artifact: Artifact) -> bytes:
    return b"".join(stream(db, artifact))


def delete_for(
    session: Session, *, job_id: str | None = None, dataset_id: str | None = None, kind: str | None = None
) -> None:
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
