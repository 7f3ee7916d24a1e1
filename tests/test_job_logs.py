"""A job's log holds what the job itself said, and only so many lines of it.

The runner is run in this process (``worker.runner.run_job``, real database, real TensorFlow on iris)
so that other loggers can be made to speak at a known moment of the job: in a worker those are the
database driver's and the worker's own lines, which carry SQL text and host names.
"""

from __future__ import annotations

import dataclasses
import logging
import re

import pytest

from core import admission
from core.recipe import Recipe
from tests.support import small_recipe

FOREIGN = {  # logger → a line a client must never see in a job's log
    "sqlalchemy.engine.Engine": "SELECT jobs.secret FROM jobs -- on db.internal.example:5432",
    "psycopg": 'connection to server at "db.internal.example" (10.0.0.5), port 5432 failed',
    "celery.worker": "celery internals",
    "kombu.connection": "kombu internals",
    "worker.runner": "heartbeat failed: (psycopg.OperationalError) db.internal.example",
}


class SpeakAtEpoch(logging.Handler):
    """On the job's own line for epoch 2, every foreign logger speaks (inside the job, while its log is captured)."""

    def __init__(self):
        super().__init__()
        self.job_lines = 0

    def emit(self, record):
        self.job_lines += 1
        if record.getMessage().startswith("epoch 2/"):
            for name, line in FOREIGN.items():
                logging.getLogger(name).warning(line)


@pytest.fixture
def speaking():
    job_logger = logging.getLogger("trainer.job")
    handler = SpeakAtEpoch()
    job_logger.addHandler(handler)
    yield handler
    job_logger.removeHandler(handler)


def run(db, settings, **overrides) -> str:
    from worker.runner import run_job

    with db.session() as session:
        job = admission.create(session, Recipe.model_validate(small_recipe(**overrides)), "default", settings)
    assert run_job(db, settings, job.id) == "succeeded"
    return job.id


def test_a_jobs_log_has_its_epochs_and_nothing_from_other_loggers(client, db, backend, speaking):
    job_id = run(db, backend, **{"training.epochs": 4})
    text = client.get(f"/v1/jobs/{job_id}/logs").get_data(as_text=True)
    assert all(f"epoch {n}/4 " in text for n in range(1, 5))
    assert "attempt 1 on CPU:0" in text
    for line in FOREIGN.values():
        assert line not in text
    assert "db.internal" not in text and "SELECT" not in text


def test_a_chatty_job_keeps_max_log_lines_and_says_how_many_it_dropped(client, db, backend, speaking):
    settings = dataclasses.replace(backend, max_log_lines_per_job=5)
    job_id = run(db, settings, **{"training.epochs": 30})
    lines = client.get(f"/v1/jobs/{job_id}/logs").get_data(as_text=True).splitlines()
    assert len(lines) == 6
    dropped = re.search(
        r"WARNING (\d+) more lines were dropped: a job keeps at most 5 "
        r"\(TRAINER_MAX_LOG_LINES_PER_JOB\)$",
        lines[-1],
    )
    assert dropped, lines[-1]
    assert int(dropped.group(1)) == speaking.job_lines - 5  # every line the job said is kept or counted
    assert speaking.job_lines > 30


def test_a_failure_on_the_database_keeps_its_sql_out_of_the_jobs_log_and_error(client, db, backend, monkeypatch):
    """An exception from the database (its text holds SQL and the server's address) fails the job as
    training_error without that text: it goes to the worker's own log."""
    from sqlalchemy.exc import OperationalError

    from worker import runner

    def unreachable(*_):
        raise OperationalError("SELECT artifacts.data FROM artifacts", {}, Exception("db.internal.example:5432"))

    with db.session() as session:
        job = admission.create(session, Recipe.model_validate(small_recipe()), "default", backend)
    monkeypatch.setattr(runner, "_train_and_store", unreachable)  # the database fails mid-job
    assert runner.run_job(db, backend, job.id) == "failed"
    body = client.get(f"/v1/jobs/{job.id}").get_json()
    text = client.get(f"/v1/jobs/{job.id}/logs").get_data(as_text=True)
    assert body["error"]["type"] == "training_error" and "OperationalError" in body["error"]["message"]
    for shown in (text, body["error"]["message"]):
        assert "db.internal" not in shown and "SELECT" not in shown
