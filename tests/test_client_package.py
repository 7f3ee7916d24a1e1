"""The CLI / SDK is a distribution of its own: ``pip install ./client`` into a clean virtual environment brings
httpx, click and rich but nothing of the server (no Flask, Celery, TensorFlow, psycopg, gunicorn), and the
``trainer`` command installed there runs a real job against the live API and a worker."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core.settings import ROOT
from stack.processes import clean_env
from stack.recipes import small_recipe

SERVER_ONLY = ("flask", "celery", "tensorflow", "psycopg", "gunicorn", "sqlalchemy", "core", "service", "worker")
CLIENT_NEEDS = ("httpx", "click", "rich")


@pytest.fixture(scope="session")
def client_venv(tmp_path_factory) -> Path:
    """A fresh venv with only ``pip install ./client`` in it (pip's own cache makes a second run take seconds)."""
    venv = tmp_path_factory.mktemp("client-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # A venv that can already build a wheel (setuptools with bdist_wheel) need not fetch a build backend first;
    # Python 3.11's brings setuptools 65 without wheel, so pip builds in isolation, from its cache after once.
    can_build = subprocess.run([python, "-c", "import setuptools, wheel"], capture_output=True).returncode == 0
    pip = subprocess.run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *(["--no-build-isolation"] if can_build else []),
            str(ROOT / "client"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(),
        cwd=venv,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    return venv


def _env() -> dict[str, str]:
    """No TRAINER_* from the developer, and nothing that would put this repository on the venv's path."""
    env = clean_env()
    env.pop("PYTHONPATH", None)
    return env


def _run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(venv / "bin" / args[0]), *args[1:]], capture_output=True, text=True, timeout=300, env=_env(), cwd=cwd
    )


def test_the_client_installs_alone_without_the_server_or_tensorflow(client_venv, tmp_path):
    probe = (
        "import importlib.util, json, trainer_client; print(json.dumps([trainer_client.__file__, "
        f"[m for m in {SERVER_ONLY + CLIENT_NEEDS!r} if importlib.util.find_spec(m)]]))"
    )
    done = _run(client_venv, "python", "-c", probe, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    where, importable = json.loads(done.stdout)
    assert Path(where).is_relative_to(client_venv)  # the installed copy, not this checkout's
    assert importable == list(CLIENT_NEEDS)  # its three dependencies, and nothing of the server

    help_text = _run(client_venv, "trainer", "--help", cwd=tmp_path)
    assert help_text.returncode == 0, help_text.stderr
    for command in ("submit", "status", "list", "cancel", "history", "download"):
        assert re.search(rf"^\s+{command}\b", help_text.stdout, re.M), help_text.stdout


@pytest.mark.worker
def test_the_installed_trainer_command_runs_a_real_job(client_venv, live_api, http, worker, tmp_path):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps(small_recipe(**{"training.epochs": 2})))

    submitted = _run(
        client_venv,
        "trainer",
        "--url",
        live_api.url,
        "--json",
        "submit",
        str(recipe),
        "--wait",
        "--poll",
        "0.2",
        "--timeout",
        "120",
        cwd=tmp_path,
    )
    assert submitted.returncode == 0, submitted.stderr
    job = json.loads(submitted.stdout)
    assert job["status"] == "succeeded"
    assert http.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded"

    fetched = _run(
        client_venv, "trainer", "--url", live_api.url, "download", job["id"], "-o", str(tmp_path / "m.h5"), cwd=tmp_path
    )
    assert fetched.returncode == 0, fetched.stderr
    assert (tmp_path / "m.h5").stat().st_size == job["result"]["sizes"]["h5"]["bytes"]
