"""GET /v1/jobs/{id}?wait=N with If-None-Match: held until the job changes (200 with the job as it is now) or N
seconds pass (304), holding no database connection while it waits; and the SDK follows jobs with it."""

from __future__ import annotations

import re
import threading

import httpx
import pytest
from trainer_client import Client

from service.app import create_app
from service.extensions import services
from stack.processes import LiveServer
from tests.support import small_recipe, wait_until

pytestmark = pytest.mark.worker


@pytest.fixture
def idle_api(isolated_backend):
    """An API with no worker: a job it takes stays queued until someone cancels it."""
    app = create_app(isolated_backend)
    server = LiveServer(app)
    yield app, server.url
    server.close()
    services(app).db.engine.dispose()


def _queued(url: str) -> tuple[str, str]:
    created = httpx.post(f"{url}/v1/jobs", json=small_recipe())
    assert created.status_code == 202, created.text
    return created.json()["id"], created.headers["ETag"]


def test_wait_is_a_whole_number_of_seconds_up_to_30(idle_api):
    _, url = idle_api
    job_id, etag = _queued(url)
    for wait in ("abc", "31", "2.5", "-1", " 2", "1e1", ""):
        answer = httpx.get(f"{url}/v1/jobs/{job_id}", params={"wait": wait}, headers={"If-None-Match": etag})
        assert answer.status_code == 422, (wait, answer.text)
        assert answer.json()["errors"][0]["loc"][-1] == "wait"


def test_an_unchanged_job_is_a_304_after_the_wait_and_a_changed_one_is_sent_at_once(idle_api):
    _, url = idle_api
    job_id, etag = _queued(url)
    held = httpx.get(f"{url}/v1/jobs/{job_id}?wait=1", headers={"If-None-Match": etag})
    assert held.status_code == 304 and held.headers["ETag"] == etag
    older = etag.replace(etag.rsplit("-", 1)[1], '0"')  # a version this client saw before the current one
    sent = httpx.get(f"{url}/v1/jobs/{job_id}?wait=30", headers={"If-None-Match": older})
    assert sent.status_code == 200 and sent.headers["ETag"] == etag and sent.json()["status"] == "queued"
    # without If-None-Match there is nothing to wait for: the plain GET, as before
    assert httpx.get(f"{url}/v1/jobs/{job_id}?wait=30").json()["status"] == "queued"


def test_held_requests_are_answered_when_the_job_changes_and_hold_no_database_connection(idle_api, isolated_backend):
    """More held requests than the database pool has connections (5 + 10 overflow on PostgreSQL): were each to
    hold one, the cancel and the plain GET below would wait on the pool and fail."""
    app, url = idle_api
    job_id, etag = _queued(url)
    answers: list[httpx.Response] = []

    def hold():
        answers.append(httpx.get(f"{url}/v1/jobs/{job_id}?wait=30", headers={"If-None-Match": etag}, timeout=60))

    threads = [threading.Thread(target=hold) for _ in range(20)]
    for t in threads:
        t.start()
    wait_until(lambda: services(app).watch.waiting() == 20, timeout=30, interval=0.05)
    assert httpx.get(f"{url}/v1/jobs/{job_id}").json()["status"] == "queued"
    builds = services(app).job_bodies.builds
    assert httpx.post(f"{url}/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
    for t in threads:
        t.join(60)
    assert [a.status_code for a in answers] == [200] * 20
    # the cancel's answer built the new version's body; the 20 woken requests were sent those same bytes
    assert services(app).job_bodies.builds == builds + 1
    assert {a.json()["status"] for a in answers} == {"cancelled"}
    assert {a.headers["ETag"] for a in answers} == {httpx.get(f"{url}/v1/jobs/{job_id}").headers["ETag"]} != {etag}


def test_the_sdk_follows_a_training_job_with_held_requests(backend, worker, live_api):
    """Each request after the first asks to be held; each 200 brings a newer version than the one before."""
    sent: list[httpx.Request] = []
    answers: list[httpx.Response] = []
    hooks = {"request": [sent.append], "response": [answers.append]}
    with Client(live_api.url, token="", event_hooks=hooks) as client:
        job = client.submit(small_recipe(**{"training.epochs": 4}))
        done = job.wait(timeout=120)
    assert done.status == "succeeded", done.error
    polls = [r for r in sent if r.method == "GET"]
    assert polls[0].url.params.get("wait") is None  # the first read has no ETag to hold on
    assert all(r.url.params.get("wait") == "25" and r.headers.get("If-None-Match") for r in polls[1:])
    versions = [int(re.sub(r'\D*"$', "", a.headers["ETag"]).rsplit("-", 1)[1]) for a in answers if a.status_code == 200]
    assert versions == sorted(set(versions))
    epochs_seen = {row["epoch"] for a in answers if a.status_code == 200 for row in a.json().get("history", [])}
    assert epochs_seen == {1, 2, 3, 4}


def test_the_watch_answers_the_new_version_wakes_only_on_a_change_and_says_when_the_job_is_gone(db, backend):
    """``core.job_watch`` on its own, over the suite's database: no HTTP."""
    from sqlalchemy import delete, update

    from core import admission
    from core.errors import NotFound
    from core.job_watch import VersionWatch
    from core.models import Job
    from core.recipe import Recipe

    with db.session() as session:
        job_id = admission.create(session, Recipe.model_validate(small_recipe()), "default", backend).id
    with db.session() as session:
        seen = session.get(Job, job_id).version
    watch = VersionWatch(db, interval_s=0.05)
    woken: list[int] = []
    real_notify = watch._cond.notify_all

    def counting_notify():
        woken.append(1)
        real_notify()

    watch._cond.notify_all = counting_notify  # type: ignore[method-assign]
    assert watch.wait(job_id, seen, 0.6) is None  # nothing moved: a timeout, not a wake
    idle_wakes = len(woken)
    assert idle_wakes <= 3  # the waiter's own arrival and the first read, not one per read (~12 here)

    def bump():
        with db.session() as session:
            session.execute(update(Job).where(Job.id == job_id).values(version=Job.version + 2))

    timer = threading.Timer(0.2, bump)
    timer.start()
    assert watch.wait(job_id, seen, 10) == seen + 2
    timer.join()

    def drop():
        with db.session() as session:
            session.execute(delete(Job).where(Job.id == job_id))

    timer = threading.Timer(0.2, drop)
    timer.start()
    with pytest.raises(NotFound):
        watch.wait(job_id, seen + 2, 10)
    timer.join()
