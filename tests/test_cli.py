"""The ``trainer`` CLI and the Python SDK, over real HTTP against the live API and a real worker.

Nothing is mocked: the CLI runs in-process through click's CliRunner (stdout and stderr kept apart) and
once as a real ``python -m trainer_client.cli`` process that gets a real SIGINT.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from trainer_client import ChecksumMismatch, Client, TrainerClientError, sha256_file, verify_sha256
from trainer_client.cli import cli

from core.settings import ROOT
from service.app import create_app
from tests.conftest import LiveServer
from tests.support import UNTIL_CANCELLED, small_recipe, wait_for, wait_until

WAIT = ("--wait", "--poll", "0.2", "--timeout", "120")  # a broken worker fails the test instead of hanging it
DIVERGES = {
    "training.optimizer": {"type": "sgd", "learning_rate": 5.0},
    "model.layers": [{"type": "dense", "units": 64}, {"type": "dense", "units": 64}, {"type": "dense", "units": 1}],
    "training.loss": "mse",
    "training.metrics": [],
    "training.epochs": 30,
}


@pytest.fixture
def trainer(live_api):
    """Runs the CLI in-process against the live API and returns click's Result."""
    runner = CliRunner()

    def run(*args, input: str | None = None):
        return runner.invoke(cli, ["--url", live_api.url, *map(str, args)], input=input, catch_exceptions=False)

    return run


def recipe_file(tmp_path: Path, filename: str = "recipe.json", drop: tuple[str, ...] = (), **overrides) -> Path:
    recipe = small_recipe(**overrides)
    for key in drop:
        recipe.pop(key)
    path = tmp_path / filename
    path.write_text(json.dumps(recipe))
    return path


def submitted_id(stderr: str) -> str:
    return re.search(r"Submitted job ([0-9a-f]{32})", stderr).group(1)


@pytest.mark.worker
def test_submit_wait_shows_progress_then_result_tables(trainer, http, worker, tmp_path):
    result = trainer("submit", recipe_file(tmp_path, **{"training.epochs": 3}), *WAIT)
    assert result.exit_code == 0, result.stderr

    job = http.get(f"/v1/jobs/{submitted_id(result.stderr)}").json()
    assert job["status"] == "succeeded"
    accuracy = job["result"]["test"]["accuracy"]
    assert re.search(rf"test accuracy\s*│\s*{accuracy:.4f}", result.stdout), result.stdout
    assert f"{job['result']['sizes']['h5']['bytes']:,}" in result.stdout
    assert "sparsity (pruned kernels)" in result.stdout
    # the progress bar's last frame, on stderr: epochs, the last metrics, the sparsity reached
    assert "epoch 3/3" in result.stderr
    assert f"sparsity {job['history'][-1]['sparsity']:.3f}" in result.stderr
    assert f"val_acc {job['history'][-1]['val_accuracy']:.4f}" in result.stderr


@pytest.mark.worker
def test_json_output_status_list_and_history(trainer, http, worker, tmp_path):
    result = trainer("--json", "submit", recipe_file(tmp_path, **{"training.epochs": 3}), *WAIT)
    assert result.exit_code == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["status"] == "succeeded" and [row["epoch"] for row in job["history"]] == [1, 2, 3]
    job_id = job["id"]

    assert json.loads(trainer("status", job_id, "--json").stdout) == http.get(f"/v1/jobs/{job_id}").json()
    shown = trainer("status", job_id)
    assert shown.exit_code == 0 and job_id in shown.stdout and "succeeded" in shown.stdout
    assert "test accuracy" in shown.stdout

    listed = json.loads(trainer("--json", "list", "--limit", "5").stdout)
    assert len(listed) <= 5 and job_id in [item["id"] for item in listed]
    table = trainer("list", "--status", "succeeded")
    assert table.exit_code == 0 and job_id in table.stdout
    assert job_id not in trainer("list", "--status", "failed").stdout

    rows = http.get(f"/v1/jobs/{job_id}/history").json()["history"]
    assert json.loads(trainer("--json", "history", job_id).stdout) == rows
    as_csv = trainer("history", job_id, "--csv").stdout_bytes  # as served, CRLF line ends included
    assert as_csv == http.get(f"/v1/jobs/{job_id}/history?format=csv").content
    lines = trainer("history", job_id).stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["epoch", "loss", "acc"] and len(lines) == 2 + 3
    assert lines[-1].split()[:2] == ["3", f"{rows[-1]['loss']:.4f}"]


