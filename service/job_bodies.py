"""The job's JSON, built once per version and shared by every request that asks for that version.

When a job records an epoch, every client holding ``?wait=`` on it wakes at the same moment. Built per request,
50 followers meant 50 reads of the job, its history and its artifacts and 50 serialisations, one after another
under the GIL — the last client saw the epoch a second after the first. A job's body is a function of its
``version`` (every change a client can see bumps it, which is also what makes the ETag right), and the body says
nothing about who asked, so one build per version serves them all: the first request builds it while the others
for the same job wait on that job's lock, then they all send the same bytes.

Per process and bounded; the owner check is not cached (each request reads the version with its owner first).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

#: Jobs whose latest body is kept per process (only the latest version of each): the cache holds at most this many
#: job bodies, each the size of one ``GET /v1/jobs/{id}`` answer (history rows are bounded by TRAINER_MAX_EPOCHS).
MAX_JOBS = 128


class JobBodies:
    def __init__(self, max_jobs: int = MAX_JOBS):
        self.max_jobs = max_jobs
        self._lock = threading.Lock()
        self._bodies: OrderedDict[str, tuple[int, bytes]] = OrderedDict()
        self._building: dict[str, threading.Lock] = {}
        self.builds = 0  # for tests and the benchmark: how many times a body was actually built

    def get(self, job_id: str, version: int, build: Callable[[], tuple[int, bytes]]) -> tuple[int, bytes]:
        """The body of ``job_id`` at ``version`` or later, as ``(version, bytes)``; ``build`` reads the job as it is
        now and returns its version with its bytes (possibly newer than ``version``, never older)."""
        found = self._cached(job_id, version)
        if found:
            return found
        with self._lock:
            job_lock = self._building.setdefault(job_id, threading.Lock())
        with job_lock:
            found = self._cached(job_id, version)  # built by the request we waited for
            if found:
                return found
            built = build()
            self.builds += 1
            with self._lock:
                old = self._bodies.get(job_id)
                if old is None or old[0] < built[0]:
                    self._bodies[job_id] = built
                self._bodies.move_to_end(job_id)
                while len(self._bodies) > self.max_jobs:
                    gone, _ = self._bodies.popitem(last=False)
                    self._building.pop(gone, None)
            return built

    def _cached(self, job_id: str, version: int) -> tuple[int, bytes] | None:
        with self._lock:
            found = self._bodies.get(job_id)
            if found is None or found[0] < version:
                return None
            self._bodies.move_to_end(job_id)
            return found
