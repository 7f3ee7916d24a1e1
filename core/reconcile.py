"""The reconciler's policy: which queued jobs to send again and which silent running jobs to requeue or
fail. The transitions themselves are ``core.job_state``'s guarded updates.

The broker's own redelivery is a bonus; this is the guarantee (the embedded SQLAlchemy transport has no
redelivery at all).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import job_state, jobs
from core.causes import Cause, JobError
from core.models import Job, JobStatus, utcnow
from core.settings import Settings


def reconcile(session: Session, settings: Settings, now: datetime | None = None) -> dict[str, list[str]]:
    """Find queued jobs nobody took and running jobs whose worker went silent.

    Returns ``{"redispatch": [...], "failed": [...], "requeued": [...]}``; the caller sends the redispatch ids
    again after this transaction commits (``requeued``: those of them a silent worker held, for the metrics).
    """
    now = now or utcnow()
    out: dict[str, list[str]] = {"redispatch": [], "failed": [], "requeued": []}
    stale_queue = now - timedelta(seconds=settings.redispatch_after_s)
    for job_id in session.execute(
        select(Job.id).where(Job.status == JobStatus.QUEUED.value, Job.dispatched_at < stale_queue)
    ).scalars():
        if job_state.redispatch_queued(session, job_id, stale_queue, now):
            out["redispatch"].append(job_id)
    stale_beat = now - timedelta(seconds=settings.heartbeat_timeout_s)
    for job_id, attempt in session.execute(
        select(Job.id, Job.attempt).where(Job.status == JobStatus.RUNNING.value, Job.heartbeat_at < stale_beat)
    ).all():
        if attempt < settings.max_attempts:
            if job_state.requeue_silent(session, job_id, attempt, stale_beat, now):
                out["redispatch"].append(job_id)
                out["requeued"].append(job_id)
                jobs.append_logs(
                    session,
                    job_id,
                    [(now, "WARNING", f"attempt {attempt}: the worker stopped heartbeating; the job is queued again")],
                )
        elif job_state.fail_silent(
            session,
            job_id,
            attempt,
            stale_beat,
            now,
            JobError.of(
                Cause.WORKER_LOST,
                f"the worker stopped heartbeating on each of {attempt} attempts (its process "
                "was killed or the job may need more memory than the worker has)",
            ),
        ):
            out["failed"].append(job_id)
    return out
