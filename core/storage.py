"""What each owner keeps in the database — uploaded datasets and models, trained models with their plots, checkpoints —
what it adds up to against ``max_stored_bytes_per_owner``, and removing a stored thing no queued or
running job still needs.

Usage is a ``SUM`` over the artifacts' sizes (each artifact row carries its file's size) and one over the
uploaded models' sizes, so it is
always exact and never a counter to keep in step. A job's model and checkpoints are not known when it
is submitted, so the quota refuses new jobs once an owner is at or over it, and lets a running job
finish: the figure can go over the limit by what jobs already admitted store.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, computed_field
from sqlalchemy import case, delete, func, or_, select
from sqlalchemy.orm import Session

from core import artifacts
from core.datasets import BUILTIN
from core.errors import Conflict, NotFound, StorageQuotaExceeded
from core.models import Artifact, Dataset, Job, JobStatus, UploadedModel
from core.settings import Settings

ACTIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)


class StorageUsage(BaseModel):
    """GET /v1/usage: bytes stored for this owner, by what they are."""

    limit_bytes: int = Field(description="TRAINER_MAX_STORED_BYTES_PER_OWNER")
    used_bytes: int
    datasets_bytes: int = Field(description="Uploaded datasets, as stored")
    models_bytes: int = Field(description="Finished jobs' exported models and plots")
    checkpoints_bytes: int = Field(description="Running jobs' resumable checkpoints (deleted when a job ends)")
    uploaded_models_bytes: int = Field(0, description="Uploaded models (POST /v1/models), as sent")

    @computed_field  # type: ignore[prop-decorator]  # mypy cannot type a decorated property; pydantic's documented form
    @property
    def free_bytes(self) -> int:
        return max(0, self.limit_bytes - self.used_bytes)

    def describe(self) -> str:
        return (
            f"you store {self.used_bytes:,} bytes of your {self.limit_bytes:,}-byte quota (datasets "
            f"{self.datasets_bytes:,}, models {self.models_bytes:,}, checkpoints {self.checkpoints_bytes:,}, "
            f"uploaded models {self.uploaded_models_bytes:,})"
        )


def usage(session: Session, owner: str, settings: Settings) -> StorageUsage:
    """One query: artifacts reach their owner through their job or their dataset (an experiment's
    comparison plot, a few KB, belongs to neither and is not counted)."""
    group = case((Artifact.kind == "dataset", "datasets"), (Artifact.kind == "checkpoint", "checkpoints"), else_="models")
    rows = session.execute(
        select(group, func.coalesce(func.sum(Artifact.size), 0))
        .where(
            or_(
                Artifact.job_id.in_(select(Job.id).where(Job.owner == owner)),
                Artifact.dataset_id.in_(select(Dataset.id).where(Dataset.owner == owner)),
            )
        )
        .group_by(group)
    ).all()
    sizes = {name: int(total) for name, total in rows}
    sizes["uploaded_models"] = int(
        session.scalar(select(func.coalesce(func.sum(UploadedModel.size_bytes), 0)).where(UploadedModel.owner == owner)) or 0
    )
    return StorageUsage(
        limit_bytes=settings.max_stored_bytes_per_owner,
        used_bytes=sum(sizes.values()),
        uploaded_models_bytes=sizes["uploaded_models"],
        datasets_bytes=sizes.get("datasets", 0),
        models_bytes=sizes.get("models", 0),
        checkpoints_bytes=sizes.get("checkpoints", 0),
    )


def admit_upload(session: Session, owner: str, settings: Settings, needed: int, what: str = "this dataset") -> None:
    """Before an upload of ``needed`` stored bytes is written; uploads a concurrent request has not
    committed yet are not seen, so parallel uploads can overshoot by at most one upload each."""
    current = usage(session, owner, settings)
    if current.used_bytes + needed > current.limit_bytes:
        raise StorageQuotaExceeded(
            f"storing {what} needs {needed:,} bytes and {current.free_bytes:,} are free: {current.describe()}"
        )


def admit_job(session: Session, owner: str, settings: Settings) -> None:
    """A new job will store a model (and checkpoints while it runs) of a size known only once trained,
    so it is refused once the owner is at or over the quota, and admitted below it."""
    current = usage(session, owner, settings)
    if current.used_bytes >= current.limit_bytes:
        raise StorageQuotaExceeded(
            f"a new job needs room for its model and checkpoints and none is free: {current.describe()}"
        )


def _active_recipes(session: Session, owner: str) -> list[tuple[str, dict[str, Any]]]:
    """The owner's queued and running jobs: at most ``max_queued_per_owner`` plus the running, so a scan in
    Python is cheap and the same on SQLite and PostgreSQL."""
    return list(session.execute(select(Job.id, Job.recipe).where(Job.owner == owner, Job.status.in_(ACTIVE))).all())


def jobs_using_dataset(session: Session, dataset_id: str, owner: str) -> list[str]:
    return [
        job_id
        for job_id, recipe in _active_recipes(session, owner)
        if (recipe.get("dataset") or {}).get("name") == dataset_id
    ]


def jobs_transferring_from(session: Session, base_job_id: str, owner: str) -> list[str]:
    return [
        job_id
        for job_id, recipe in _active_recipes(session, owner)
        if (recipe.get("transfer") or {}).get("base_job_id") == base_job_id
    ]


def _named(job_ids: list[str]) -> str:
    shown = ", ".join(job_ids[:5])
    return shown + (f" and {len(job_ids) - 5} more" if len(job_ids) > 5 else "")


def refuse_removing_a_base(session: Session, job_id: str, owner: str) -> None:
    """A queued transfer job loads its base's stored model when it starts; deleting the base would fail it."""
    users = jobs_transferring_from(session, job_id, owner)
    if users:
        raise Conflict(
            f"job {job_id} is the transfer base of {len(users)} queued or running job(s) "
            f"({_named(users)}): cancel them or wait for them to end first"
        )


def delete_dataset(session: Session, dataset_id: str, owner: str) -> None:
    """An upload goes with its stored file; the built-ins are part of the service and stay."""
    if dataset_id in BUILTIN:
        raise Conflict(f"{dataset_id!r} is a built-in dataset; only uploads can be deleted")
    found = session.scalar(select(Dataset.id).where(Dataset.id == dataset_id, Dataset.owner == owner))
    if found is None:
        raise NotFound(f"no dataset {dataset_id!r}")
    users = jobs_using_dataset(session, dataset_id, owner)
    if users:
        raise Conflict(
            f"dataset {dataset_id} is used by {len(users)} queued or running job(s) ({_named(users)}): "
            "cancel them or wait for them to end first"
        )
    artifacts.delete_for(session, dataset_id=dataset_id)
    session.execute(delete(Dataset).where(Dataset.id == dataset_id, Dataset.owner == owner))


def bytes_by_kind(session: Session) -> dict[str, int]:
    """Every owner's stored bytes by artifact kind (dataset, model, plot, checkpoint, …): what /metrics reports."""
    rows = session.execute(select(Artifact.kind, func.coalesce(func.sum(Artifact.size), 0)).group_by(Artifact.kind)).all()
    return {kind: int(total) for kind, total in rows}
