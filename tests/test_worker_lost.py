"""No job is lost when its worker dies: the reconciler requeues it and another worker finishes it."""

from __future__ import annotations

import signal
from datetime import timedelta

import httpx
import pytest

from core import admission, checkpoints, job_state
from core.db import Database
from core.models import Job, JobStatus, utcnow
from core.recipe import Recipe
from core.reconcile import reconcile
from service.app import create_app
from tests.conftest import LiveServer
from tests.support import small_recipe, start_worker, wait_for, wait_until


@pytest.mark.worker
def test_sigkilled_worker_job_is_requeued_and_finished_by_another(isolated_backend, tmp_path):
    settings = isolated_backend
    server = LiveServer(create_app(settings))
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            first = start_worker(settings, tmp_path / "a.log")
            recipe = small_recipe(**{"training.epochs": 60, "training.batch_size": 4})
            job = http.post("/v1/jobs", json=recipe).json()
            wait_until(lambda: len(http.get(f"/v1/jobs/{job['id']}").json()["history"]) >= 3, timeout=120)
            first.stop(signal.SIGKILL)  # parent and child, mid-training
            killed = http.get(f"/v1/jobs/{job['id']}").json()
            assert killed["status"] == "running"
            k = len(killed["history"])

            second = start_worker(settings, tmp_path / "b.log", TRAINER_HEARTBEAT_TIMEOUT_S=3)
            try:
                done = wait_for(http, job["id"], {"succeeded", "failed"}, timeout=180)
            finally:
                second.stop()
            assert done["status"] == "succeeded", done["error"]
            assert done["attempt"] == 2
            history = done["history"]
            assert [h["epoch"] for h in history] == list(range(1, 61))
            # resumed from its checkpoint: the epochs done before the kill stay attempt 1's
            assert [h["attempt"] for h in history[:k]] == [1] * k
            assert [h["attempt"] for h in history[k:]] == [2] * (60 - k)
            logs = http.get(f"/v1/jobs/{job['id']}/logs").text
            assert "queued again" in logs and f"resuming from the checkpoint after epoch {k}" in logs
            assert done["result"]["sparsity"]["overall"] == pytest.approx(0.5, abs=0.02)  # the schedule's target
            with Database(settings).session() as session:
                assert checkpoints.find(session, job["id"]) is None  # deleted when the job ended
    finally:
        server.close()


def _running_job(db: Database, attempt: int, beat_age_s: float) -> str:
    recipe = Recipe.model_validate(small_recipe())
    with db.session() as s:
        job = Job(
            id=f"{attempt:02d}{utcnow().timestamp():.6f}".replace(".", "")[:32].ljust(32, "0"),
            owner="default",
            name="x",
            status=JobStatus.RUNNING.value,
            recipe=recipe.model_dump(mode="json"),
            attempt=attempt,
            heartbeat_at=utcnow() - timedelta(seconds=beat_age_s),
            dispatched_at=utcnow(),
            progress={},
        )
        s.add(job)
    return job.id


def test_reconciler_requeues_silent_jobs_and_fails_them_after_max_attempts(db, backend):
    fresh = _running_job(db, attempt=1, beat_age_s=1)
    silent = _running_job(db, attempt=1, beat_age_s=backend.heartbeat_timeout_s + 5)
    exhausted = _running_job(db, attempt=backend.max_attempts, beat_age_s=backend.heartbeat_timeout_s + 5)
    with db.session() as s:
        found = reconcile(s, backend)
    assert silent in found["redispatch"] and exhausted in found["failed"]
    assert fresh not in found["redispatch"] + found["failed"]
    with db.session() as s:
        assert s.get(Job, silent).status == "queued"
        assert s.get(Job, fresh).status == "running"
        lost = s.get(Job, exhausted)
        assert lost.status == "failed" and lost.error["type"] == "worker_lost"


def test_reconciler_resends_queued_jobs_nobody_took(db, backend):
    with db.session() as s:
        job = admission.create(s, Recipe.model_validate(small_recipe()), "default", backend)
        job.dispatched_at = utcnow() - timedelta(seconds=backend.redispatch_after_s + 5)
    with db.session() as s:
        assert job.id in reconcile(s, backend)["redispatch"]
    with db.session() as s:  # sent again just now: not again on the next round
        assert job.id not in reconcile(s, backend)["redispatch"]
        job_state.cancel(s, job.id, "default")


def test_duplicate_delivery_claims_once_and_a_stale_attempt_cannot_finish(db, backend):
    with db.session() as s:
        job = admission.create(s, Recipe.model_validate(small_recipe()), "default", backend)
    with db.session() as s:
        assert job_state.claim(s, job.id, "w1") == 1
    with db.session() as s:
        assert job_state.claim(s, job.id, "w2") is None
    with db.session() as s:
        assert not job_state.finish(s, job.id, 2, JobStatus.SUCCEEDED)  # not the attempt that holds it
        assert job_state.finish(s, job.id, 1, JobStatus.FAILED, error={"type": "test"})
    with db.session() as s:
        assert not job_state.finish(s, job.id, 1, JobStatus.SUCCEEDED)  # already final: exactly one end
        assert s.get(Job, job.id).status == "failed"
