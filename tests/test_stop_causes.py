"""Every way a job stops without succeeding is a typed cause with its own hint, seen from outside.

cancelled, timeout, diverged, training_error and worker_lost through the API with a real worker;
out_of_memory with a worker of its own (a low per-job memory limit, and a faked cgroup oom_kill count
to tell a kernel OOM kill from any other SIGKILL, with a real SIGKILL of the real child).
"""

from __future__ import annotations

import dataclasses
import io
import os
import signal
from datetime import timedelta

import httpx
import numpy as np
import pytest
from sqlalchemy import select, update

from core import admission
from core.causes import HINTS, Cause
from core.models import Artifact, ArtifactChunk, Job, JobStatus, utcnow
from core.recipe import Recipe
from core.reconcile import reconcile
from service.app import create_app
from tests.conftest import LiveServer
from tests.support import UNTIL_CANCELLED, small_recipe, start_worker, wait_for, wait_until
from worker.memory_guard import children, oom_events_file, oom_kills

MIB = 1024 * 1024


def assert_cause(job: dict, cause: Cause, status: str = "failed") -> dict:
    assert job["status"] == status, job["error"]
    error = job["error"]
    assert error["type"] == cause.value and error["hint"] == HINTS[cause] and error["message"]
    return error


def test_the_six_causes_are_defined_once_each_with_a_hint():
    assert {c.value for c in Cause} == {"cancelled", "timeout", "diverged", "worker_lost", "out_of_memory", "training_error"}
    assert all(HINTS[c] for c in Cause) and len(set(HINTS.values())) == len(Cause)


@pytest.mark.worker
def test_a_job_past_max_runtime_fails_timeout_not_training_error(http, worker):
    recipe = small_recipe(**{"training.epochs": 1000, "training.batch_size": 4, "training.max_runtime_s": 1})
    job = http.post("/v1/jobs", json=recipe).json()
    done = wait_for(http, job["id"], {"succeeded", "failed", "cancelled"}, timeout=120)
    error = assert_cause(done, Cause.TIMEOUT)
    assert "max_runtime_s of 1 s" in error["message"]
    assert "job failed: timeout" in http.get(f"/v1/jobs/{job['id']}/logs").text


@pytest.mark.worker
def test_a_nan_loss_fails_diverged_with_where(http, worker):
    recipe = small_recipe(
        **{
            "training.optimizer": {"type": "sgd", "learning_rate": 5.0},
            "model.layers": [{"type": "dense", "units": 64}, {"type": "dense", "units": 64}, {"type": "dense", "units": 1}],
            "training.loss": "mse",
            "training.metrics": [],
            "training.epochs": 30,
        }
    )
    recipe.pop("pruning")
    done = wait_for(http, http.post("/v1/jobs", json=recipe).json()["id"], {"succeeded", "failed"})
    error = assert_cause(done, Cause.DIVERGED)
    assert error["epoch"] >= 1 and error["batch"] >= 1


@pytest.mark.worker
def test_a_cancelled_job_says_so_in_its_error(patient_http, worker):
    http = patient_http
    job = http.post("/v1/jobs", json=small_recipe(**UNTIL_CANCELLED)).json()
    try:
        wait_until(lambda: len(http.get(f"/v1/jobs/{job['id']}").json()["history"]) >= 1, timeout=120)
    finally:
        http.post(f"/v1/jobs/{job['id']}/cancel")
    error = assert_cause(
        wait_for(http, job["id"], {"cancelled", "failed", "succeeded"}), Cause.CANCELLED, status="cancelled"
    )
    assert error["message"].startswith("cancelled after ")


def undispatched_job(db, settings) -> str:
    """A queued job no worker was sent (so none can take it while the test changes it)."""
    with db.session() as session:
        return admission.create(session, Recipe.model_validate(small_recipe()), "default", settings).id


def test_a_queued_job_cancelled_says_so_in_its_error(client, db, backend):
    job_id = undispatched_job(db, backend)
    assert_cause(client.post(f"/v1/jobs/{job_id}/cancel").get_json(), Cause.CANCELLED, status="cancelled")


