"""A stopped worker hands its job back at once and another resumes it from its checkpoint; a stopped API
finishes the requests it is serving. Real processes, signalled the way ``docker compose stop`` does: SIGTERM
to the main process only (a container's PID 1)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import httpx
import pytest

from core import checkpoints, job_state
from core.db import Database
from core.models import Job
from service.app import create_app
from stack.processes import start_gunicorn
from tests.conftest import LiveServer
from tests.support import small_recipe, start_worker, wait_for, wait_until, worker_env

#: Neither the heartbeat timeout nor the re-send of a stale queued job can move the job in these tests: only a
#: hand-back can put it back to ``queued``, and only the hand-back's own message can get it running again.
NO_RECONCILER = dict(TRAINER_HEARTBEAT_TIMEOUT_S=3600, TRAINER_REDISPATCH_AFTER_S=3600)
EPOCHS = 60


@pytest.mark.worker
def test_sigterm_mid_job_hands_it_back_and_another_worker_resumes_from_the_checkpoint(isolated_backend, tmp_path):
    settings = isolated_backend
    server = LiveServer(create_app(settings))
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            first = start_worker(settings, tmp_path / "a.log", **NO_RECONCILER)
            try:
                recipe = small_recipe(**{"training.epochs": EPOCHS, "training.batch_size": 4})
                job = http.post("/v1/jobs", json=recipe).json()
                wait_until(lambda: len(http.get(f"/v1/jobs/{job['id']}").json()["history"]) >= 3, timeout=180)
                os.kill(first.pid, signal.SIGTERM)  # the parent only: it must pass the stop on to the child that trains
                first.proc.wait(timeout=settings.stop_grace_s)  # exits within compose's stop_grace_period
            finally:
                first.stop()  # a no-op once it exited
            back = http.get(f"/v1/jobs/{job['id']}").json()
            assert back["status"] == "queued" and back["attempt"] == 1
            k = len(back["history"])
            assert 3 <= k < EPOCHS
            with Database(settings).session() as session:
                assert checkpoints.find(session, job["id"]) is not None
                assert session.get(Job, job["id"]).progress["handbacks"] == 1
            assert f"handed back after epoch {k}" in http.get(f"/v1/jobs/{job['id']}/logs").text

            # stopped again as soon as the next attempt runs: most likely before its first epoch (TensorFlow is
            # still tracing, the training thread checks nothing): its heartbeat thread hands the job back
            second = start_worker(settings, tmp_path / "b.log", **NO_RECONCILER)
            wait_until(lambda: http.get(f"/v1/jobs/{job['id']}").json()["attempt"] == 2, timeout=120, interval=0.05)
            os.kill(second.pid, signal.SIGTERM)
            second.proc.wait(timeout=settings.stop_grace_s)
            again = http.get(f"/v1/jobs/{job['id']}").json()
            assert again["status"] == "queued" and again["progress"]["phase"] == "queued"

            third = start_worker(settings, tmp_path / "c.log", **NO_RECONCILER)
            try:
                done = wait_for(http, job["id"], {"succeeded", "failed"}, timeout=300)
            finally:
                third.stop()
            assert done["status"] == "succeeded", done["error"]
            assert done["attempt"] == 3
            history = done["history"]
            assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
            # every epoch trained once: each attempt resumed after the last epoch trained before it
            attempts = [h["attempt"] for h in history]
            assert attempts[:k] == [1] * k and attempts == sorted(attempts) and attempts[-1] == 3
            logs = http.get(f"/v1/jobs/{job['id']}/logs").text
            for attempt in sorted(set(attempts) - {1}):  # 3, and 2 if it trained an epoch before its stop
                before = max(h["epoch"] for h in history if h["attempt"] < attempt)
                assert f"attempt {attempt}: resuming from the checkpoint after epoch {before}" in logs
            with Database(settings).session() as session:
                assert checkpoints.find(session, job["id"]) is None
    finally:
        server.close()


def test_api_finishes_a_request_in_flight_when_stopped(backend, tmp_path):
    """gunicorn's SIGTERM: stop accepting, let each worker finish its request (``--graceful-timeout``, as in compose)."""
    proc, url = start_gunicorn(
        worker_env(backend, TRAINER_SINGLE_USER="1"), tmp_path / "api.log", ["--workers", "1", "--graceful-timeout", "25"]
    )
    body = json.dumps(small_recipe(name="in-flight")).encode()
    sent_half = threading.Event()

    def slowly():
        yield body[: len(body) // 2]
        sent_half.set()
        time.sleep(2)  # the SIGTERM lands while the request is being read
        yield body[len(body) // 2 :]

    answer: dict = {}

    def post():
        with httpx.Client(timeout=30) as http:
            answer["response"] = http.post(
                f"{url}/v1/jobs",
                content=slowly(),
                headers={"Content-Type": "application/json", "Content-Length": str(len(body))},
            )

    client = threading.Thread(target=post)
    client.start()
    try:
        assert sent_half.wait(10)
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGTERM)
        client.join(30)
        response = answer["response"]
        assert response.status_code == 202, response.text
        proc.proc.wait(timeout=30)  # and then it exits
        with pytest.raises(httpx.ConnectError):  # nothing new is accepted
            httpx.get(f"{url}/healthz", timeout=2)
        with Database(backend).session() as session:  # nobody will train it
            job_state.cancel(session, response.json()["id"], "default")
    finally:
        proc.stop()
