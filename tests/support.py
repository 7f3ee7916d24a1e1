"""Helpers the tests share: recipes, waiting on jobs, starting real worker processes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

from core.settings import ROOT, Settings


class Recorder:
    """Training hooks that keep every epoch's metrics and diagnostics, and stop after ``stop_after`` epochs."""

    def __init__(self, stop_after: int | None = None):
        self.epochs: list[dict] = []
        self.diagnostics: list = []
        self.stop_after = stop_after

    def on_epoch(self, epoch, metrics, diagnostics=None, phase=None, state=None):
        self.epochs.append(metrics)
        self.diagnostics.append(diagnostics)

    def stop_reason(self):
        return "cancelled" if self.stop_after is not None and len(self.epochs) >= self.stop_after else None


def small_recipe(**overrides) -> dict:
    """A tiny pruned iris model: trains in about a second."""
    recipe = {
        "name": "iris-small",
        "dataset": {"name": "iris", "test_fraction": 0.2, "validation_fraction": 0.1},
        "seed": 7,
        "model": {"input_shape": [4], "layers": [
            {"type": "dense", "units": 16, "activation": "relu", "kernel_initializer": "he_normal"},
            {"type": "dense", "units": 3, "activation": "softmax"},
        ]},
        "training": {"optimizer": {"type": "adam", "learning_rate": 0.01}, "epochs": 5, "batch_size": 16},
        "regularization": {"l1": 1e-5},
        "pruning": {"schedule": {"type": "polynomial_decay", "initial_sparsity": 0.0, "final_sparsity": 0.5,
                                 "begin_step": 0, "end_step": "auto", "frequency": 2}},
        "export": {"formats": ["h5"]},
    }
    for dotted, value in overrides.items():
        target = recipe
        *path, last = dotted.split(".")
        for part in path:
            target = target[part]
        target[last] = value
    return recipe


UNTIL_CANCELLED = {"name": "until-cancelled", "training.epochs": 100_000, "training.batch_size": 1}
"""Overrides for ``small_recipe``: the recipe's maximum of epochs at ~100 steps each, hours on any machine, so a
test that must catch the job running (to cancel it, watch it move, kill its worker) never races its natural end.
Submit it to ``patient_api``: the suite's own API caps epochs at 1,000; cancel it in a ``finally``."""


def worker_env(settings: Settings, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINER_", "DATABASE_URL", "CELERY_"))}
    env.update({
        "DATABASE_URL": settings.database_url,
        "CELERY_BROKER_URL": settings.broker_url,
        "TRAINER_HEARTBEAT_INTERVAL_S": str(settings.heartbeat_interval_s),
        "TRAINER_HEARTBEAT_TIMEOUT_S": str(settings.heartbeat_timeout_s),
        "TRAINER_RECONCILE_INTERVAL_S": str(settings.reconcile_interval_s),
        "TRAINER_REDISPATCH_AFTER_S": str(settings.redispatch_after_s),
        "TRAINER_MAX_ATTEMPTS": str(settings.max_attempts),
        "TRAINER_CHECKPOINT_INTERVAL_S": str(settings.checkpoint_interval_s),
        "PYTHONUNBUFFERED": "1",
    })
    env.update({k: str(v) for k, v in extra.items()})
    return env


@dataclass
class WorkerProcess:
    proc: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pause(self) -> None:
        """SIGSTOP the worker and its children: a running job holds where it is until ``resume``."""
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.proc.pid, signal.SIGCONT)

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            os.killpg(self.proc.pid, signal.SIGCONT)  # a paused worker takes its signal only once it runs again
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def start_worker(settings: Settings, log_path: Path, **env) -> WorkerProcess:
    """A real ``celery worker`` process (prefork, one child per job), waited on until it says ready."""
    log = log_path.open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "celery"), "-A", "worker.celery_app", "worker", "--loglevel", "INFO",
         "--concurrency", "1", "--hostname", f"test-{uuid.uuid4().hex[:6]}@%h", "--without-mingle",
         "--without-gossip"],
        cwd=ROOT, env=worker_env(settings, **env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    worker = WorkerProcess(proc, log_path)
    deadline = time.monotonic() + 120
    while " ready." not in worker.log():
        if proc.poll() is not None or time.monotonic() > deadline:
            worker.stop(signal.SIGKILL)
            raise RuntimeError(f"worker did not start:\n{worker.log()[-3000:]}")
        time.sleep(0.2)
    return worker


def wait_for(http: httpx.Client, job_id: str, statuses: set[str], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = http.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s: {json.dumps(job)[:2000]}")
        time.sleep(0.2)


def wait_until(predicate, timeout: float = 60, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)
    return value
