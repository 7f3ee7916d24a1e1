"""Engine and sessions. One engine per process; forked Celery children get their own."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Delete, Update, create_engine, event
from sqlalchemy.engine import CursorResult, Engine
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings


def make_engine(settings: Settings) -> Engine:
    if settings.is_sqlite:
        # The API (threads), the worker and the reconciler share one file: wait for locks rather than fail.
        engine = create_engine(settings.database_url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: DBAPIConnection, _record: object) -> None:
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


def rows_matched(session: Session, statement: Update | Delete) -> int:
    """Run a guarded UPDATE/DELETE through the session (which keeps its loaded objects in step) and return the
    rows it matched. An ORM UPDATE/DELETE gives a ``CursorResult``; ``Session.execute`` is typed as a plain Result."""
    result = session.execute(statement)
    if not isinstance(result, CursorResult):
        raise TypeError(f"an UPDATE/DELETE gave a {type(result).__name__}, not a CursorResult")
    return result.rowcount
