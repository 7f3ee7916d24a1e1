"""Re-sends queued jobs nobody took and requeues (or fails) running jobs whose heartbeat went stale; re-sends
uploaded models' inspections nobody took or finished (``core.model_store.reconcile``).

A thread of the worker's parent process: the child is busy training, and the embedded SQLAlchemy
transport has no redelivery of its own, so this loop is what makes "no job is lost" true.
"""

from __future__ import annotations

import logging
import threading

from celery import Celery

from core import backlog, checkpoints, model_store
from core.db import Database
from core.queue import INSPECT_TASK, dispatch
from core.reconcile import reconcile
from core.settings import Settings

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(self, settings: Settings, celery: Celery):
        self.settings, self.celery = settings, celery
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="reconciler", daemon=True)
        self.db: Database | None = None
        self._suspects: set[str] = set()  # queued jobs the broker did not hold at the last round

    def start(self) -> None:
        self.db = Database(self.settings)
        self._thread.start()
        log.info(
            "reconciler every %.1fs (requeue after %.0fs silent, resend after %.0fs queued)",
            self.settings.reconcile_interval_s,
            self.settings.heartbeat_timeout_s,
            self.settings.redispatch_after_s,
        )

    def stop(self) -> None:
        self._stop.set()

    def run_once(self) -> dict[str, list[str]]:
        if self.db is None:
            raise RuntimeError("start() opens the database the reconciler works on")
        with self.db.session() as session:
            found = reconcile(
                session, self.settings, held=lambda: backlog.held_job_ids(self.settings), suspects=self._suspects
            )
            inspections = model_store.reconcile(session, self.settings)
        for model_id in inspections["redispatch"]:
            log.warning("model %s: sending its inspection again", model_id)
            dispatch(self.celery, model_id, INSPECT_TASK)
        for model_id in inspections["rejected"]:
            log.error("model %s: rejected, its inspection never finished", model_id)
        for job_id in found["redispatch"]:
            log.warning("job %s: sending again", job_id)
            dispatch(self.celery, job_id)
        if found["in_queue"]:
            log.info(
                "%d queued job(s) older than %.0fs still in the broker's queue: not sent again",
                len(found["in_queue"]),
                self.settings.redispatch_after_s,
            )
        with self.db.session() as session:
            orphans, size = checkpoints.remove_orphans(session)
        found["checkpoints_removed"] = orphans
        if orphans:
            log.info("removed %d checkpoint(s) of jobs that ended (%d bytes)", len(orphans), size)
        for job_id in found["failed"]:
            log.error("job %s: failed as worker_lost", job_id)
        _count(found)
        return found

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.reconcile_interval_s):
            try:
                self.run_once()
            except Exception as exc:  # a database or broker blip: try again next round
                log.warning("reconcile failed: %s", exc)


def _count(found: dict[str, list[str]]) -> None:
    from worker import metrics  # after worker.celery_app chose the metrics' directory

    requeued = len(found.get("requeued", []))
    for action, n in (
        ("redispatched", len(found["redispatch"]) - requeued),
        ("requeued", requeued),
        ("failed_worker_lost", len(found["failed"])),
    ):
        if n:
            metrics.RECONCILER.labels(action).inc(n)
