"""Deleting finished jobs older than ``TRAINER_RETENTION_DAYS``: ``python -m core.retention --dry-run | --apply``.

A job goes with everything it stored: its models, plots and any checkpoint (artifacts and their chunks),
its epoch history and its log. Kept whatever their age: a pinned job (``POST /v1/jobs/{id}/pin``) and a job
another job names as its ``transfer.base_job_id`` (that job's page links to it; a rerun of its recipe needs
it). An experiment older than the cut goes, with its comparison plots, once none of its jobs is left (all
deleted now or before); one with a job kept stays whole. Off by default: nothing is deleted until an operator
sets the number of days.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timedelta

from pydantic import BaseModel, Field
from sqlalchemy import delete, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from core import experiments
from core.db import Database
from core.models import FINISHED, Artifact, ArtifactChunk, EpochRecord, Experiment, Job, LogLine, utcnow
from core.settings import Settings, load_settings

ENDED = [status.value for status in FINISHED]
BATCH = 500  # jobs per transaction: a first run over years of jobs does not hold one huge transaction


class Freed(BaseModel):
    """What a retention run deleted (or, dry, would delete)."""

    applied: bool = Field(description="False for --dry-run: nothing was deleted")
    older_than: datetime
    jobs: int = 0
    artifacts: int = 0
    bytes: int = Field(0, description="the deleted artifacts' sizes: models, plots, checkpoints")
    epochs: int = 0
    log_lines: int = 0
    kept_pinned: int = Field(0, description="expired jobs kept because they are pinned")
    kept_bases: int = Field(0, description="expired jobs kept because another job transfers from them")
    experiments: int = Field(0, description="experiments older than the cut with none of their jobs left")


def transfer_bases(session: Session) -> set[str]:
    """Every job id some job (of any owner, in any state) names as its transfer base."""
    base = Job.recipe["transfer"]["base_job_id"].as_string()
    return set(session.scalars(select(base).where(base.is_not(None))))


def sweep(db: Database, days: float, apply: bool, now: datetime | None = None) -> Freed:
    """Counts, and with ``apply`` deletes, the finished jobs that ended more than ``days`` days ago."""
    older_than = (now or utcnow()) - timedelta(days=days)
    freed = Freed(applied=apply, older_than=older_than)
    with db.session() as session:
        expired = list(
            session.execute(select(Job.id, Job.pinned).where(Job.status.in_(ENDED), Job.finished_at < older_than)).all()
        )
        bases = transfer_bases(session) if expired else set()
    doomed = []
    for job_id, pinned in expired:
        if pinned:
            freed.kept_pinned += 1
        elif job_id in bases:
            freed.kept_bases += 1
        else:
            doomed.append(job_id)
    for start in range(0, len(doomed), BATCH):
        ids = doomed[start : start + BATCH]
        with db.session() as session:
            count, size = session.execute(
                select(func.count(), func.coalesce(func.sum(Artifact.size), 0)).where(Artifact.job_id.in_(ids))
            ).one()
            freed.jobs += len(ids)
            freed.artifacts += int(count)
            freed.bytes += int(size)
            freed.epochs += _count(session, EpochRecord.job_id, ids)
            freed.log_lines += _count(session, LogLine.job_id, ids)
            if apply:
                _delete(session, ids, older_than)
    with db.session() as session:
        empty = _empty_experiments(session, older_than, set() if apply else set(doomed))
        freed.experiments = len(empty)
        if apply and empty:
            experiments.forget(session, empty)
    return freed


def _empty_experiments(session: Session, older_than: datetime, going: set[str]) -> list[str]:
    """Experiments created before the cut none of whose jobs stays: read after the deletes when applying (a job
    pinned meanwhile keeps its experiment), or counting the jobs ``going`` on a dry run."""
    old = list(session.scalars(select(Experiment.id).where(Experiment.created_at < older_than)))
    if not old:
        return []
    children = session.execute(select(Job.experiment_id, Job.id).where(Job.experiment_id.in_(old))).all()
    kept = {experiment_id for experiment_id, job_id in children if job_id not in going}
    return [experiment_id for experiment_id in old if experiment_id not in kept]


def _count(session: Session, column: InstrumentedAttribute[str], ids: list[str]) -> int:
    return session.scalar(select(func.count()).where(column.in_(ids))) or 0


def _delete(session: Session, ids: list[str], older_than: datetime) -> None:
    """Explicit deletes, not ON DELETE CASCADE: SQLite enforces foreign keys only when told to. The job's own
    delete repeats the conditions, so a job pinned meanwhile stays (its rows were already counted)."""
    artifact_ids = select(Artifact.id).where(Artifact.job_id.in_(ids))
    session.execute(delete(ArtifactChunk).where(ArtifactChunk.artifact_id.in_(artifact_ids)))
    session.execute(delete(Artifact).where(Artifact.job_id.in_(ids)))
    session.execute(delete(EpochRecord).where(EpochRecord.job_id.in_(ids)))
    session.execute(delete(LogLine).where(LogLine.job_id.in_(ids)))
    session.execute(
        delete(Job).where(Job.id.in_(ids), Job.status.in_(ENDED), Job.finished_at < older_than, Job.pinned.is_(False))
    )


def run(settings: Settings, apply: bool, days: float | None = None) -> Freed | None:
    """None when retention is off (no days given and ``TRAINER_RETENTION_DAYS`` unset or 0)."""
    days = settings.retention_days if days is None else days
    if days <= 0:
        return None
    db = Database(settings)
    try:
        return sweep(db, days, apply)
    finally:
        db.engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.retention", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--dry-run", action="store_true", help="count what would be deleted; delete nothing")
    mode.add_argument("--apply", action="store_true", help="delete it")
    parser.add_argument("--days", type=float, help="instead of TRAINER_RETENTION_DAYS")
    args = parser.parse_args(argv)
    freed = run(load_settings(), args.apply, args.days)
    if freed is None:
        print("retention is off: set TRAINER_RETENTION_DAYS (or pass --days) to delete finished jobs", file=sys.stderr)
        return 0
    verb = "deleted" if freed.applied else "would delete"
    print(
        f"{verb} {freed.jobs} finished job(s) older than {freed.older_than.isoformat()}: {freed.artifacts} "
        f"artifact(s), {freed.bytes:,} bytes, {freed.epochs} epoch row(s), {freed.log_lines} log line(s), "
        f"{freed.experiments} experiment(s); kept "
        f"{freed.kept_pinned} pinned and {freed.kept_bases} transfer base(s)",
        file=sys.stderr,
    )
    print(freed.model_dump_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
