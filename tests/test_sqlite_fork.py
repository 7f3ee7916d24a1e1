"""A child forked while the parent's threads use SQLite never sits on an inherited lock: ``worker.sqlite_fork``
either lets it go on with a usable database or ends it before it takes a task (the worker's pool forks
another). Real forks of a process with a thread busy on the same file, as billiard forks beside the embedded
broker's polling."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time

from core.settings import load_settings
from worker import sqlite_fork

FORKS = 30


def test_the_sqlite_files_probed_are_the_database_and_the_embedded_broker(tmp_path):
    settings = load_settings(
        database_url=f"sqlite:///{tmp_path / 'jobs.sqlite'}", broker_url=f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"
    )
    assert sqlite_fork.files(settings) == [str(tmp_path / "jobs.sqlite"), str(tmp_path / "broker.sqlite")]
    remote = load_settings(database_url="postgresql://postgres@127.0.0.1/test", broker_url="redis://127.0.0.1:6379/0")
    assert sqlite_fork.files(remote) == []


def _busy(path: str, stop: threading.Event) -> None:
    """Connects and reads over and over, as a poller does: no write lock that would make the child merely wait."""
    while not stop.is_set():
        connection = sqlite3.connect(path)
        connection.execute("SELECT count(*) FROM t").fetchall()
        connection.close()


def _child(path: str) -> None:
    """What a pool child does: the probe, then its real work on the same file."""
    sqlite_fork.probe([path], limit_s=1)
    connection = sqlite3.connect(path)
    connection.execute("SELECT count(*) FROM t").fetchall()
    os._exit(0)


def test_a_child_forked_beside_a_busy_thread_either_works_or_dies_at_the_probe_never_hangs(tmp_path):
    path = str(tmp_path / "busy.sqlite")
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE t (x)")
    stop = threading.Event()
    thread = threading.Thread(target=_busy, args=(path, stop), daemon=True)
    thread.start()
    outcomes = {"worked": 0, "ended_by_probe": 0, "hung": 0}
    try:
        time.sleep(0.2)
        for _ in range(FORKS):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                _child(path)
            deadline = time.monotonic() + 5
            while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
                time.sleep(0.005)
            if done[0] == 0:  # still blocked after 5 s: what the probe exists to prevent
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                outcomes["hung"] += 1
            elif os.WIFSIGNALED(done[1]) and os.WTERMSIG(done[1]) == signal.SIGALRM:
                outcomes["ended_by_probe"] += 1
            else:
                assert os.WIFEXITED(done[1]) and os.WEXITSTATUS(done[1]) == 0, done
                outcomes["worked"] += 1
    finally:
        stop.set()
        thread.join()
    assert outcomes["hung"] == 0, outcomes
    assert outcomes["worked"] > 0, outcomes
