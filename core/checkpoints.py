"""A running job's checkpoint: one stored artifact per job, replaced after each saved epoch and deleted
when the job ends (``core.job_state.finish``), so a requeued attempt resumes where the last one stopped."""

from __future__ import annotations

import io

from sqlalchemy.orm import Session

from core import artifacts
from core.models import Artifact

CHECKPOINT = "checkpoint"


def save(session: Session, job_id: str, data: bytes, chunk_bytes: int) -> None:
    """Replaces the job's previous checkpoint in the caller's transaction (with the epoch it belongs to)."""
    discard(session, job_id)
    artifacts.store(
        session,
        io.BytesIO(data),
        kind=CHECKPOINT,
        format="npz",
        filename=f"{job_id}-checkpoint.npz",
        chunk_bytes=chunk_bytes,
        job_id=job_id,
    )


def find(session: Session, job_id: str) -> Artifact | None:
    return artifacts.find(session, job_id, CHECKPOINT)


def discard(session: Session, job_id: str) -> None:
    artifacts.delete_for(session, job_id=job_id, kind=CHECKPOINT)
