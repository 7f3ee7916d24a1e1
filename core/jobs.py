"""Jobs as stored: reading them (one, a page, their history, diagnostics, logs and artifacts), appending to
their logs, and removing a finished one.

Admission (``core.admission``) creates jobs; every change of status is ``core.job_state``'s.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from core import artifacts, storage
from core.db import rows_matched
from core.errors import Conflict, NotFound, RecipeError
from core.models import FINISHED, Artifact, EpochRecord, Job, JobStatus, LogLine

# --- reading -----------------------------------------------------------------------------------------------


def get(session: Session, job_id: str, owner: str) -> Job:
    job = session.execute(select(Job).where(Job.id == job_id, Job.owner == owner)).scalar_one_or_none()
    if job is None:
        raise NotFound(f"no job {job_id!r}")
    return job


def get_any(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"no job {job_id!r}")
    return job


def version(session: Session, job_id: str, owner: str) -> int:
    """What a poller's If-None-Match is compared with: one column, no job body."""
    found = session.scalar(select(Job.version).where(Job.id == job_id, Job.owner == owner))
    if found is None:
        raise NotFound(f"no job {job_id!r}")
    return found


def history(session: Session, job_id: str) -> list[dict[str, Any]]:
    rows = session.execute(  # not the diagnostics column: it has an endpoint of its own
        select(EpochRecord.epoch, EpochRecord.phase, EpochRecord.attempt, EpochRecord.metrics)
        .where(EpochRecord.job_id == job_id)
        .order_by(EpochRecord.epoch)
    ).all()
    return [{"epoch": epoch, "phase": phase, "attempt": attempt, **metrics} for epoch, phase, attempt, metrics in rows]


def logs(session: Session, job_id: str) -> list[LogLine]:
    return list(session.execute(select(LogLine).where(LogLine.job_id == job_id).order_by(LogLine.id)).scalars())


def log_line_count(session: Session, job_id: str) -> int:
    """Lines already stored (earlier attempts): they count against ``max_log_lines_per_job``."""
    return session.scalar(select(func.count()).select_from(LogLine).where(LogLine.job_id == job_id)) or 0


def model_artifacts(session: Session, job_id: str) -> dict[str, Artifact]:
    rows = session.execute(select(Artifact).where(Artifact.job_id == job_id, Artifact.kind == "model")).scalars()
    return {a.format: a for a in rows}


def plot_artifacts(session: Session, job_id: str) -> dict[str, Artifact]:
    rows = session.execute(select(Artifact).where(Artifact.job_id == job_id, Artifact.kind == "plot")).scalars()
    return {a.filename.removesuffix(".png"): a for a in rows}


def _encode_cursor(job: Job) -> str:
    return base64.urlsafe_b64encode(json.dumps([job.created_at.isoformat(), job.id]).encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created, job_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(created), str(job_id)
    except (ValueError, TypeError) as exc:
        raise RecipeError(["query", "cursor"], "not a cursor this service issued") from exc


def page(session: Session, owner: str, status: str | None, limit: int, cursor: str | None) -> tuple[list[Job], str | None]:
    """Newest first; keyset pagination so a page is stable while new jobs arrive."""
    query = select(Job).where(Job.owner == owner)
    if status:
        query = query.where(Job.status == status)
    if cursor:
        created, job_id = _decode_cursor(cursor)
        query = query.where((Job.created_at < created) | ((Job.created_at == created) & (Job.id < job_id)))
    rows = list(session.execute(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)).scalars())
    next_cursor = _encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


def diagnostics(session: Session, job_id: str) -> list[dict[str, Any]]:
    rows = session.execute(
        select(EpochRecord.epoch, EpochRecord.phase, EpochRecord.diagnostics)
        .where(EpochRecord.job_id == job_id)
        .order_by(EpochRecord.epoch)
    ).all()
    return [{"epoch": epoch, "phase": phase, "layers": layers or []} for epoch, phase, layers in rows]


def counts(session: Session) -> dict[str, int]:
    return dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())


def failures_by_type(session: Session) -> dict[str, int]:
    """Failed jobs by ``error.type``, every owner's, grouped in the database (JSON path on SQLite and PostgreSQL)."""
    kind = Job.error["type"].as_string()
    rows = session.execute(select(kind, func.count()).where(Job.status == JobStatus.FAILED.value).group_by(kind)).all()
    return {str(cause or "unknown"): int(n) for cause, n in rows}


# --- writing ----------------------------------------------------------------------------------------------


def append_logs(session: Session, job_id: str, lines: list[tuple[datetime, str, str]]) -> None:
    session.add_all(LogLine(job_id=job_id, at=at, level=level, message=msg) for at, level, msg in lines)


def pin(session: Session, job_id: str, owner: str, pinned: bool) -> Job:
    """A pinned job is kept by retention (``core.retention``) however old it gets."""
    job = get(session, job_id, owner)
    if job.pinned != pinned:
        job.pinned = pinned
        job.version += 1  # the job's ETag changes with what a client sees
    return job


def remove(session: Session, job_id: str, owner: str) -> None:
    job = get(session, job_id, owner)
    if JobStatus(job.status) not in FINISHED:
        raise Conflict(f"job {job_id} is {job.status}: cancel it first")
    storage.refuse_removing_a_base(session, job_id, owner)
    artifacts.delete_for(session, job_id=job_id)
    session.execute(delete(EpochRecord).where(EpochRecord.job_id == job_id))
    session.execute(delete(LogLine).where(LogLine.job_id == job_id))
    gone = rows_matched(session, delete(Job).where(Job.id == job_id, Job.status.in_([s.value for s in FINISHED])))
    if not gone:
        raise Conflict(f"job {job_id} changed while being deleted")