@pytest.mark.worker
def test_download_verifies_sha256_and_writes_the_served_bytes(trainer, http, worker, tmp_path):
    job = http.post("/v1/jobs", json=small_recipe(**{"training.epochs": 2, "export.formats": ["h5", "tflite"]})).json()
    assert wait_for(http, job["id"], {"succeeded", "failed"})["status"] == "succeeded"

    target = tmp_path / "model.tflite"
    result = trainer("download", job["id"], "--format", "tflite", "-o", target)
    assert result.exit_code == 0, result.stderr
    served = http.get(f"/v1/jobs/{job['id']}/model", params={"format": "tflite"})
    digest = hashlib.sha256(served.content).hexdigest()
    assert target.read_bytes() == served.content
    assert digest == served.headers["X-Checksum-Sha256"]
    assert result.stdout.split() == [digest, str(target)]  # sha256sum's format
    assert "sha256 verified" in result.stderr

    into_dir = trainer("--json", "download", job["id"], "-o", tmp_path)  # h5, under the server's filename
    info = json.loads(into_dir.stdout)
    h5 = http.get(f"/v1/jobs/{job['id']}/model").headers
    assert Path(info["path"]) == tmp_path / f"{job['id']}-model.h5"
    assert f'filename="{job["id"]}-model.h5"' in h5["Content-Disposition"]
    assert info["sha256"] == sha256_file(info["path"]) == h5["X-Checksum-Sha256"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no .part left behind

    missing = trainer("download", job["id"], "--format", "keras", "-o", tmp_path / "m.keras")
    detail = http.get(f"/v1/jobs/{job['id']}/model", params={"format": "keras"}).json()["detail"]
    assert missing.exit_code == 1 and detail in missing.stderr and not (tmp_path / "m.keras").exists()


@pytest.mark.worker
def test_sdk_download_refuses_a_wrong_checksum(live_api, worker, tmp_path):
    with Client(live_api.url) as client:
        job = client.submit(small_recipe(**{"training.epochs": 2})).wait(poll=0.2, timeout=120)
        assert job.succeeded, job.error
        good = job.download(tmp_path / "good.h5")
        assert good.size == job.result["sizes"]["h5"]["bytes"] and good.sha256 == sha256_file(good.path)

        verify_sha256(good.sha256, good.sha256.upper())  # hex case does not matter
        with pytest.raises(ChecksumMismatch) as caught:
            verify_sha256(sha256_file(good.path), "0" * 64)
        assert caught.value.actual == good.sha256

        # the same check inside download: a digest pinned by the caller that the bytes do not match
        with pytest.raises(ChecksumMismatch):
            job.download(tmp_path / "tampered.h5", expected_sha256="f" * 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.h5"]


@pytest.mark.worker
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # the SDK's side of polling; nothing SQL-specific
def test_sdk_polls_with_etag_sends_the_token_and_follows_cursors(live_api, http, worker, monkeypatch):
    seen: list[tuple[str, str, int, str | None]] = []

    def record(response):
        request = response.request
        seen.append((request.method, request.url.path, response.status_code, request.headers.get("Authorization")))

    monkeypatch.setenv("TRAINER_URL", live_api.url)
    monkeypatch.setenv("TRAINER_TOKEN", "s3cret")  # single-user mode ignores it; it must still be sent
    updates = []
    with Client(event_hooks={"response": [record]}) as client:
        assert client.url == live_api.url
        key = f"cli-test-{time.time_ns()}"
        first = client.submit(small_recipe(**{"training.epochs": 1}), idempotency_key=key)
        assert client.submit(small_recipe(**{"training.epochs": 1}), idempotency_key=key).id == first.id
        client.submit(small_recipe(**{"training.epochs": 1}))
        job = client.submit(small_recipe(**{"training.epochs": 3}))
        job.wait(poll=0.05, timeout=120, on_update=lambda j: updates.append(j.status))
        assert job.succeeded and updates[-1] == "succeeded"
        paged = client.jobs(limit=3, page_size=1)

    polls = [status for method, path, status, _ in seen if method == "GET" and path == f"/v1/jobs/{job.id}"]
    assert 304 in polls  # unchanged polls came back without a body
    assert len(updates) == 1 + polls[1:].count(200)  # on_update ran once per change, not once per poll
    assert {auth for *_, auth in seen} == {"Bearer s3cret"}

    newest = http.get("/v1/jobs", params={"limit": 3}).json()["items"]
    assert len(newest) == 3 and [j.id for j in paged] == [item["id"] for item in newest]
    assert sum(1 for method, path, *_ in seen if method == "GET" and path == "/v1/jobs") == 3  # one page each


@pytest.fixture(scope="module")
def secured_api(backend):
    """The same database served with tokens required (the suite's own app is single-user)."""
    server = LiveServer(create_app(replace(backend, single_user=False, api_tokens="cli-secret:cli-user")))
    yield server
    server.close()


def test_token_from_option_or_environment_and_a_401_says_what_to_do(secured_api):
    runner = CliRunner()
    refused = runner.invoke(cli, ["--url", secured_api.url, "list"], env={"TRAINER_TOKEN": None})
    assert refused.exit_code == 1 and "401" in refused.stderr and "Authorization: Bearer" in refused.stderr
    assert "--token or set TRAINER_TOKEN" in refused.stderr

    wrong = runner.invoke(cli, ["--url", secured_api.url, "--token", "nope", "list"])
    assert wrong.exit_code == 1 and "not valid" in wrong.stderr

    by_option = runner.invoke(cli, ["--url", secured_api.url, "--token", "cli-secret", "--json", "list"])
    by_env = runner.invoke(cli, ["--json", "list"], env={"TRAINER_URL": secured_api.url, "TRAINER_TOKEN": "cli-secret"})
    assert by_option.exit_code == by_env.exit_code == 0, by_option.stderr + by_env.stderr
    assert json.loads(by_option.stdout) == json.loads(by_env.stdout) == []  # cli-user owns no job yet


def test_invalid_recipe_exits_2_with_the_servers_detail(trainer, http, tmp_path):
    bad = recipe_file(tmp_path, **{"training.epochs": 0})
    problem = http.post("/v1/jobs", json=json.loads(bad.read_text()))
    assert problem.status_code == 422

    result = trainer("submit", bad)
    assert result.exit_code == 2 and result.stdout == ""
    assert problem.json()["detail"] in result.stderr and "training.epochs" in result.stderr

    as_json = trainer("--json", "submit", bad)
    assert as_json.exit_code == 2 and json.loads(as_json.stderr)["errors"] == problem.json()["errors"]

    unknown = "0" * 32
    missing = trainer("status", unknown)
    assert missing.exit_code == 1 and http.get(f"/v1/jobs/{unknown}").json()["detail"] in missing.stderr

    with Client(http.base_url) as client, pytest.raises(TrainerClientError) as caught:
        client.submit(bad)
    assert (caught.value.status, caught.value.detail) == (422, problem.json()["detail"])


@pytest.mark.worker
def test_a_job_that_fails_under_wait_exits_1_with_its_error(trainer, http, worker, tmp_path):
    result = trainer("submit", recipe_file(tmp_path, drop=("pruning",), **DIVERGES), *WAIT)
    assert result.exit_code == 1
    job = http.get(f"/v1/jobs/{submitted_id(result.stderr)}").json()
    assert job["status"] == "failed" and job["error"]["type"] == "diverged"
    assert f"failed: diverged: {job['error']['message']}" in result.stderr
    assert f"Hint: {job['error']['hint']}" in result.stderr


@pytest.mark.worker
def test_cancel_a_queued_job_and_ctrl_c_a_real_process(trainer, patient_api, http, worker, tmp_path):
    """A real `python -m trainer_client.cli submit --wait` keeps the worker busy with a job that only a cancel
    ends; meanwhile a second job stays queued and `trainer cancel` ends it at once; then Ctrl-C (SIGINT) + "y",
    sent once the first job has recorded an epoch, cancels it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINER_")}
    env.update(TRAINER_URL=patient_api.url, PYTHONUNBUFFERED="1")
    stderr = tmp_path / "trainer.stderr"  # a file, so the test can watch it while the process runs
    with stderr.open("w") as err_file:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trainer_client.cli",
                "submit",
                recipe_file(tmp_path, "long.json", **UNTIL_CANCELLED),
                "--wait",
                "--poll",
                "0.2",
            ],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err_file,
            text=True,
            # a suite started in the background by a non-interactive shell (`.ci/run &`) inherits SIGINT ignored,
            # and so would this child, which then never sees its Ctrl-C: it starts with the default disposition
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    ours: list[str] = []
    try:
        long_id = submitted_id(wait_until(lambda: re.search(r"Submitted job \w+", stderr.read_text()), timeout=60)[0])
        ours.append(long_id)
        wait_until(lambda: http.get(f"/v1/jobs/{long_id}").json()["history"], timeout=120)

        queued = json.loads(trainer("--json", "submit", recipe_file(tmp_path, "small.json")).stdout)
        ours.append(queued["id"])
        assert queued["status"] == "queued"
        cancelled = trainer("cancel", queued["id"])
        assert cancelled.exit_code == 0 and f"Job {queued['id']} cancelled" in cancelled.stdout
        assert http.get(f"/v1/jobs/{queued['id']}").json()["status"] == "cancelled"
        again = trainer("cancel", queued["id"])  # finished: the server's 409 detail, exit 1
        assert again.exit_code == 1 and "cancelled" in again.stderr

        proc.send_signal(signal.SIGINT)
        proc.communicate(input="y\n", timeout=60)
        err = stderr.read_text()
        assert proc.returncode == 130, err
        assert f"Cancel job {long_id}? [y/N]" in err and "Cancel requested" in err
        done = wait_for(http, long_id, {"cancelled", "succeeded", "failed"}, timeout=60)
        assert done["status"] == "cancelled" and len(done["history"]) >= 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for job_id in ours:  # never leave the shared worker busy with a job that runs until cancelled
            http.post(f"/v1/jobs/{job_id}/cancel")


def test_wait_past_its_timeout_raises_wait_timeout_which_is_a_timeout_error(live_api):
    from trainer_client import WaitTimeout

    with Client(live_api.url) as client:
        job = client.submit(small_recipe(**{"training.epochs": 500}))
        try:
            with pytest.raises(WaitTimeout) as caught:
                job.wait(poll=0.1, timeout=0.3)
        finally:
            job.cancel()
    assert isinstance(caught.value, TimeoutError) and isinstance(caught.value, TrainerClientError)
    assert str(caught.value).startswith(f"job {job.id} is still ") and str(caught.value).endswith(" after 0.3 s")


def test_the_clients_statuses_are_the_servers():
    """The client imports no server code, so its copy of the statuses is checked against JobStatus here."""
    from trainer_client.sdk import STATUSES, TERMINAL

    from core.models import JobStatus

    assert STATUSES == tuple(status.value for status in JobStatus)
    assert TERMINAL == {status.value for status in JobStatus if status.finished}
