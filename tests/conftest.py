"""Shared fixtures: real databases (SQLite and PostgreSQL), real brokers (SQLAlchemy transport and
Redis), a real API server on a loopback port, and real Celery worker processes.

``backend`` is parametrized: every test that asks for it runs once on the embedded default
(SQLite + SQLAlchemy broker) and once on PostgreSQL + Redis.
"""

from __future__ import annotations

import os

import httpx
import pytest

from core.migrate import upgrade
from core.settings import Settings, load_settings
from stack.databases import flush_redis, scratch_database
from stack.processes import LiveServer
from tests import conformance
from tests.support import start_worker

PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
#: The database of tests that flush their broker themselves; two suites run at once need two pairs of these.
ISOLATED_REDIS_DB = os.environ.get("TEST_REDIS_ISOLATED_DB", "14")
FAST = dict(heartbeat_interval_s=0.5, reconcile_interval_s=1.0, single_user=True)
#: Every ``load_settings()`` of the suite (and so every worker it starts, see ``stack.processes.settings_env``) skips
#: the inference measurement, a few seconds per job over hundreds of jobs; tests of it ask for ``inference="full"``.
os.environ["TRAINER_INFERENCE"] = "off"


def pytest_configure(config):
    config.addinivalue_line("markers", "worker: starts real Celery worker processes (slow)")
    conformance.install()


@pytest.fixture(autouse=True)
def responses_fit_the_openapi_document():
    """Every JSON body any app sent during the test fits the schema ``/openapi.json`` documents for it."""
    conformance.take()
    yield
    found = conformance.take()
    assert not found, "responses off /openapi.json:\n" + "\n".join(found[:10])


@pytest.fixture(scope="session")
def postgres_url():
    """A fresh database on the machine's PostgreSQL for this session, dropped afterwards."""
    with scratch_database(PG_ADMIN_URL, "trainer_test") as url:
        yield url


@pytest.fixture(scope="session")
def redis_url():
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    client.flushdb()  # db 13 belongs to this suite
    yield REDIS_URL
    client.flushdb()


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def backend(request, tmp_path_factory) -> Settings:
    """Settings for a migrated database and a broker: the embedded pair, or PostgreSQL + Redis."""
    if request.param == "sqlite":
        var = tmp_path_factory.mktemp("var")
        settings = load_settings(
            database_url=f"sqlite:///{var / 'trainer.sqlite'}", broker_url=f"sqla+sqlite:///{var / 'broker.sqlite'}", **FAST
        )
    else:
        settings = load_settings(
            database_url=request.getfixturevalue("postgres_url"), broker_url=request.getfixturevalue("redis_url"), **FAST
        )
    upgrade(settings)
    return settings


@pytest.fixture(params=["sqlite", "postgres"])
def isolated_backend(request, tmp_path) -> Settings:
    """A database and broker of this test's own, for tests that start and kill their own workers."""
    if request.param == "sqlite":
        settings = load_settings(
            database_url=f"sqlite:///{tmp_path / 'trainer.sqlite'}",
            broker_url=f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}",
            **FAST,
        )
        upgrade(settings)
        yield settings
        return
    broker = REDIS_URL.rsplit("/", 1)[0] + "/" + ISOLATED_REDIS_DB
    flush_redis(broker)
    with scratch_database(PG_ADMIN_URL, "trainer_iso") as url:
        settings = load_settings(database_url=url, broker_url=broker, **FAST)
        upgrade(settings)
        yield settings
    flush_redis(broker)


@pytest.fixture(scope="session")
def app(backend):
    from service.app import create_app

    app = create_app(backend)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def db(backend):
    from core.db import Database

    return Database(backend)


@pytest.fixture(scope="session")
def live_api(app):
    """The API served over real HTTP on a loopback port."""
    server = LiveServer(app)
    yield server
    server.close()


@pytest.fixture
def http(live_api):
    with httpx.Client(base_url=live_api.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def patient_api(backend):
    """The same database served with the epoch cap at the recipe's own maximum, for jobs of
    ``tests.support.UNTIL_CANCELLED`` (the suite's API keeps the default cap, which test_access checks)."""
    from dataclasses import replace

    from service.app import create_app
    from tests.support import UNTIL_CANCELLED

    server = LiveServer(create_app(replace(backend, max_epochs=UNTIL_CANCELLED["training.epochs"])))
    yield server
    server.close()


@pytest.fixture
def patient_http(patient_api):
    with httpx.Client(base_url=patient_api.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def worker(backend, tmp_path_factory):
    """One real worker for the session's backend."""
    proc = start_worker(backend, tmp_path_factory.mktemp("worker") / "worker.log")
    yield proc
    proc.stop()
