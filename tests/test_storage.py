"""What an owner stores: deleting datasets, the per-owner quota, removing a transfer base, and the
checkpoint policy that bounds what checkpoints cost."""

from __future__ import annotations

import io
import uuid
from dataclasses import replace

import numpy as np
import pytest
from sqlalchemy import func, select

from core import admission, artifacts, checkpoints, job_state, jobs
from core.db import Database
from core.models import ArtifactChunk, Dataset, JobStatus
from core.recipe import Recipe
from service.app import create_app
from tests.support import small_recipe
from worker import checkpoint
from worker.runner import JobRun


class Owner:
    """One owner's view of the API, through an app whose quota the test chooses."""

    def __init__(self, client, token: str, name: str, db: Database):
        self.client, self.name, self.db = client, name, db
        self.headers = {"Authorization": f"Bearer {token}"}

    def get(self, url):
        return self.client.get(url, headers=self.headers)

    def delete(self, url):
        return self.client.delete(url, headers=self.headers)

    def submit(self, recipe: dict):
        return self.client.post("/v1/jobs", json=recipe, headers=self.headers)

    def upload(self, data: bytes, filename: str = "toy.npz"):
        return self.client.post(
            "/v1/datasets",
            data={"file": (io.BytesIO(data), filename)},
            content_type="multipart/form-data",
            headers=self.headers,
        )

    def usage(self) -> dict:
        response = self.get("/v1/usage")
        assert response.status_code == 200, response.get_json()
        return response.get_json()


@pytest.fixture
def owners(backend, tmp_path):
    """``owners(limit)`` → (alice, bob) on the session's database with a quota of ``limit`` bytes each.

    Jobs go to a broker of this test's own that no worker reads, so a queued job stays queued."""
    suffix = uuid.uuid4().hex[:8]
    names = [f"alice-{suffix}", f"bob-{suffix}"]
    tokens = {name: f"tok-{name}" for name in names}
    base = replace(
        backend,
        single_user=False,
        api_tokens=",".join(f"{t}:{n}" for n, t in tokens.items()),
        broker_url=f"sqla+sqlite:///{tmp_path / 'unread-broker.sqlite'}",
    )
    made: list[Database] = []

    def make(limit: int = 10**9) -> tuple[Owner, Owner]:
        app = create_app(replace(base, max_stored_bytes_per_owner=limit))
        db = app.extensions["trainer"].db
        made.append(db)
        client = app.test_client()
        return tuple(Owner(client, tokens[name], name, db) for name in names)

    yield make
    if made:  # nothing this test queued is left for a session worker's reconciler to send again
        with made[0].session() as session:
            for name in names:
                for job in jobs.page(session, name, None, 200, None)[0]:
                    if job.status == JobStatus.QUEUED.value:
                        job_state.cancel(session, job.id, name)
                    elif job.status == JobStatus.RUNNING.value:
                        job_state.finish(session, job.id, job.attempt, JobStatus.CANCELLED)


def toy_npz(rows: int = 40, seed: int = 0) -> bytes:
    """Random floats: they do not compress, so the stored size grows with ``rows``."""
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    np.savez(buffer, x=rng.normal(size=(rows, 4)).astype("float32"), y=rng.integers(0, 3, rows))
    return buffer.getvalue()


def on(dataset_id: str, **overrides) -> dict:
    return small_recipe(**{"dataset.name": dataset_id, **overrides})


def chunks_of(db: Database, dataset_id: str) -> int:
    with db.session() as session:
        ids = select(artifacts.Artifact.id).where(artifacts.Artifact.dataset_id == dataset_id)
        return session.scalar(select(func.count()).select_from(ArtifactChunk).where(ArtifactChunk.artifact_id.in_(ids)))


# --- DELETE /v1/datasets/{id} ------------------------------------------------------------------------------