@pytest.mark.worker
def test_any_other_failure_is_training_error_pointing_at_the_logs(http, worker, db):
    """A dataset whose stored bytes no longer match their sha256: admission reads only its description,
    the worker reads the bytes and fails."""
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    np.savez(buffer, x=rng.normal(size=(60, 4)).astype("float32"), y=rng.integers(0, 3, 60))
    dataset = http.post("/v1/datasets", files={"file": ("causes.npz", buffer.getvalue())}, data={"name": "causes"}).json()
    with db.session() as session:
        artifact_id = session.scalar(select(Artifact.id).where(Artifact.dataset_id == dataset["id"]))
        session.execute(
            update(ArtifactChunk)
            .where(ArtifactChunk.artifact_id == artifact_id, ArtifactChunk.seq == 0)
            .values(data=b"\x00" * 64)
        )
    job = http.post("/v1/jobs", json=small_recipe(**{"dataset.name": dataset["id"]})).json()
    error = assert_cause(wait_for(http, job["id"], {"succeeded", "failed"}), Cause.TRAINING_ERROR)
    assert "sha256" in error["message"]
    assert "Traceback" in http.get(f"/v1/jobs/{job['id']}/logs").text


def test_a_job_lost_on_every_attempt_fails_worker_lost(client, db, backend):
    """The requeue itself (a SIGKILLed worker, a second one resumes) is tests/test_worker_lost.py."""
    job_id = undispatched_job(db, backend)
    with db.session() as session:  # its last attempt's worker went silent
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                status=JobStatus.RUNNING.value,
                attempt=backend.max_attempts,
                heartbeat_at=utcnow() - timedelta(seconds=backend.heartbeat_timeout_s + 5),
            )
        )
    with db.session() as session:
        assert job_id in reconcile(session, backend)["failed"]
    assert_cause(client.get(f"/v1/jobs/{job_id}").get_json(), Cause.WORKER_LOST)


# --- out of memory: a worker of its own ----------------------------------------------------------------------

#: 64 values per sample widened to 2,048 on the last axis: ~800 MiB of activations at batch 256, 7k parameters.
WIDE = [
    {"type": "reshape", "target_shape": [64, 1]},
    {"type": "dense", "units": 2048, "activation": "relu"},
    {"type": "dense", "units": 1},
    {"type": "flatten"},
    {"type": "dense", "units": 10, "activation": "softmax"},
]


def wide_recipe() -> dict:
    recipe = small_recipe(
        **{
            "name": "wide",
            "dataset.name": "digits",
            "model.input_shape": [64],
            "model.layers": WIDE,
            "training.batch_size": 256,
            "training.epochs": 1000,
        }
    )
    recipe.pop("pruning")
    return recipe


def serve(settings):
    server = LiveServer(create_app(settings))
    return server, httpx.Client(base_url=server.url, timeout=30)


def the_child(worker) -> int:
    """The pool child training the job (the worker runs one, concurrency 1)."""
    (pid,) = children(worker.proc.pid)
    return pid


@pytest.mark.worker
@pytest.mark.parametrize("isolated_backend", ["sqlite"], indirect=True)  # the guard is in the worker child
def test_a_job_over_the_per_job_memory_limit_fails_out_of_memory_on_its_first_attempt(isolated_backend, tmp_path):
    # admission (whatever its own estimate) lets the recipe through: this is the worker's net under it
    settings = dataclasses.replace(isolated_backend, max_training_bytes=64 * 1024 * MIB)
    server, http = serve(settings)
    worker = start_worker(settings, tmp_path / "w.log", TRAINER_MAX_JOB_MEMORY_BYTES=400 * MIB)
    try:
        wide = http.post("/v1/jobs", json=wide_recipe())
        assert wide.status_code == 202, wide.text
        done = wait_for(http, wide.json()["id"], {"succeeded", "failed"}, timeout=120)
        error = assert_cause(done, Cause.OUT_OF_MEMORY)
        assert done["attempt"] == 1 and "over this worker's per-job limit of 400 MiB" in error["message"]
        assert "job failed: out_of_memory" in http.get(f"/v1/jobs/{done['id']}/logs").text

        after = http.post("/v1/jobs", json=small_recipe()).json()  # the worker lives on; ~150 MiB jobs run
        assert wait_for(http, after["id"], {"succeeded", "failed"})["status"] == "succeeded"
        again = http.get(f"/v1/jobs/{done['id']}").json()  # the redelivered message did not run it again
        assert again["status"] == "failed" and again["attempt"] == 1
    finally:
        worker.stop()
        server.close()


