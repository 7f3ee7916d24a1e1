"""A backup taken as README says (SQLite: ``python -m core.backup``, the online backup API; PostgreSQL:
``pg_dump -Fc``), restored into a fresh database, serves the same model, byte for byte, from a new API process."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from contextlib import contextmanager

import httpx
import pytest

from core.settings import ROOT
from stack.databases import scratch_database
from stack.processes import clean_env, start_gunicorn
from tests.conftest import PG_ADMIN_URL
from tests.support import small_recipe, wait_for


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@contextmanager
def _restored(backend, tmp_path):
    """Dump the suite's database while its API and worker run, restore it into a new one; yields its URL."""
    dump = tmp_path / "trainer.backup"
    if backend.is_sqlite:
        restored = f"sqlite:///{tmp_path / 'restored' / 'trainer.sqlite'}"
        (tmp_path / "restored").mkdir()
        for action, url in (("dump", backend.database_url), ("restore", restored)):
            subprocess.run(
                [sys.executable, "-m", "core.backup", action, str(dump)],
                cwd=ROOT,
                env=clean_env(DATABASE_URL=url),
                check=True,
                capture_output=True,
            )
        yield restored
        return
    subprocess.run(["pg_dump", "-Fc", "-f", str(dump), _libpq(backend.database_url)], check=True, capture_output=True)
    with scratch_database(PG_ADMIN_URL, "trainer_restore") as restored:
        subprocess.run(["pg_restore", "--no-owner", "-d", _libpq(restored), str(dump)], check=True, capture_output=True)
        yield restored


@pytest.mark.worker
def test_a_restored_backup_serves_the_same_model(backend, worker, http, tmp_path):
    job = http.post("/v1/jobs", json=small_recipe(name="backed-up")).json()
    assert wait_for(http, job["id"], timeout=180)["status"] == "succeeded"
    original = http.get(f"/v1/jobs/{job['id']}/model")
    assert original.status_code == 200

    with _restored(backend, tmp_path) as url:
        env = clean_env(
            DATABASE_URL=url,
            CELERY_BROKER_URL=f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}",  # nothing is sent: a broker of its own
            TRAINER_SINGLE_USER="1",
        )
        subprocess.run([sys.executable, "-m", "core.migrate"], cwd=ROOT, env=env, check=True, capture_output=True)
        api, api_url = start_gunicorn(env, tmp_path / "api.log", ["--workers", "1"])
        try:
            restored = httpx.get(f"{api_url}/v1/jobs/{job['id']}/model", timeout=30)
            served = httpx.get(f"{api_url}/v1/jobs/{job['id']}", timeout=30).json()
        finally:
            api.stop()
    assert restored.status_code == 200
    assert hashlib.sha256(restored.content).hexdigest() == hashlib.sha256(original.content).hexdigest()
    assert restored.headers["X-Checksum-Sha256"] == hashlib.sha256(original.content).hexdigest()
    assert served["status"] == "succeeded" and len(served["history"]) == 5