def test_deleting_an_upload_removes_it_and_its_stored_file(owners):
    alice, _ = owners()
    dataset_id = alice.upload(toy_npz()).get_json()["id"]
    assert chunks_of(alice.db, dataset_id) >= 1 and alice.usage()["datasets_bytes"] > 0

    response = alice.delete(f"/v1/datasets/{dataset_id}")
    assert response.status_code == 204 and response.data == b""
    assert dataset_id not in {item["id"] for item in alice.get("/v1/datasets").get_json()["items"]}
    assert chunks_of(alice.db, dataset_id) == 0
    with alice.db.session() as session:
        assert session.get(Dataset, dataset_id) is None
    assert alice.usage()["datasets_bytes"] == 0
    assert alice.delete(f"/v1/datasets/{dataset_id}").status_code == 404  # and it is gone for good
    refused = alice.submit(on(dataset_id))
    assert refused.status_code == 422 and "unknown dataset" in refused.get_json()["detail"]


def test_another_owners_or_an_unknown_dataset_is_404_and_a_builtin_is_409(owners):
    alice, bob = owners()
    dataset_id = alice.upload(toy_npz()).get_json()["id"]
    for who, target in ((bob, dataset_id), (alice, "ds-0000000000000000")):
        response = who.delete(f"/v1/datasets/{target}")
        assert response.status_code == 404 and response.mimetype == "application/problem+json"
    assert chunks_of(alice.db, dataset_id) >= 1  # bob's attempt left alice's file alone
    builtin = alice.delete("/v1/datasets/iris")
    assert builtin.status_code == 409 and "built-in" in builtin.get_json()["detail"]
    for odd in ("ds-%00x", "ds-" + "a" * 80, "%C2%B2"):  # NUL, too long, not an id: refused before any query
        assert alice.delete(f"/v1/datasets/{odd}").status_code == 422
    assert "iris" in {item["id"] for item in alice.get("/v1/datasets").get_json()["items"]}


def test_a_dataset_a_queued_or_running_job_uses_is_409_until_the_job_ends(owners):
    alice, _ = owners()
    dataset_id = alice.upload(toy_npz()).get_json()["id"]
    queued = alice.submit(on(dataset_id)).get_json()["id"]
    running = alice.submit(on(dataset_id, seed=8)).get_json()["id"]
    with alice.db.session() as session:
        attempt = job_state.claim(session, running, "test-worker")

    refused = alice.delete(f"/v1/datasets/{dataset_id}")
    assert refused.status_code == 409, refused.get_json()
    detail = refused.get_json()["detail"]
    assert "2 queued or running" in detail and queued in detail and running in detail
    assert chunks_of(alice.db, dataset_id) >= 1

    assert alice.client.post(f"/v1/jobs/{queued}/cancel", headers=alice.headers).status_code == 202
    assert alice.delete(f"/v1/datasets/{dataset_id}").status_code == 409  # the running one still uses it
    with alice.db.session() as session:
        assert job_state.finish(session, running, attempt, JobStatus.SUCCEEDED, result={})
    assert alice.delete(f"/v1/datasets/{dataset_id}").status_code == 204
    assert chunks_of(alice.db, dataset_id) == 0


# --- the quota ---------------------------------------------------------------------------------------------


def test_an_upload_over_the_quota_is_413_saying_what_is_used_the_limit_and_what_it_needs(owners):
    alice, bob = owners()
    first = alice.upload(toy_npz(rows=200, seed=1))
    assert first.status_code == 201
    used = alice.usage()["used_bytes"]
    assert used == alice.usage()["datasets_bytes"] > 200 * 4 * 4 // 2  # stored, compressed, but floats don't shrink

    limit = used + used // 2
    alice, bob = owners(limit)
    refused = alice.upload(toy_npz(rows=200, seed=2))
    assert refused.status_code == 413 and refused.mimetype == "application/problem+json"
    problem = refused.get_json()
    assert problem["title"] == "Storage quota exceeded"
    assert f"{used:,} bytes of your {limit:,}-byte quota" in problem["detail"]
    assert f"{limit - used:,} are free" in problem["detail"] and "DELETE /v1/datasets" in problem["detail"]
    needed = int(problem["detail"].split("needs ")[1].split(" bytes")[0].replace(",", ""))
    assert used // 2 < needed
    assert alice.usage()["used_bytes"] == used  # nothing of the refused upload was kept
    assert len([d for d in alice.get("/v1/datasets").get_json()["items"] if d["id"].startswith("ds-")]) == 1

    assert bob.upload(toy_npz(rows=200, seed=2)).status_code == 201  # the quota is per owner
    small = alice.upload(toy_npz(rows=8, seed=3))  # what fits still does
    assert small.status_code == 201, small.get_json()


