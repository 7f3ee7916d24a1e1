"""Out of memory, told apart from any other kill: the worker's parent watches each job's process.

A job's process dies of memory in one of two ways, and either fails the job ``out_of_memory`` on that
attempt (the reconciler would otherwise requeue it, and it would be killed again, ``max_attempts`` times):

- it passes the per-job limit (``max_job_memory_bytes``; by default twice the admission limit): this
  guard reads each child's private memory from ``/proc`` every ``WATCH_INTERVAL_S``, SIGKILLs it, and
  fails its job itself. Works on any Linux, in a container or not, with no cgroup limit set;
- the kernel's OOM killer SIGKILLs it first (a container's memory limit was reached before this limit):
  the pool reports the child's exit (``worker.pool``), and if the cgroup's ``oom_kill`` count went up
  while that child lived, the job fails ``out_of_memory``.

Any other SIGKILL (an operator, a test, a host going down) leaves the job to the reconciler: requeued
and resumed from its checkpoint, as before.

A child inspecting an uploaded model (``worker.inspection``) is watched the same way: killed for memory, or
dead of any abnormal exit but a SIGKILL not for memory (a crash in a loader on a hostile file), its model is
rejected with that reason instead of being inspected again into the same end.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from pathlib import Path

from sqlalchemy.exc import OperationalError

from core import job_state, model_store
from core.causes import Cause, JobError
from core.db import Database
from core.settings import Settings
from worker.runner import worker_name

log = logging.getLogger(__name__)

#: Fast enough to catch a job whose memory grows over epochs; a single allocation that jumps past the
#: container's limit within this time is the kernel's to kill (the second case above).
WATCH_INTERVAL_S = 0.5
#: How long a child's oom_kill count at birth is kept after it was last seen (its exit is reported after it is reaped).
FORGET_AFTER_S = 120.0
MIB = 1024 * 1024


def children(parent: int) -> list[int]:
    """Pids whose parent is ``parent`` (from /proc: no psutil, and /proc/…/children is not always built in)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) ": state, ppid, …
        if len(fields) > 1 and int(fields[1]) == parent:
            found.append(int(entry.name))
    return found


def private_bytes(pid: int) -> int | None:
    """Memory the process has of its own: not the pages it still shares with the parent that forked it
    (TensorFlow imported once there), which its RSS counts too."""
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except FileNotFoundError:
        try:  # kernels before 4.14: resident minus shared
            resident, shared = Path(f"/proc/{pid}/statm").read_text().split()[1:3]
        except (OSError, ValueError):
            return None
        return (int(resident) - int(shared)) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None
    total = 0
    for line in rollup.splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1]) * 1024
    return total


def oom_kills(path: Path | None) -> int | None:
    """The ``oom_kill`` count of a cgroup v2 ``memory.events`` or v1 ``memory.oom_control`` file."""
    if path is None:
        return None
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    except (OSError, ValueError):
        return None
    return None


def oom_events_file(configured: str = "") -> Path | None:
    """This process's cgroup file that counts OOM kills, or None where there is none to read."""
    if configured:
        return Path(configured)
    candidates: list[Path] = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        relative = path.lstrip("/")
        if "memory" in controllers.split(","):  # cgroup v1 (or hybrid): the memory controller's own tree
            candidates += [
                Path("/sys/fs/cgroup/memory", relative, "memory.oom_control"),
                Path("/sys/fs/cgroup/memory/memory.oom_control"),
            ]
    for line in lines:
        if line.startswith("0::"):  # cgroup v2; inside a container's namespace the root is the container
            relative = line[3:].lstrip("/")
            candidates += [Path("/sys/fs/cgroup", relative, "memory.events"), Path("/sys/fs/cgroup/memory.events")]
    return next((c for c in candidates if oom_kills(c) is not None), None)


