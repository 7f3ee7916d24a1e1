"""Structured logs: JSON lines (TRAINER_LOG_FORMAT=json) from a real gunicorn API and a real Celery worker; a
request's id comes back in X-Request-Id and is on the worker's lines about the job it submitted, with the job's
id, owner and attempt. Text stays the default, with the same fields in brackets."""

from __future__ import annotations

import io
import json
import logging
import re

import httpx
import pytest

from core import log_context
from core.settings import load_settings
from stack.processes import start_gunicorn
from tests.support import small_recipe, start_worker, wait_for, worker_env


def json_lines(text: str) -> list[dict]:
    """Every line that is a log record (a JSON object); each must parse."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.worker
@pytest.mark.parametrize("isolated_backend", ["sqlite"], indirect=True)
def test_a_requests_id_is_answered_and_on_the_workers_json_lines_for_its_job(isolated_backend, tmp_path):
    settings = isolated_backend
    worker = start_worker(settings, tmp_path / "worker.log", TRAINER_LOG_FORMAT="json")
    env = worker_env(settings, TRAINER_LOG_FORMAT="json", TRAINER_SINGLE_USER="1")
    api = None
    try:
        api, url = start_gunicorn(env, tmp_path / "api.log", ["--workers", "1"])
        with httpx.Client(base_url=url, timeout=30) as http:
            sent = http.post("/v1/jobs", json=small_recipe(), headers={"X-Request-Id": "client-7f3a.42"})
            assert sent.status_code == 202 and sent.headers["X-Request-Id"] == "client-7f3a.42"
            job_id = sent.json()["id"]
            assert sent.json()["progress"]["plan"]["request_id"] == "client-7f3a.42"
            assert wait_for(http, job_id, timeout=180)["status"] == "succeeded"
            # no id, or one that is not an id: a fresh one
            for header in ({}, {"X-Request-Id": "two words"}, {"X-Request-Id": "x" * 200}):
                made = http.get("/healthz", headers=header).headers["X-Request-Id"]
                assert re.fullmatch(r"[0-9a-f]{32}", made)
    finally:
        if api is not None:
            api.stop()
        worker.stop()

    worker_text = (tmp_path / "worker.log").read_text()
    about_job = [line for line in worker_text.splitlines() if job_id in line]
    assert about_job and all(line.startswith("{") for line in about_job)  # every line naming the job is JSON
    records = json_lines(worker_text)
    for_job = [r for r in records if r.get("job_id") == job_id]
    assert any("attempt 1 on" in r["message"] for r in for_job)
    assert all(r["request_id"] == "client-7f3a.42" for r in for_job)
    assert all(r["owner"] == "default" and r["attempt"] == 1 for r in for_job if "attempt" in r)
    assert {"time", "level", "logger", "message"} <= set(records[0])
    assert any(" ready." in r["message"] for r in records)  # Celery's own lines are JSON too

    api_records = json_lines((tmp_path / "api.log").read_text())
    submit = [r for r in api_records if r.get("request_id") == "client-7f3a.42"]
    assert submit and submit[-1]["logger"] == "trainer.http" and submit[-1]["owner"] == "default"
    assert any(r["logger"] == "gunicorn.error" for r in api_records)  # gunicorn's own lines too


def test_text_is_the_default_and_carries_the_same_fields():
    settings = load_settings()
    assert settings.log_format == "text"
    out = io.StringIO()
    handler = log_context.handler(settings, out)
    log = logging.getLogger("test.text-logs")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        with log_context.bound(job_id="j1", owner="alice", attempt=2, request_id="r1"):
            log.info("epoch %d", 3)
        log.info("about nothing")
    finally:
        log.removeHandler(handler)
    first, second = out.getvalue().splitlines()
    assert first.endswith("test.text-logs: epoch 3 [request_id=r1 job_id=j1 owner=alice attempt=2]")
    assert second.endswith("test.text-logs: about nothing")


def test_a_log_format_other_than_text_or_json_is_refused():
    from core.settings import ConfigError

    with pytest.raises(ConfigError, match="TRAINER_LOG_FORMAT"):
        load_settings(log_format="yaml")