def test_usage_counts_datasets_models_and_checkpoints_for_their_owner_only(owners):
    alice, bob = owners()
    dataset_id = alice.upload(toy_npz()).get_json()["id"]
    job_id = alice.submit(on(dataset_id)).get_json()["id"]
    with alice.db.session() as session:
        for kind, size in (("model", 3000), ("plot", 500), ("checkpoint", 7000)):
            artifacts.store(
                session,
                io.BytesIO(b"m" * size),
                kind=kind,
                format="bin",
                filename=f"{kind}.bin",
                chunk_bytes=1024,
                job_id=job_id,
            )
    usage = alice.usage()
    datasets = usage["datasets_bytes"]
    assert datasets > 0 and usage["models_bytes"] == 3500 and usage["checkpoints_bytes"] == 7000
    assert usage["used_bytes"] == datasets + 10_500
    assert usage["limit_bytes"] == 10**9 and usage["free_bytes"] == 10**9 - usage["used_bytes"]
    assert bob.usage()["used_bytes"] == 0


def test_a_new_job_is_refused_once_the_owner_is_at_the_quota_and_admitted_below_it(owners):
    alice, _ = owners()
    dataset_id = alice.upload(toy_npz()).get_json()["id"]
    used = alice.usage()["used_bytes"]

    alice, bob = owners(used + 1)
    assert alice.submit(on(dataset_id)).status_code == 202

    alice, bob = owners(used)
    refused = alice.submit(on(dataset_id, seed=9))
    assert refused.status_code == 413, refused.get_json()
    assert f"{used:,} bytes of your {used:,}-byte quota" in refused.get_json()["detail"]
    assert bob.submit(small_recipe()).status_code == 202

    experiment = alice.client.post(
        "/v1/experiments",
        headers=alice.headers,
        json={"name": "quota", "base": on(dataset_id), "variants": [{"name": "a", "overrides": {}}]},
    )
    assert experiment.status_code == 413, experiment.get_json()  # an experiment's jobs are new jobs too

    assert alice.delete(f"/v1/datasets/{dataset_id}").status_code == 409  # the admitted job still uses it


# --- transfer bases ----------------------------------------------------------------------------------------


def test_deleting_a_queued_transfer_jobs_base_is_409_until_that_job_ends(owners):
    alice, _ = owners()
    base = alice.submit(small_recipe()).get_json()["id"]
    other = alice.submit(small_recipe(seed=11)).get_json()["id"]
    with alice.db.session() as session:
        for job_id in (base, other):
            attempt = job_state.claim(session, job_id, "test-worker")
            assert job_state.finish(session, job_id, attempt, JobStatus.SUCCEEDED, result={})
    head = small_recipe(**{"model.layers": [{"type": "dense", "units": 3, "activation": "softmax", "name": "head"}]})
    head.pop("pruning")
    head["transfer"] = {"base_job_id": base}
    transfer_job = alice.submit(head)
    assert transfer_job.status_code == 202, transfer_job.get_json()
    transfer_id = transfer_job.get_json()["id"]

    refused = alice.delete(f"/v1/jobs/{base}")
    assert refused.status_code == 409 and transfer_id in refused.get_json()["detail"]
    assert "transfer base" in refused.get_json()["detail"]
    assert alice.get(f"/v1/jobs/{base}").status_code == 200
    assert alice.delete(f"/v1/jobs/{other}").status_code == 204  # a job nothing builds on goes

    assert alice.client.post(f"/v1/jobs/{transfer_id}/cancel", headers=alice.headers).status_code == 202
    assert alice.delete(f"/v1/jobs/{base}").status_code == 204


