"""The Celery worker: one job per child process, a fresh child per job, a reconciler and a memory guard
in the parent.

Run with ``celery -A worker.celery_app worker``. The parent imports TensorFlow once (no GPU context
is created by importing), so each forked child starts training without paying the import again.
"""

from __future__ import annotations

import gc
import logging

from celery import signals

from core import log_context, multiprocess_metrics
from core.db import Database
from core.models import JobStatus
from core.queue import INSPECT_TASK, TRAIN_TASK, dispatch, make_celery
from core.settings import load_settings

settings = load_settings()
if settings.worker_metrics_port:  # before anything imports prometheus_client (see core.multiprocess_metrics)
    _metrics_dir = multiprocess_metrics.prepare(settings, "worker")
app = make_celery(settings)
# Prefork, with the next child forked right after the last one exits (see worker.pool).
app.conf.worker_pool = "worker.pool:TaskPool"
log = logging.getLogger(__name__)
_state: dict = {}


def database() -> Database:
    if "db" not in _state:
        _state["db"] = Database(settings)
    return _state["db"]


@signals.setup_logging.connect
def _logging(**_):
    """Celery's own lines too go through ``core.log_context``'s handler (JSON or text, TRAINER_LOG_FORMAT)."""
    log_context.configure(settings)


@signals.worker_init.connect
def _preload_tensorflow(**_):
    """Import TF in the parent (shared by every forked child); create no device context here."""
    import worker.plots  # noqa: F401  (matplotlib too: once per worker, not per job)
    import worker.tf_env  # noqa: F401

    # Celery runs gc.collect() before forking each child: ~0.25 s over TF's ~430k objects unless
    # they are moved out of the collector's reach (also spares the children copy-on-write faults).
    gc.freeze()
    log.info("TensorFlow imported in the worker parent")


@signals.worker_process_init.connect
def _child_init(**_):
    """In each fresh child: own DB connections, GPU memory growth before any op, and the device it will use."""
    from worker import sqlite_fork

    sqlite_fork.probe(sqlite_fork.files(settings))
    if "db" in _state:
        _state["db"].after_fork()
    from worker import devices

    _state["device"] = devices.configure()


@signals.worker_ready.connect
def _start_reconciler(sender=None, **_):
    from worker import pool
    from worker.memory_guard import MemoryGuard
    from worker.reconciler import Reconciler

    _state["reconciler"] = Reconciler(settings, app)
    _state["reconciler"].start()
    _state["memory_guard"] = guard = MemoryGuard(settings)
    pool.lost_child_listeners.append(guard.child_lost)
    guard.start()
    if settings.worker_metrics_port:
        from worker import metrics

        metrics.serve(settings, str(_metrics_dir[0]))


@signals.worker_process_shutdown.connect
def _child_exit(pid=None, **_):
    """Nothing here is a live gauge, but a child that exits is marked dead as prometheus-client asks."""
    if settings.worker_metrics_port:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


@signals.worker_shutdown.connect
def _stop_reconciler(**_):
    for name in ("reconciler", "memory_guard"):
        if name in _state:
            _state[name].stop()
    if settings.worker_metrics_port and _metrics_dir[1]:
        multiprocess_metrics.remove(_metrics_dir[0])


@signals.worker_shutting_down.connect
def _hand_back_running_jobs(how=None, **_):
    """A warm shutdown (SIGTERM) would wait for the whole job: ask the children to hand theirs back instead."""
    if how == "Warm":
        from worker import pool, shutdown

        shutdown.tell_children([pid for p in pool.started for pid in p.child_pids()])


@app.task(name=TRAIN_TASK, acks_late=True, reject_on_worker_lost=True)
def train_job(job_id: str) -> str | None:
    from worker import shutdown
    from worker.runner import run_job

    shutdown.hand_back_on_sigterm()
    status = run_job(database(), settings, job_id, device=_state.get("device", "CPU:0"))
    if status == JobStatus.QUEUED.value:  # handed back: another worker takes it now, not at the reconciler's next look
        dispatch(app, job_id)
    return status


@app.task(name=INSPECT_TASK, acks_late=True, reject_on_worker_lost=False, time_limit=settings.inspect_timeout_s)
def inspect_model(model_id: str) -> str | None:
    """Not redelivered when its child dies: a file that crashed it is rejected by the memory guard, a lost worker's
    inspection is sent again by the reconciler. One that hangs is killed at ``inspect_timeout_s`` (the worker runs
    one task at a time: a hung load must not hold it), then sent again by the reconciler up to ``max_attempts``."""
    from worker.inspection import inspect_model as inspect

    return inspect(database(), settings, model_id)
