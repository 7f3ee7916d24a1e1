"""A backlog is not a loss: the reconciler re-sends a stale queued job only when the broker no longer holds its
message. Real brokers (the SQLAlchemy transport and Redis), no worker: the test plays the one that lost it."""

from __future__ import annotations

from datetime import timedelta

from core import admission, backlog
from core.db import Database
from core.models import Job, utcnow
from core.queue import dispatch, make_celery
from core.recipe import Recipe
from tests.support import small_recipe
from worker.reconciler import Reconciler


def test_stale_jobs_still_in_the_queue_are_not_sent_again_and_a_lost_one_is(isolated_backend):
    settings = isolated_backend
    db, celery = Database(settings), make_celery(settings)
    ids = []
    for _ in range(4):
        with db.session() as s:
            ids.append(admission.create(s, Recipe.model_validate(small_recipe()), "default", settings).id)
        assert dispatch(celery, ids[-1])
    assert backlog.held_job_ids(settings) == set(ids)

    with celery.connection_for_read() as conn:  # a delivery that never reached a claim: taken, acked, gone
        queue = conn.SimpleQueue("training")
        message = queue.get(timeout=10)
        lost = message.payload[0][0]
        message.ack()
        queue.close()
    assert backlog.held_job_ids(settings) == set(ids) - {lost}

    with db.session() as s:  # all four waited longer than TRAINER_REDISPATCH_AFTER_S
        for job_id in ids:
            s.get(Job, job_id).dispatched_at = utcnow() - timedelta(seconds=settings.redispatch_after_s + 60)
    reconciler = Reconciler(settings, celery)
    reconciler.db = db
    first = reconciler.run_once()  # one look: it may be a delivery on its way to a claim
    assert first["redispatch"] == [] and sorted(first["in_queue"]) == sorted(set(ids) - {lost})
    found = reconciler.run_once()  # still queued and still missing: lost
    assert found["redispatch"] == [lost]
    assert sorted(found["in_queue"]) == sorted(set(ids) - {lost})
    assert backlog.held_job_ids(settings) == set(ids)  # the lost one is back in the queue, the others once each
    assert _messages(celery) == 4


def _messages(celery) -> int:
    with celery.connection_for_read() as conn:
        return conn.default_channel.queue_declare("training", passive=True).message_count
