"""Which jobs the broker still holds a message for, so the reconciler re-sends only what was really lost.

A job queued longer than ``TRAINER_REDISPATCH_AFTER_S`` is usually just waiting behind a backlog: its
message is in the queue and a worker will take it. Sending it again made a second delivery that the guarded
claim refused, but each cost a forked child (26 of 200 jobs in the scale run). Per transport:

* Redis keeps a message until it is acked: the ``training`` list holds those not yet delivered, the
  ``unacked`` hash those a worker took (its ``unacked_index`` says when). A delivery older than the
  threshold of a job still queued belongs to a worker that died before claiming it; Redis would give it
  back only after the visibility timeout (hours), so that one counts as lost.
* The SQLAlchemy transport marks a delivered row invisible and never gives it back (no acks): only its
  visible rows are held.

Anything else, or a broker that cannot be read, answers ``None``: every stale job is sent again, as before.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterable
from functools import cache
from typing import Any, cast

from sqlalchemy import Engine, create_engine, text

from core.settings import Settings

QUEUE = "training"  # core.queue's task_default_queue
TRAIN_TASK = "trainer.train_job"  # core.queue.TRAIN_TASK (not imported: that module pulls in Celery)
log = logging.getLogger(__name__)


def held_job_ids(settings: Settings) -> set[str] | None:
    """Ids of jobs whose message the broker holds for a worker to take; None when it cannot be told."""
    url = settings.broker_url
    try:
        if url.startswith("sqla+"):
            return _sqlalchemy(_engine(url.removeprefix("sqla+")))
        if url.startswith(("redis://", "rediss://")):
            return _redis(url, settings.redispatch_after_s)
    except Exception as exc:  # noqa: BLE001 - a broker we cannot read: fall back to re-sending
        log.warning("could not read the broker's queue (%s); stale jobs are sent again", exc)
    return None


def job_id_of(message: dict[str, Any]) -> str | None:
    """The job id a Celery (protocol 2) message carries, or None for another task's message."""
    headers = message.get("headers") or {}
    if headers.get("task") != TRAIN_TASK:
        return None
    body = message.get("body", "")
    if (message.get("properties") or {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    args = json.loads(body)[0]
    return str(args[0]) if args else None


def _ids(messages: Iterable[dict[str, Any]]) -> set[str]:
    return {job_id for job_id in map(job_id_of, messages) if job_id}


@cache
def _engine(url: str) -> Engine:
    return create_engine(url, pool_pre_ping=True)


def _sqlalchemy(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT m.payload FROM kombu_message m JOIN kombu_queue q ON m.queue_id = q.id "
                "WHERE q.name = :queue AND m.visible = :visible"
            ),
            {"queue": QUEUE, "visible": True},
        ).scalars()
        return _ids(json.loads(row) for row in rows)


def _redis(url: str, young_s: float) -> set[str]:
    import redis

    client = redis.Redis.from_url(url)
    try:
        held = _ids(json.loads(raw) for raw in client.lrange(QUEUE, 0, -1))
        recent = cast(list[bytes], client.zrangebyscore("unacked_index", time.time() - young_s, "+inf"))
        if recent:  # each value is [message, exchange, routing key]
            held |= _ids(json.loads(raw)[0] for raw in client.hmget("unacked", recent) if raw)
        return held
    finally:
        client.close()
