"""Retention deletes old finished jobs with everything they stored, keeps pinned jobs and transfer bases, and the
reconciler removes checkpoints of jobs that ended. Real databases (SQLite and PostgreSQL); the CLI as a process."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from datetime import timedelta

from sqlalchemy import func, select

from core import artifacts, checkpoints
from core.db import Database
from core.experiments import PLOT_KIND
from core.models import Artifact, ArtifactChunk, EpochRecord, Experiment, Job, JobStatus, LogLine, utcnow
from core.queue import make_celery
from core.recipe import Recipe
from core.settings import ROOT
from service.app import create_app
from tests.support import small_recipe, worker_env
from worker.reconciler import Reconciler

MODEL_BYTES, PLOT_BYTES = 5000, 700


def _job(
    db: Database, status: str, ended_days_ago: float | None, recipe: dict | None = None, experiment: str | None = None
) -> str:
    """A job row as a worker leaves it: a model and a plot (in 2 KB chunks: 3 + 1), two epochs, two log lines."""
    job_id = uuid.uuid4().hex
    ended = None if ended_days_ago is None else utcnow() - timedelta(days=ended_days_ago)
    with db.session() as s:
        s.add(
            Job(
                id=job_id,
                owner="default",
                name="old",
                status=status,
                recipe=recipe or Recipe.model_validate(small_recipe()).model_dump(mode="json"),
                attempt=1,
                created_at=utcnow() - timedelta(days=(ended_days_ago or 0) + 1),
                finished_at=ended,
                progress={"epoch": 2, "epochs": 5, "phase": status},
                experiment_id=experiment,
            )
        )
        s.flush()
        for kind, size in (("model", MODEL_BYTES), ("plot", PLOT_BYTES)):
            artifacts.store(
                s, io.BytesIO(b"x" * size), kind=kind, format="h5", filename="f", chunk_bytes=2048, job_id=job_id
            )
        for epoch in (1, 2):
            s.add(EpochRecord(job_id=job_id, epoch=epoch, attempt=1, phase="train", metrics={"loss": 1.0}))
            s.add(LogLine(job_id=job_id, level="INFO", message=f"epoch {epoch}"))
    return job_id


def _experiment(db: Database, created_days_ago: float) -> str:
    experiment_id = uuid.uuid4().hex
    with db.session() as s:
        s.add(
            Experiment(
                id=experiment_id,
                owner="default",
                name="old",
                spec={},
                created_at=utcnow() - timedelta(days=created_days_ago),
            )
        )
        s.flush()
        plot = io.BytesIO(b"p" * 100)
        artifacts.store(s, plot, kind=PLOT_KIND, format="png", filename=f"{experiment_id}.png", chunk_bytes=2048)
    return experiment_id


def _retention(settings, *args: str, **env) -> tuple[dict | None, str]:
    done = subprocess.run(
        [sys.executable, "-m", "core.retention", *args],
        cwd=ROOT,
        env=worker_env(settings, **env),
        capture_output=True,
        text=True,
        check=True,
    )
    return (json.loads(done.stdout) if done.stdout.strip() else None), done.stderr


def _rows(db: Database, job_id: str) -> dict[str, int]:
    with db.session() as s:
        ids = select(Artifact.id).where(Artifact.job_id == job_id)
        return {
            "job": s.scalar(select(func.count()).where(Job.id == job_id)) or 0,
            "artifacts": s.scalar(select(func.count()).where(Artifact.job_id == job_id)) or 0,
            "chunks": s.scalar(select(func.count()).where(ArtifactChunk.artifact_id.in_(ids))) or 0,
            "epochs": s.scalar(select(func.count()).where(EpochRecord.job_id == job_id)) or 0,
            "logs": s.scalar(select(func.count()).where(LogLine.job_id == job_id)) or 0,
        }


def test_retention_deletes_old_finished_jobs_but_keeps_pinned_ones_and_transfer_bases(isolated_backend):
    settings = isolated_backend
    db = Database(settings)
    old = [_job(db, status, 10) for status in ("succeeded", "failed", "cancelled")]
    recent = _job(db, "succeeded", 1)
    running = _job(db, "running", None)
    pinned, unpinned, base = (_job(db, "succeeded", 30) for _ in range(3))
    transfer = {**Recipe.model_validate(small_recipe()).model_dump(mode="json"), "transfer": {"base_job_id": base}}
    user = _job(db, "succeeded", 1, recipe=transfer)

    client = create_app(settings).test_client()
    assert client.post(f"/v1/jobs/{pinned}/pin").json["pinned"] is True
    assert client.post(f"/v1/jobs/{unpinned}/pin").json["pinned"] is True
    assert client.delete(f"/v1/jobs/{unpinned}/pin").json["pinned"] is False
    assert client.get(f"/v1/jobs/{recent}").json["pinned"] is False

    off, said = _retention(settings, "--apply")  # TRAINER_RETENTION_DAYS unset: off, nothing deleted
    assert off is None and "retention is off" in said
    doomed = [*old, unpinned]
    dry, _ = _retention(settings, "--dry-run", TRAINER_RETENTION_DAYS=7)
    expected = {"jobs": 4, "artifacts": 8, "bytes": 4 * (MODEL_BYTES + PLOT_BYTES), "epochs": 8, "log_lines": 8}
    assert {k: dry[k] for k in expected} == expected
    assert (dry["applied"], dry["kept_pinned"], dry["kept_bases"]) == (False, 1, 1)
    assert all(_rows(db, job_id)["chunks"] == 4 for job_id in doomed)  # a dry run deletes nothing

    applied, said = _retention(settings, "--apply", TRAINER_RETENTION_DAYS=7)
    assert applied == {**dry, "applied": True, "older_than": applied["older_than"]}
    assert "deleted 4 finished job(s)" in said and f"{4 * (MODEL_BYTES + PLOT_BYTES):,} bytes" in said
    for job_id in doomed:
        assert _rows(db, job_id) == {"job": 0, "artifacts": 0, "chunks": 0, "epochs": 0, "logs": 0}
        assert client.get(f"/v1/jobs/{job_id}").status_code == 404
    for job_id in (recent, running, pinned, base, user):
        assert _rows(db, job_id) == {"job": 1, "artifacts": 2, "chunks": 4, "epochs": 2, "logs": 2}
    again, _ = _retention(settings, "--apply", "--days", "7")
    assert again["jobs"] == 0 and again["kept_pinned"] == 1 and again["kept_bases"] == 1
    db.engine.dispose()


def test_an_old_experiment_goes_with_its_last_job_and_stays_while_one_is_kept(isolated_backend):
    settings = isolated_backend
    db = Database(settings)
    gone, kept, young = _experiment(db, 20), _experiment(db, 20), _experiment(db, 1)
    _experiment(db, 20)  # old, and none of its jobs left (a user deleted them): it goes too
    for experiment, ages in ((gone, (10, 12)), (kept, (10, 2)), (young, (10,))):
        for days in ages:
            _job(db, "succeeded", days, experiment=experiment)

    dry, _ = _retention(settings, "--dry-run", "--days", "7")
    assert (dry["jobs"], dry["experiments"]) == (4, 2)  # gone's two jobs, one of kept's, young's; gone and childless
    applied, said = _retention(settings, "--apply", "--days", "7")
    assert (applied["jobs"], applied["experiments"]) == (4, 2) and "2 experiment(s)" in said
    with db.session() as s:
        assert set(s.scalars(select(Experiment.id))) == {kept, young}
        plots = set(s.scalars(select(Artifact.filename).where(Artifact.job_id.is_(None))))
        assert plots == {f"{kept}.png", f"{young}.png"}
        assert s.scalar(select(func.count()).where(Job.experiment_id == kept)) == 1
    client = create_app(settings).test_client()
    assert client.get(f"/v1/experiments/{gone}").status_code == 404
    db.engine.dispose()


def test_reconciler_removes_checkpoints_of_jobs_that_ended(isolated_backend):
    settings = isolated_backend
    db = Database(settings)
    ended, running = _job(db, JobStatus.CANCELLED.value, 0), _job(db, JobStatus.RUNNING.value, None)
    with db.session() as s:
        for job_id in (ended, running):
            checkpoints.save(s, job_id, b"c" * 3000, 1024)
    reconciler = Reconciler(settings, make_celery(settings))
    reconciler.db = db
    assert reconciler.run_once()["checkpoints_removed"] == [ended]
    with db.session() as s:
        assert checkpoints.find(s, ended) is None
        assert checkpoints.find(s, running) is not None
        assert s.scalar(select(func.count()).where(Artifact.job_id == ended)) == 2  # its model and plot stay
    db.engine.dispose()
