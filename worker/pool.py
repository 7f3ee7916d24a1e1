"""The prefork pool, but the replacement child is forked as soon as the old one can be reaped.

With ``max_tasks_per_child=1`` every job ends with its child exiting. Celery's event loop (Redis
broker) learns of the exit from the child's sentinel pipe, tries to reap it once and stops watching
it. The pipe closes while the kernel is still tearing the child down (leader already a zombie, a
TensorFlow thread not yet gone), so that one ``waitpid`` usually finds nothing and the new child is
only forked by the pool's 5 s maintenance timer: the next job then waits up to 5 s on an idle worker.
Here the reap is retried every few milliseconds until it succeeds.

It also tells ``worker.memory_guard`` when a child running a job died abnormally (with its exit
code: -9 for a SIGKILL), which only the process that reaps the child can know.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from billiard import pool as billiard_pool
from celery.concurrency import asynpool, prefork

REAP_RETRY_S = 0.01
REAP_GIVE_UP_S = 2.0  # after this the pool's own 5 s timer still replaces the child
#: Called with (pid, exitcode) for each child that died while running a job; must not block (the event loop).
lost_child_listeners: list[Callable[[int, int], None]] = []


class TellsLostChildren(billiard_pool.Pool):
    """Tells ``lost_child_listeners`` of a child that died running a job, then lets the pool mark it lost.

    A mixin placed before the pool class it extends (the MRO is the same as a plain mixin's)."""

    def on_job_process_lost(self, job: object, pid: int, exitcode: int) -> None:
        for listener in lost_child_listeners:
            try:
                listener(pid, exitcode)
            except Exception:  # noqa: BLE001 - a listener must not break the pool's bookkeeping
                logging.getLogger(__name__).exception("lost-child listener failed")
        super().on_job_process_lost(job, pid, exitcode)


class AsynPool(TellsLostChildren, asynpool.AsynPool):
    def _event_process_exit(self, hub, proc):
        super()._event_process_exit(hub, proc)  # stops watching the sentinel, maintain_pool()
        if any(w is proc for w in self._pool):  # not reapable yet
            self._reap_soon(hub, proc, time.monotonic() + REAP_GIVE_UP_S)

    def _reap_soon(self, hub, proc, give_up_at):
        def retry():
            self.maintain_pool()
            if any(w is proc for w in self._pool) and time.monotonic() < give_up_at:
                hub.call_later(REAP_RETRY_S, retry)

        hub.call_later(REAP_RETRY_S, retry)


class BlockingPool(TellsLostChildren, billiard_pool.Pool):
    """What prefork uses for a broker without async I/O (the embedded SQLAlchemy transport)."""


class TaskPool(prefork.TaskPool):
    Pool = AsynPool
    BlockingPool = BlockingPool

    def on_start(self) -> None:
        super().on_start()
        started.append(self)

    def child_pids(self) -> list[int]:
        return [proc.pid for proc in getattr(self._pool, "_pool", []) if proc.pid]


#: The pools this process started (one per worker): ``worker.celery_app`` tells their children to stop.
started: list[TaskPool] = []
