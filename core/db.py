"""Engine and sessions. One engine per process; forked Celery children get their own."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings


def make_engine(settings: Settings) -> Engine:
    if settings.is_sqlite:
        # The API (threads), the worker and the reconciler share one file: wait for locks rather than fail.
        engine = create_engine(settings.database_url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(settings.database_url, pool_pre_ping=True, pool_size=5, max_overflow=10)


class Database:
    """Holds the engine; ``session()`` commits on success and rolls back on error."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.engine = make_engine(settings)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session:
            with session.begin():
                yield session

    def after_fork(self) -> None:
        """A forked child must not reuse the parent's sockets."""
        self.engine.dispose(close=False)
