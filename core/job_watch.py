"""Waiting for jobs to change without a database connection per waiter: ``GET /v1/jobs/{id}?wait=N``.

Every change of a job bumps ``Job.version`` (``core.job_state``), so "has it changed" is one indexed column.
One thread per process reads the versions of every job a request is waiting on, in one query every
``wait_poll_interval_s`` (its connection back in the pool between reads), and wakes the requests whose job moved.
It polls only while someone waits. This works the same on SQLite (``make run``, no Redis) and PostgreSQL, and
whichever process — worker, reconciler, another API worker — made the change.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from core.db import Database
from core.errors import NotFound
from core.models import Job

log = logging.getLogger(__name__)
#: The longest ``?wait=`` a request may ask for: under the usual 60 s proxy read timeouts, with room to spare.
MAX_WAIT_S = 30


class VersionWatch:
    """Versions only grow, so a job has changed for a waiter when its version is above the one the waiter saw
    (a read that raced the waiter's own can only be older, never a false change)."""

    def __init__(self, db: Database, interval_s: float):
        self.db, self.interval_s = db, interval_s
        self._cond = threading.Condition()
        self._waiting: dict[str, int] = {}  # job id -> requests waiting on it
        self._versions: dict[str, int] = {}  # the last read, for the ids it asked about
        self._gone: set[str] = set()  # asked about and not found: deleted
        self._thread: threading.Thread | None = None
        self._pid = 0

    def waiting(self) -> int:
        """Requests held now, in this process."""
        with self._cond:
            return sum(self._waiting.values())

    def wait(self, job_id: str, seen: int, timeout: float) -> int | None:
        """The job's version as soon as it is above ``seen``, None after ``timeout`` s; ``NotFound`` once the job is
        gone. The version read here is what the woken request answers with, so it needs no query of its own."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._ensure_thread()
            self._waiting[job_id] = self._waiting.get(job_id, 0) + 1
            self._cond.notify_all()  # an idle reader starts reading
            try:
                while True:
                    if job_id in self._gone:
                        raise NotFound(f"no job {job_id!r}")
                    version = self._versions.get(job_id, seen)
                    if version > seen:
                        return version
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    self._cond.wait(left)
            finally:
                self._waiting[job_id] -= 1
                if not self._waiting[job_id]:
                    del self._waiting[job_id]

    def _ensure_thread(self) -> None:
        """Started on first use, and again in a forked child (threads do not survive a fork)."""
        if self._thread is None or self._pid != os.getpid():
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._read_forever, name="job-version-watch", daemon=True)
            self._thread.start()

    def _read_forever(self) -> None:
        while True:
            with self._cond:
                while not self._waiting:
                    self._cond.wait()
                ids = list(self._waiting)
            try:
                with self.db.session() as session:
                    rows = session.execute(select(Job.id, Job.version).where(Job.id.in_(ids))).all()
                found = {job_id: version for job_id, version in rows}
            except SQLAlchemyError as exc:  # the waiters time out into 304s and ask again; this retries
                log.warning("could not read job versions: %s", str(exc).splitlines()[0])
                found = None
            with self._cond:
                gone = set(ids) - set(found) if found is not None else self._gone
                # held requests wake when a job they wait on moved, appeared or went, not on every read (10 a
                # second): a hundred threads woken to find nothing new take the GIL from the requests being served
                if found is not None and (found != self._versions or gone != self._gone):
                    self._versions, self._gone = found, gone
                    self._cond.notify_all()
            time.sleep(self.interval_s)
