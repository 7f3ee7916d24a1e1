"""A running job's checkpoint: one stored artifact per job, replaced after each saved epoch and deleted
when the job ends (``core.job_state.finish``), so a requeued attempt resumes where the last one stopped."""

from __future__ import annotations

import io

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import artifacts
from core.models import FINISHED, Artifact, Job

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


def remove_orphans(session: Session) -> tuple[list[str], int]:
    """Checkpoints of jobs that ended: a job's end deletes its checkpoint, but one kept by a hand-back
    (``core.job_state.hand_back``) outlives a cancel or a failure recorded by other means, and older
    versions left some. Returns the jobs and the bytes freed; the reconciler calls it each round."""
    rows = session.execute(
        select(Artifact.job_id, Artifact.size)
        .join(Job, Job.id == Artifact.job_id)
        .where(Artifact.kind == CHECKPOINT, Job.status.in_([status.value for status in FINISHED]))
    ).all()
    job_ids = sorted({job_id for job_id, _ in rows if job_id})
    for job_id in job_ids:
        discard(session, job_id)
    return job_ids, sum(size for _, size in rows)
