"""A worker told to stop (SIGTERM: ``docker compose stop``/``restart``, a rolling deploy) hands its job back.

Celery's warm shutdown waits for the running task, which here is a whole training run; the container's
stop grace period ends that wait with a SIGKILL, and the job then sat ``running`` until its heartbeat timed
out. Instead the parent passes the SIGTERM on to the child that trains; the child's training callback
sees the request, finishes the epoch when that is quick (else stops at the next batch), writes a
checkpoint, and ``worker.runner`` puts the job back to ``queued`` (``core.job_state.hand_back``); the
task then sends its id again, so another worker resumes it at once.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

log = logging.getLogger(__name__)
_requested = threading.Event()
#: What a job's ``stop_reason`` says once its worker is stopping: the job goes back to the queue, not to an end.
HANDED_BACK = "handed_back"


def requested() -> bool:
    """Has this process been told to stop?"""
    return _requested.is_set()


def _on_sigterm(signum: int, frame: object) -> None:
    _requested.set()


def hand_back_on_sigterm() -> None:
    """In the child, as a job starts: SIGTERM asks for a hand-back instead of exiting mid-batch.

    Installed per task, not at ``worker_process_init``: billiard resets the child's SIGTERM handler to its
    own (raise ``SystemExit``) after that signal has run."""
    signal.signal(signal.SIGTERM, _on_sigterm)


def tell_children(pids: list[int]) -> None:
    """In the parent, on a warm shutdown: pass the stop to the pool's children (a container's SIGTERM
    reaches only its PID 1). The parent marks itself stopping first: its consumer may still take a message
    (the hand-back's own re-send among them) and fork a child for it, and that child — born with the mark —
    leaves the job queued instead of claiming it and dying in the shutdown's SIGKILL."""
    _requested.set()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    if pids:
        log.info("asked %d pool process(es) to hand their job back", len(pids))
