"""The reconciler's policy: which queued jobs to send again and which silent running jobs to requeue or
fail. The transitions themselves are ``core.job_state``'s guarded updates.

The broker's own redelivery is a bonus; this is the guarantee (the embedded SQLAlchemy transport has no
redelivery at all).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import job_state, jobs
from core.causes import Cause, JobError
from core.models import Job, JobStatus, utcnow
from core.settings import Settings


def reconcile(
    session: Session,
    settings: Settings,
    now: datetime | None = None,
    held: Callable[[], set[str] | None] = lambda: None,
    suspects: set[str] | None = None,
) -> dict[str, list[str]]:
    """Find queued jobs nobody took and running jobs whose worker went silent.

    ``held`` names the jobs whose message the broker still holds (``core.backlog.held_job_ids``; None: it
    cannot tell); a stale queued job among them is waiting in a backlog, not lost, and is not sent again.
    Asked only when some queued job is stale. With ``suspects`` (the caller's set, kept between rounds) a job
    missing from the broker is re-sent only when it was already missing the round before: a worker that has
    just taken a message (SQLAlchemy transport: the row is invisible) claims the job within a second, so one
    look can mistake a delivery for a loss. Returns ``{"redispatch": [...], "failed": [...], "in_queue":
    [...]}``; the caller sends the redispatched ids again after this transaction commits.
    """
    now = now or utcnow()
    out: dict[str, list[str]] = {"redispatch": [], "failed": [], "in_queue": [], "requeued": []}
    stale_queue = now - timedelta(seconds=settings.redispatch_after_s)
    stale = list(
        session.execute(
            select(Job.id).where(Job.status == JobStatus.QUEUED.value, Job.dispatched_at < stale_queue)
        ).scalars()
    )
    in_broker = (held() or set()) if stale else set()
    missing = []
    for job_id in stale:
        if job_id in in_broker:
            out["in_queue"].append(job_id)
        elif suspects is not None and job_id not in suspects:
            missing.append(job_id)  # sent again next round if it is still queued and still missing
        elif job_state.redispatch_queued(session, job_id, stale_queue, now):
            out["redispatch"].append(job_id)
    if suspects is not None:
        suspects.clear()
        suspects.update(missing)
    stale_beat = now - timedelta(seconds=settings.heartbeat_timeout_s)
    for job_id, attempt, progress in session.execute(
        select(Job.id, Job.attempt, Job.progress).where(Job.status == JobStatus.RUNNING.value, Job.heartbeat_at < stale_beat)
    ).all():
        if attempt - job_state.handbacks(progress) < settings.max_attempts:  # a worker's stop is not a lost attempt
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
