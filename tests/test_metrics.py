"""Prometheus metrics, scraped from real processes with the Prometheus text parser: the API's /metrics under
gunicorn (two worker processes, multiprocess mode) and the Celery worker's own port; the counters move with real
jobs. /metrics is not public when tokens are on: it takes the scrape token, and only that."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core import admission, job_state
from core.causes import Cause, JobError
from core.db import Database
from core.models import JobStatus
from core.recipe import Recipe
from service.app import create_app
from service.extensions import services
from stack.processes import free_port, start_gunicorn
from tests.support import small_recipe, start_worker, wait_for, worker_env

pytestmark = pytest.mark.worker
EPOCHS = 3


def scrape(url: str, **headers: str) -> dict[tuple, float]:
    """Every sample of a scrape, keyed by (name, sorted labels)."""
    answer = httpx.get(url, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


def value(samples: dict[tuple, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.parametrize("isolated_backend", ["postgres"], indirect=True)  # the deployed pair; nothing here is SQL-specific
def test_the_api_and_the_worker_export_metrics_that_move_with_real_jobs(isolated_backend, tmp_path):
    settings = isolated_backend
    port = free_port()
    worker = start_worker(settings, tmp_path / "worker.log", TRAINER_WORKER_METRICS_PORT=port, TRAINER_REDISPATCH_AFTER_S=1)
    env = worker_env(settings, TRAINER_API_TOKENS="alice-secret:alice", TRAINER_METRICS_TOKEN="scrape-secret")
    alice, scraper = {"Authorization": "Bearer alice-secret"}, {"Authorization": "Bearer scrape-secret"}
    worker_url = f"http://127.0.0.1:{port}/metrics"
    api = None
    try:
        api, url = start_gunicorn(env, tmp_path / "api.log", ["--workers", "2"])
        # not public: no token, or an owner's token, is refused; the scrape token is refused by /v1
        assert httpx.get(f"{url}/metrics").status_code == 401
        assert httpx.get(f"{url}/metrics", headers=alice).status_code == 401
        assert httpx.get(f"{url}/v1/jobs", headers=scraper).status_code == 401
        api_before, worker_before = scrape(f"{url}/metrics", **scraper), scrape(worker_url)

        with httpx.Client(base_url=url, headers=alice, timeout=30) as http:
            submitted = http.post("/v1/jobs", json=small_recipe(**{"training.epochs": EPOCHS}))
            assert submitted.status_code == 202, submitted.text
            # a job admitted while the broker was away: never sent, so the reconciler sends it
            db = Database(settings)
            with db.session() as session:
                lost, _ = admission.submit(
                    session, Recipe.model_validate(small_recipe(**{"training.epochs": EPOCHS})), "alice", settings
                )
            db.engine.dispose()
            for job_id in (submitted.json()["id"], lost.id):
                assert wait_for(http, job_id, timeout=180)["status"] == "succeeded"
        api_after, worker_after = scrape(f"{url}/metrics", **scraper), scrape(worker_url)
    finally:
        if api is not None:
            api.stop()
        worker.stop()

    def moved(before, after, name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved(api_before, api_after, "trainer_jobs", status="succeeded") == 2
    assert value(api_after, "trainer_jobs", status="queued") == value(api_after, "trainer_jobs", status="running") == 0
    assert moved(api_before, api_after, "trainer_stored_bytes", kind="model") > 0
    assert value(api_after, "trainer_database_readable") == 1
    assert moved(api_before, api_after, "trainer_http_requests_total", route="/v1/jobs", method="POST", status="202") == 1
    assert moved(api_before, api_after, "trainer_http_requests_total", route="/metrics", method="GET", status="200") == 1
    assert moved(api_before, api_after, "trainer_http_request_duration_seconds_count", route="/v1/jobs", method="POST") == 1

    assert moved(worker_before, worker_after, "trainer_epochs_trained_total") == 2 * EPOCHS
    assert moved(worker_before, worker_after, "trainer_job_training_seconds_count") == 2
    assert moved(worker_before, worker_after, "trainer_job_training_seconds_sum") > 0
    assert moved(worker_before, worker_after, "trainer_job_queue_wait_seconds_count") == 2
    assert moved(worker_before, worker_after, "trainer_job_duration_seconds_count", status="succeeded") == 2
    assert moved(worker_before, worker_after, "trainer_checkpoint_seconds_count") >= 2
    assert moved(worker_before, worker_after, "trainer_reconciler_actions_total", action="redispatched") >= 1


def test_failed_jobs_are_counted_by_error_type_and_metrics_are_open_in_single_user_mode(isolated_backend):
    """Failed jobs by ``error.type`` are read from the database at scrape time, whichever process failed them (here
    the state machine's own transitions, as a worker's memory guard does); single-user mode answers only
    localhost, /metrics included, and asks no token."""
    app = create_app(isolated_backend)
    client = app.test_client()
    db = services(app).db
    ids = [client.post("/v1/jobs", json=small_recipe()).get_json()["id"] for _ in range(3)]
    for job_id, cause in zip(ids, (Cause.OUT_OF_MEMORY, Cause.OUT_OF_MEMORY, Cause.TRAINING_ERROR)):
        with db.session() as session:
            attempt = job_state.claim(session, job_id, "test:1")
            assert attempt is not None
            assert job_state.finish(session, job_id, attempt, JobStatus.FAILED, error=JobError.of(cause, "test").stored())
    answer = client.get("/metrics")
    assert answer.status_code == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.get_data(as_text=True))
        for s in family.samples
    }
    assert value(samples, "trainer_jobs_failed", error_type="out_of_memory") == 2
    assert value(samples, "trainer_jobs_failed", error_type="training_error") == 1
    assert value(samples, "trainer_jobs", status="failed") == 3
    assert client.get("/metrics", headers={"Host": "metrics.example.com"}).status_code == 400
    db.engine.dispose()