class MemoryGuard:
    """A thread of the worker's parent: kills a job's process over the limit, and names the cause of a kill."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.limit = settings.max_job_memory_bytes or 2 * settings.max_training_bytes
        self.events = oom_events_file(settings.oom_events_path)
        self.parent = os.getpid()
        self.db: Database | None = None
        self._lost: queue.SimpleQueue[tuple[int, int]] = queue.SimpleQueue()
        self._oom_at_birth: dict[int, int | None] = {}  # child pid → oom_kill count when first seen
        self._last_seen: dict[int, float] = {}
        self._killed: set[int] = set()
        self._unrecorded: list[tuple[int, JobError]] = []  # failures to write once the database answers
        self._crashed: list[tuple[int, int]] = []  # (pid, exit code): children that died on their own
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="memory-guard", daemon=True)

    def start(self) -> None:
        self.db = Database(self.settings)
        self._thread.start()
        log.info(
            "memory guard: a job's process is killed past %d MiB of its own memory; OOM kills counted in %s",
            self.limit // MIB,
            self.events or "no cgroup file (only this guard's kills are told apart)",
        )

    def stop(self) -> None:
        self._stop.set()

    def child_lost(self, pid: int, exitcode: int) -> None:
        """Called by the pool (its event loop, so only queued here) when a child running a job exited abnormally."""
        self._lost.put((pid, exitcode))

    def run_once(self) -> None:
        oom_now, now = oom_kills(self.events), time.monotonic()
        for pid in children(self.parent):
            self._oom_at_birth.setdefault(pid, oom_now)
            self._last_seen[pid] = now
            used = private_bytes(pid)
            if used is not None and used > self.limit and pid not in self._killed:
                self._kill(pid, used)
        self._name_lost_children()
        for pid, seen in list(self._last_seen.items()):
            if now - seen > FORGET_AFTER_S:
                del self._last_seen[pid]
                self._oom_at_birth.pop(pid, None)
                self._killed.discard(pid)
        self._record()

    def _kill(self, pid: int, used: int) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        self._killed.add(pid)
        message = (
            f"the job's process used {used // MIB} MiB of its own memory, over this worker's per-job limit "
            f"of {self.limit // MIB} MiB (TRAINER_MAX_JOB_MEMORY_BYTES)"
        )
        log.error("killed child %d: %s", pid, message)
        self._unrecorded.append((pid, JobError.of(Cause.OUT_OF_MEMORY, message)))

    def _name_lost_children(self) -> None:
        while True:
            try:
                pid, exitcode = self._lost.get_nowait()
            except queue.Empty:
                return
            before = self._oom_at_birth.pop(pid, None)
            if pid in self._killed:  # ours: already recorded
                self._killed.discard(pid)
                continue
            if exitcode != -signal.SIGKILL:
                self._crashed.append((pid, exitcode))
                continue
            after = oom_kills(self.events)
            if before is not None and after is not None and after > before:
                message = (
                    f"the kernel's OOM killer ended the job's process (oom_kill in {self.events} went from "
                    f"{before} to {after}): the worker's memory limit is below what this job needs"
                )
                log.error("child %d: %s", pid, message)
                self._unrecorded.append((pid, JobError.of(Cause.OUT_OF_MEMORY, message)))
            else:
                log.warning("child %d was SIGKILLed, not for memory: its job is left to the reconciler", pid)

    def _record(self) -> None:
        while self._crashed:
            pid, exitcode = self._crashed[0]
            if self.db is None:
                raise RuntimeError("start() opens the database the guard records in")
            reason = f"the process inspecting it died (exit code {exitcode}) while reading or loading the file"
            try:
                with self.db.session() as session:
                    model_id = model_store.reject_inspecting_on(session, worker_name(pid), reason)
            except OperationalError as exc:
                log.warning("could not record child %d's crash yet: %s", pid, str(exc).splitlines()[0])
                return
            self._crashed.pop(0)
            if model_id:
                log.error("model %s: rejected, %s", model_id, reason)
        while self._unrecorded:
            pid, error = self._unrecorded[0]
            if self.db is None:
                raise RuntimeError("start() opens the database the guard records in")
            try:
                with self.db.session() as session:
                    job_id = job_state.fail_running_on(session, worker_name(pid), error)
                    model_id = None if job_id else model_store.reject_inspecting_on(session, worker_name(pid), error.message)
            except OperationalError as exc:  # the database is away: the next round tries again
                log.warning("could not record child %d's job as out_of_memory yet: %s", pid, str(exc).splitlines()[0])
                return
            self._unrecorded.pop(0)
            if job_id:
                log.error("job %s: failed as out_of_memory", job_id)
            if model_id:
                log.error("model %s: rejected, its inspection ran out of memory", model_id)

    def _loop(self) -> None:
        while not self._stop.wait(WATCH_INTERVAL_S):
            try:
                self.run_once()
            except Exception as exc:  # noqa: BLE001 - the guard must outlive any one bad round
                log.warning("memory guard round failed: %s", exc)
