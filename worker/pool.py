"""The prefork pool, but the replacement child is forked as soon as the old one can be reaped.

With ``max_tasks_per_child=1`` every job ends with its child exiting. Celery's event loop (Redis
broker) learns of the exit from the child's sentinel pipe, tries to reap it once and stops watching
it. The pipe closes while the kernel is still tearing the child down (leader already a zombie, a
TensorFlow thread not yet gone), so that one ``waitpid`` usually finds nothing and the new child is
only forked by the pool's 5 s maintenance timer: the next job then waits up to 5 s on an idle worker.
Here the reap is retried every few milliseconds until it succeeds.
"""
from __future__ import annotations

import time

from celery.concurrency import asynpool, prefork

REAP_RETRY_S = 0.01
REAP_GIVE_UP_S = 2.0  # after this the pool's own 5 s timer still replaces the child


class AsynPool(asynpool.AsynPool):
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


class TaskPool(prefork.TaskPool):
    Pool = AsynPool
