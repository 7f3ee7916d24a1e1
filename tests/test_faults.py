"""Faults with real processes: the broker and the database go away and come back; nothing is lost.

Every server killed here is a throwaway one on a spare port (stack/databases.py), never the shared ones.
"""

from __future__ import annotations

import time

import httpx
import pytest
from sqlalchemy import text

from core.db import Database
from core.migrate import upgrade
from core.settings import load_settings
from service.app import create_app
from stack.databases import ThrowawayPostgres, ThrowawayRedis
from tests.conftest import FAST, LiveServer
from tests.support import small_recipe, start_worker, wait_for, wait_until

pytestmark = pytest.mark.worker


@pytest.fixture
def redis_server():
    server = ThrowawayRedis().start()
    yield server
    server.close()


@pytest.fixture
def postgres_server():
    server = ThrowawayPostgres().start()
    yield server
    server.close()


def serve(settings):
    server = LiveServer(create_app(settings))
    return server, httpx.Client(base_url=server.url, timeout=30)


def test_redis_down_jobs_are_accepted_queued_and_run_when_it_returns(redis_server, tmp_path):
    settings = load_settings(
        database_url=f"sqlite:///{tmp_path / 't.sqlite'}", broker_url=redis_server.url, **{**FAST, "redispatch_after_s": 2.0}
    )
    upgrade(settings)
    server, http = serve(settings)
    worker = start_worker(settings, tmp_path / "w.log")
    try:
        redis_server.kill()
        assert http.get("/readyz").status_code == 503
        assert http.get("/readyz").json()["checks"]["broker"].startswith("unreachable")
        started = time.monotonic()
        response = http.post("/v1/jobs", json=small_recipe(**{"training.epochs": 2}))
        assert response.status_code == 202 and time.monotonic() - started < 5  # accepted, not hung
        job = response.json()
        assert http.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued"  # stored: the database is the truth
        redis_server.start()  # same port; the worker reconnects, the reconciler sends the job again
        done = wait_for(http, job["id"], {"succeeded", "failed"}, timeout=120)
        assert done["status"] == "succeeded", done["error"]
        assert http.get("/readyz").status_code == 200
    finally:
        worker.stop()
        server.close()


def test_a_lost_message_on_the_embedded_broker_is_sent_again(tmp_path):
    """The SQLAlchemy transport has no redelivery: the reconciler is what makes it safe."""
    settings = load_settings(
        database_url=f"sqlite:///{tmp_path / 't.sqlite'}",
        broker_url=f"sqla+sqlite:///{tmp_path / 'b.sqlite'}",
        **{**FAST, "redispatch_after_s": 2.0},
    )
    upgrade(settings)
    server, http = serve(settings)
    try:
        job = http.post("/v1/jobs", json=small_recipe(**{"training.epochs": 2})).json()
        broker = Database(load_settings(database_url=f"sqlite:///{tmp_path / 'b.sqlite'}"))
        with broker.session() as session:  # the message is lost before any worker saw it
            assert session.execute(text("DELETE FROM kombu_message")).rowcount == 1
        worker = start_worker(settings, tmp_path / "w.log")
        try:
            done = wait_for(http, job["id"], {"succeeded", "failed"}, timeout=120)
        finally:
            worker.stop()
        assert done["status"] == "succeeded" and done["attempt"] == 1
        assert "sending again" in worker.log()
    finally:
        server.close()


def test_database_down_is_a_503_and_the_worker_keeps_its_finished_model(postgres_server, tmp_path):
    settings = load_settings(database_url=postgres_server.url, broker_url=f"sqla+sqlite:///{tmp_path / 'b.sqlite'}", **FAST)
    upgrade(settings)
    server, http = serve(settings)
    worker = start_worker(settings, tmp_path / "w.log", TRAINER_DB_RETRY_S=120)
    try:
        job = http.post("/v1/jobs", json=small_recipe(**{"training.epochs": 40, "training.batch_size": 4})).json()
        wait_until(lambda: len(http.get(f"/v1/jobs/{job['id']}").json()["history"]) >= 2, timeout=120)
        worker.pause()  # the job holds mid-training: it cannot finish before the database goes, however fast
        held = http.get(f"/v1/jobs/{job['id']}").json()
        assert held["status"] == "running" and len(held["history"]) < 40
        postgres_server.stop()
        worker.resume()
        for path in ("/v1/jobs", f"/v1/jobs/{job['id']}"):
            down = http.get(path)
            assert down.status_code == 503, down.text
            assert down.headers["Content-Type"] == "application/problem+json"
            assert "Traceback" not in down.text and down.headers["Retry-After"]
        assert http.post("/v1/jobs", json=small_recipe()).status_code == 503
        assert http.get("/readyz").status_code == 503
        wait_until(
            lambda: "storing the trained model failed" in worker.log() or "not stored yet" in worker.log(), timeout=120
        )
        time.sleep(2)
        postgres_server.start()
        done = wait_for(http, job["id"], {"succeeded", "failed"}, timeout=180)
        assert done["status"] == "succeeded", done["error"]
        assert [h["epoch"] for h in done["history"]] == list(range(1, 41))  # epochs trained during the outage too
        assert http.get(f"/v1/jobs/{job['id']}/model").status_code == 200
    finally:
        worker.stop()
        server.close()
