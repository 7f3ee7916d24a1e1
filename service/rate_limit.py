"""Per-token request rate limit: a fixed one-minute window, counted where every API process sees it.

gunicorn runs several worker processes, so a counter in one process's memory would let a token make
``workers ×`` the limit. With a Redis broker the count is a Redis key per token and minute (``INCR`` and
``EXPIRE`` in one pipelined round trip); otherwise (the embedded SQLAlchemy broker) it is one upserted row
per token in the database, in the same transaction that looked the token up. A fixed window admits up to
twice the limit across a minute boundary; that is the price of one counter per token.

If Redis cannot be reached the request is let through and counting pauses for a few seconds: a broker
outage already stops new work from being dispatched and must not also refuse every poll.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from sqlalchemy import Table, case
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from core.errors import RateLimited
from core.models import RateWindow
from core.settings import Settings

log = logging.getLogger(__name__)
WINDOW_S = 60
REDIS_TIMEOUT_S = 0.5
#: After a Redis error, requests go uncounted for this long instead of each waiting on a dead socket.
REDIS_BACKOFF_S = 5.0


class Limiter(Protocol):
    def count(self, session: Session, key: str, minute: int) -> int: ...


def check(limiter: Limiter | None, limit: int, session: Session, key: str) -> None:
    """Count one request for ``key``; over ``limit`` this minute → ``RateLimited`` with ``retry_after_s``."""
    if limiter is None:
        return
    now = time.time()
    minute = int(now // WINDOW_S)
    made = limiter.count(session, key, minute)
    if made > limit:
        retry_after = max(1, int((minute + 1) * WINDOW_S - now + 0.999))
        raise RateLimited(
            f"this token made more than {limit} requests this minute (TRAINER_RATE_LIMIT_PER_MINUTE); "
            f"retry after {retry_after} s",
            retry_after_s=retry_after,
        )


def make_limiter(settings: Settings) -> Limiter | None:
    if settings.rate_limit_per_minute <= 0:
        return None
    if settings.broker_url.startswith(("redis://", "rediss://")):
        return RedisWindows(settings.broker_url)
    return DatabaseWindows(settings.is_sqlite)


class RedisWindows:
    def __init__(self, url: str):
        import redis

        self._errors = redis.RedisError
        self.redis = redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S)
        self._paused_until = 0.0

    def count(self, session: Session, key: str, minute: int) -> int:
        if time.monotonic() < self._paused_until:
            return 0
        name = f"trainer:rate:{key}:{minute}"
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.incr(name)
            pipe.expire(name, 2 * WINDOW_S)
            made, _ = pipe.execute()
        except self._errors as exc:
            log.warning("rate limit not counted for %.0f s: Redis unreachable (%s)", REDIS_BACKOFF_S, exc)
            self._paused_until = time.monotonic() + REDIS_BACKOFF_S
            return 0
        return int(made)


class DatabaseWindows:
    """One row per token: its current minute and the requests made in it, bumped by one upsert."""

    def __init__(self, is_sqlite: bool):
        self._insert: Callable[[Table], sqlite.Insert | postgresql.Insert] = (
            sqlite.insert if is_sqlite else postgresql.insert
        )

    def count(self, session: Session, key: str, minute: int) -> int:
        table = RateWindow.metadata.tables[RateWindow.__tablename__]
        stmt = (
            self._insert(table)
            .values(token_sha256=key, minute=minute, count=1)
            .on_conflict_do_update(
                index_elements=[table.c.token_sha256],
                set_={"count": case((table.c.minute == minute, table.c.count + 1), else_=1), "minute": minute},
            )
            .returning(table.c.count)
        )
        return int(session.execute(stmt).scalar_one())
