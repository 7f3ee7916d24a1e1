"""The job's state machine: queued → running → succeeded | failed | cancelled, and back to queued when a
worker went silent.

Every change of status is a guarded ``UPDATE … WHERE status = :expected`` (and, for a worker, the
attempt it claimed), so a duplicate delivery, a stale worker or a cancel racing completion each
end in exactly one state. Nothing else in the code base writes ``Job.status``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from core import checkpoints, jobs
from core.causes import Cause, JobError
from core.db import rows_matched
from core.errors import Conflict
from core.models import EpochRecord, Job, JobStatus, utcnow

Q, R = JobStatus.QUEUED.value, JobStatus.RUNNING.value


def with_phase(progress: dict[str, Any] | None, phase: str) -> dict[str, Any]:
    return {**(progress or {}), "phase": phase}


# --- user actions ------------------------------------------------------------------------------------------


def cancel(session: Session, job_id: str, owner: str) -> Job:
    """Queued: cancelled now. Running: flagged; the worker stops at the next batch and ends it cancelled."""
    job = jobs.get(session, job_id, owner)
    now = utcnow()
    done = rows_matched(
        session,
        update(Job)
        .where(Job.id == job_id, Job.status == Q)
        .values(
            status=JobStatus.CANCELLED.value,
            finished_at=now,
            version=Job.version + 1,
            progress=with_phase(job.progress, "cancelled"),
            error=JobError.of(Cause.CANCELLED, "cancelled before it started").stored(),
        ),
    )
    if done:  # a job handed back by a stopping worker kept its checkpoint
        checkpoints.discard(session, job_id)
    if not done:
        done = rows_matched(
            session,
            update(Job).where(Job.id == job_id, Job.status == R).values(cancel_requested=True, version=Job.version + 1),
        )
    if not done:
        raise Conflict(f"job {job_id} is already {session.scalar(select(Job.status).where(Job.id == job_id))}")
    session.refresh(job)
    return job


# --- worker side -------------------------------------------------------------------------------------------


def claim(session: Session, job_id: str, worker: str) -> int | None:
    """queued → running in one conditional UPDATE; returns the attempt number, or None if not ours to run."""
    now = utcnow()
    taken = rows_matched(
        session,
        update(Job)
        .where(Job.id == job_id, Job.status == Q)
        .values(
            status=R,
            attempt=Job.attempt + 1,
            started_at=now,
            heartbeat_at=now,
            worker=worker,
            version=Job.version + 1,
            cancel_requested=False,
        ),
    )
    if not taken:
        return None
    return session.scalar(select(Job.attempt).where(Job.id == job_id))


def _mine(job_id: str, attempt: int) -> tuple[ColumnElement[bool], ...]:
    return (Job.id == job_id, Job.status == R, Job.attempt == attempt)


def heartbeat(session: Session, job_id: str, attempt: int) -> tuple[bool, bool]:
    """(still ours, cancel requested)."""
    ours = rows_matched(session, update(Job).where(*_mine(job_id, attempt)).values(heartbeat_at=utcnow()))
    cancel = bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))
    return bool(ours), cancel


def update_running(session: Session, job_id: str, attempt: int, **values: Any) -> bool:
    values.setdefault("heartbeat_at", utcnow())
    return bool(rows_matched(session, update(Job).where(*_mine(job_id, attempt)).values(version=Job.version + 1, **values)))


def record_epoch(
    session: Session,
    job_id: str,
    attempt: int,
    epoch: int,
    phase: str,
    metrics: dict[str, Any],
    progress: dict[str, Any],
    diagnostics: list[dict[str, Any]] | None = None,
) -> bool:
    if not update_running(session, job_id, attempt, progress=progress):
        return False
    session.merge(
        EpochRecord(job_id=job_id, epoch=epoch, attempt=attempt, phase=phase, metrics=metrics, diagnostics=diagnostics)
    )
    return True


def finish(session: Session, job_id: str, attempt: int, status: JobStatus, **values: Any) -> bool:
    """running → final, only by the attempt that holds the job; its checkpoint goes with it."""
    done = bool(
        rows_matched(
            session,
            update(Job)
            .where(*_mine(job_id, attempt))
            .values(status=status.value, finished_at=utcnow(), version=Job.version + 1, **values),
        )
    )
    if done:
        checkpoints.discard(session, job_id)
    return done


def hand_back(session: Session, job_id: str, attempt: int, progress: dict[str, Any]) -> bool:
    """running → queued by the attempt that holds it: its worker is stopping and kept a checkpoint (not deleted
    here), so the next attempt resumes from it. ``handbacks`` in the progress counts these, so a job moved by
    restarts is not failed for running out of ``max_attempts`` (``core.reconcile``). Refused when a cancel was
    asked for meanwhile (a claim would clear the request): the worker ends the job cancelled instead."""
    return bool(
        rows_matched(
            session,
            update(Job)
            .where(*_mine(job_id, attempt), Job.cancel_requested.is_(False))
            .values(
                status=Q,
                dispatched_at=utcnow(),
                version=Job.version + 1,
                progress={**with_phase(progress, Q), HANDBACKS: handbacks(progress) + 1},
            ),
        )
    )


#: The key of ``Job.progress`` that counts an attempt's hand-backs on a worker's stop.
HANDBACKS = "handbacks"


def handbacks(progress: dict[str, Any] | None) -> int:
    return int((progress or {}).get(HANDBACKS, 0))


def fail_running_on(session: Session, worker: str, error: JobError) -> str | None:
    """Fail the job a worker process holds (its process is gone: killed for memory); the job's id, or None
    when that process held no running job (it had just finished, or the job was taken from it)."""
    row = session.execute(select(Job.id, Job.attempt).where(Job.worker == worker, Job.status == R)).first()
    if row is None:
        return None
    job_id, attempt = row
    progress = session.scalar(select(Job.progress).where(Job.id == job_id))
    if not finish(
        session,
        job_id,
        attempt,
        JobStatus.FAILED,
        error=error.stored(),
        progress=with_phase(progress, JobStatus.FAILED.value),
    ):
        return None
    jobs.append_logs(session, job_id, [(utcnow(), "ERROR", f"job failed: {error.type.value}: {error.message}")])
    return job_id


# --- the reconciler's transitions (``core.reconcile`` decides which jobs) ----------------------------------


def redispatch_queued(session: Session, job_id: str, dispatched_before: datetime, now: datetime) -> bool:
    """A queued job nobody took: stamped as sent again, unless a worker claimed it meanwhile."""
    return bool(
        rows_matched(
            session,
            update(Job)
            .where(Job.id == job_id, Job.status == Q, Job.dispatched_at < dispatched_before)
            .values(dispatched_at=now),
        )
    )


def _silent(job_id: str, attempt: int, beat_before: datetime) -> tuple[ColumnElement[bool], ...]:
    return (Job.id == job_id, Job.status == R, Job.attempt == attempt, Job.heartbeat_at < beat_before)


def requeue_silent(session: Session, job_id: str, attempt: int, beat_before: datetime, now: datetime) -> bool:
    """running → queued: the attempt's worker stopped heartbeating (and has not beaten since)."""
    return bool(
        rows_matched(
            session,
            update(Job)
            .where(*_silent(job_id, attempt, beat_before))
            .values(status=Q, dispatched_at=now, version=Job.version + 1),
        )
    )


def fail_silent(session: Session, job_id: str, attempt: int, beat_before: datetime, now: datetime, error: JobError) -> bool:
    """running → failed: the last attempt's worker stopped heartbeating; its checkpoint goes with it."""
    done = bool(
        rows_matched(
            session,
            update(Job)
            .where(*_silent(job_id, attempt, beat_before))
            .values(status=JobStatus.FAILED.value, finished_at=now, version=Job.version + 1, error=error.stored()),
        )
    )
    if done:
        checkpoints.discard(session, job_id)
    return done