# --- the checkpoint policy ---------------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def simulate(policy: checkpoint.Policy, clock: Clock, epochs: int, epoch_s: float, write_s: float, size: int) -> list[int]:
    """Epochs of ``epoch_s`` each; a checkpoint costs ``write_s``. Returns the epochs that were checkpointed."""
    policy.clock = clock
    written = []
    for epoch in range(1, epochs + 1):
        clock.now += epoch_s
        if policy.due():
            started = clock.now
            clock.now += write_s
            policy.record(started, size)
            written.append(epoch)
    return written


def test_a_small_models_state_is_checkpointed_after_every_epoch_whatever_it_costs():
    clock = Clock()
    written = simulate(
        checkpoint.Policy(max_share=0.05), clock, 50, epoch_s=0.01, write_s=0.005, size=checkpoint.ALWAYS_BYTES
    )
    assert written == list(range(1, 51))


def test_a_big_models_checkpoints_are_spaced_to_stay_under_the_share_of_training_time():
    clock = Clock()
    policy = checkpoint.Policy(max_share=0.05)
    written = simulate(policy, clock, 400, epoch_s=0.5, write_s=1.0, size=70_000_000)
    assert written[0] == 1  # the first epoch's state is always kept
    assert policy.seconds_total / clock.now <= 0.05
    gaps = {b - a for a, b in zip(written, written[1:])}
    assert gaps == {40}  # 1 s to write → 20 s of training between two, at 0.5 s an epoch
    assert policy.spacing_s() == pytest.approx(20.0)


def test_the_checkpoint_interval_still_applies_and_a_zero_share_writes_every_epoch():
    clock = Clock()
    assert simulate(checkpoint.Policy(interval_s=3.0), clock, 12, epoch_s=1.0, write_s=0.0, size=10) == [1, 4, 7, 10]
    clock = Clock()
    assert simulate(checkpoint.Policy(max_share=0), clock, 5, epoch_s=0.1, write_s=1.0, size=10**8) == [1, 2, 3, 4, 5]


def test_a_running_jobs_big_checkpoints_are_written_as_the_policy_allows(backend, db):
    """The worker's epoch writer asks the policy: epochs keep being recorded, checkpoints only when due."""
    with db.session() as session:
        job = admission.create(session, Recipe.model_validate(small_recipe()), f"ckpt-{uuid.uuid4().hex[:8]}", backend)
        job_id = job.id
    with db.session() as session:
        attempt = job_state.claim(session, job_id, "test-worker")
    run = JobRun(db, replace(backend, checkpoint_max_share=0.05), job_id, attempt, Recipe.model_validate(small_recipe()), {})
    clock = Clock()
    run.checkpoints.clock = clock
    big = checkpoint.ALWAYS_BYTES + 1

    def state_of(epoch):
        def capture():
            clock.now += 1.0  # writing this state takes a second
            return epoch.to_bytes(4, "big") * (big // 4 + 1)

        return capture

    stored = []
    for epoch in range(1, 61):
        clock.now += 0.5
        run.on_epoch(epoch, {"loss": 1.0}, state=state_of(epoch))
        with db.session() as session:
            found = checkpoints.find(session, job_id)
            stored.append(int.from_bytes(artifacts.read_all(db, found)[:4], "big"))
    assert sorted(set(stored)) == [1, 41]  # epoch 1, then 20 s (40 epochs) later
    with db.session() as session:
        assert len(jobs.history(session, job_id)) == 60
        assert job_state.finish(session, job_id, attempt, JobStatus.CANCELLED)