@pytest.mark.worker
# the requeue after a SIGKILL is tested on both brokers in test_worker_lost; here the cause is the point
@pytest.mark.parametrize("isolated_backend", ["postgres"], indirect=True)
def test_a_kernel_oom_kill_fails_out_of_memory_and_any_other_sigkill_resumes(isolated_backend, tmp_path):
    """The kernel's OOM killer is what a container's memory limit calls: a SIGKILL of the child while the
    cgroup's oom_kill count goes up. The count is a file the test writes (no cgroup of our own here)."""
    events = tmp_path / "memory.events"
    events.write_text("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")
    server, http = serve(isolated_backend)
    worker = start_worker(
        isolated_backend, tmp_path / "w.log", TRAINER_OOM_EVENTS_PATH=events, TRAINER_HEARTBEAT_TIMEOUT_S=3
    )
    long = small_recipe(**{"training.epochs": 20, "training.batch_size": 4})
    try:
        oom = http.post("/v1/jobs", json=long).json()
        wait_until(lambda: http.get(f"/v1/jobs/{oom['id']}").json()["history"], timeout=120)
        events.write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
        os.kill(the_child(worker), signal.SIGKILL)
        done = wait_for(http, oom["id"], {"succeeded", "failed", "queued"}, timeout=60)
        error = assert_cause(done, Cause.OUT_OF_MEMORY)
        assert done["attempt"] == 1 and "OOM killer" in error["message"]

        other = http.post("/v1/jobs", json=long).json()  # killed by someone, not for memory: requeued, resumed
        wait_until(lambda: len(http.get(f"/v1/jobs/{other['id']}").json()["history"]) >= 2, timeout=120)
        os.kill(the_child(worker), signal.SIGKILL)
        done = wait_for(http, other["id"], {"succeeded", "failed"}, timeout=180)
        assert done["status"] == "succeeded" and done["attempt"] == 2, done["error"]
        assert "resuming from the checkpoint" in http.get(f"/v1/jobs/{other['id']}/logs").text
        assert "not for memory" in worker.log()
    finally:
        worker.stop()
        server.close()


def test_oom_kills_are_read_from_cgroup_v2_and_v1_files(tmp_path):
    v2, v1 = tmp_path / "memory.events", tmp_path / "memory.oom_control"
    v2.write_text("low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\noom_group_kill 0\n")
    v1.write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 5\n")
    assert (oom_kills(v2), oom_kills(v1), oom_kills(tmp_path / "absent"), oom_kills(None)) == (2, 5, None, None)
    assert oom_events_file(str(v2)) == v2
    found = oom_events_file()  # this machine's own cgroup file, or none: never a file without the count
    assert found is None or oom_kills(found) is not None


@pytest.mark.parametrize("allocation", ["tensorflow", "python"])
def test_an_allocation_that_fails_inside_training_is_out_of_memory(client, db, backend, monkeypatch, allocation):
    """TensorFlow's ResourceExhaustedError (a GPU's memory) and Python's MemoryError, raised in training."""
    from worker import runner
    from worker.tf_env import tf

    def exhausted(*_):
        if allocation == "tensorflow":
            raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[256,64,2048]")
        raise MemoryError("Unable to allocate 2.00 GiB for an array")

    job_id = undispatched_job(db, backend)
    monkeypatch.setattr(runner, "_train_and_store", exhausted)
    assert runner.run_job(db, backend, job_id) == "failed"
    body = client.get(f"/v1/jobs/{job_id}").get_json()
    assert "allocat" in assert_cause(body, Cause.OUT_OF_MEMORY)["message"] and body["attempt"] == 1
