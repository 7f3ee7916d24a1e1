"""Uploaded Keras models kept in the database: their exact bytes in chunks, and their inspection's state.

A model is ``inspecting`` from its upload until a worker has read its config, loaded it (only then, and only
if its config passed ``core.model_inspect``) and measured it: then ``ready`` with a ``ModelInspection``, or
``rejected`` with a reason. Every change of status is a guarded UPDATE here, like ``core.job_state``'s. The
stored bytes are written once and never changed: what ``GET /v1/models/{id}/file`` serves has the sha256 the
upload had.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import IO

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from core import model_inspect, storage
from core.db import Database, rows_matched
from core.errors import Conflict, CorruptArtifact, ModelError, NotFound, PayloadTooLarge
from core.model_inspect import ModelInspection
from core.models import Job, ModelChunk, ModelStatus, UploadedModel, utcnow
from core.settings import Settings

#: ``models.filename`` is VARCHAR(255).
MAX_FILENAME = 255
#: By the file's extension: the format decides how it is checked and loaded.
FORMATS = {"keras": "keras", "h5": "h5", "hdf5": "h5"}
#: A .keras zip's members may declare this many times the upload limit unpacked (weights barely compress).
UNPACKED_FACTOR = 4
INSPECTING, READY, REJECTED = ModelStatus.INSPECTING.value, ModelStatus.READY.value, ModelStatus.REJECTED.value
#: A reason is kept to this length (an exception's text from a hostile file can be anything).
MAX_REASON = 2_000


def _format_of(filename: str) -> str:
    if len(filename) > MAX_FILENAME or "\x00" in filename:
        raise ModelError(
            f"the file name must be at most {MAX_FILENAME} characters, without NUL",
            errors=[{"loc": ["file"], "msg": "file name too long or has a NUL character"}],
        )
    extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if extension not in FORMATS:
        raise ModelError(
            f"upload a .keras or a legacy .h5 Keras model, not {filename[-40:]!r}",
            errors=[{"loc": ["file"], "msg": "the file name must end in .keras or .h5"}],
        )
    return FORMATS[extension]


def check_upload(stream: IO[bytes], filename: str, settings: Settings) -> str:
    """The checks the API makes before storing (no TensorFlow, no h5py): size, format, and for ``.keras`` the
    whole config walk. Returns the format."""
    fmt = _format_of(filename)
    size = stream.seek(0, 2)
    stream.seek(0)
    if size > settings.max_model_bytes:
        raise PayloadTooLarge(f"the model is {size:,} bytes, over {settings.max_model_bytes:,} (TRAINER_MAX_MODEL_BYTES)")
    if size == 0:
        raise ModelError("the file is empty")
    if fmt == "keras":
        model_inspect.check_keras_archive(stream, UNPACKED_FACTOR * settings.max_model_bytes)
    else:
        model_inspect.check_h5_file(stream)
    return fmt


def store_upload(db: Database, owner: str, settings: Settings, stream: IO[bytes], filename: str) -> UploadedModel:
    """Checked (``check_upload``) before any transaction opens; then the quota, the row and its chunks in one
    transaction. The caller dispatches the inspection once this has committed."""
    fmt = check_upload(stream, filename, settings)
    size = stream.seek(0, 2)
    stream.seek(0)
    with db.session() as session:
        storage.admit_upload(session, owner, settings, size, what="this model")
        model = UploadedModel(
            id=uuid.uuid4().hex,
            owner=owner,
            filename=filename,
            format=fmt,
            status=INSPECTING,
            sha256="",
            size_bytes=0,
            chunk_count=0,
            dispatched_at=utcnow(),
            inspect_attempts=0,
        )
        session.add(model)
        session.flush()
        digest, total, seq = hashlib.sha256(), 0, 0
        while block := stream.read(settings.artifact_chunk_bytes):
            digest.update(block)
            total += len(block)
            session.add(ModelChunk(model_id=model.id, seq=seq, data=block, sha256=hashlib.sha256(block).hexdigest()))
            session.flush()
            seq += 1
        model.sha256, model.size_bytes, model.chunk_count = digest.hexdigest(), total, seq
    return model


# --------------------------------------------------------------------------- reading


def get(session: Session, model_id: str, owner: str) -> UploadedModel:
    """Another owner's model is not found, exactly like a missing one."""
    model = session.scalar(select(UploadedModel).where(UploadedModel.id == model_id, UploadedModel.owner == owner))
    if model is None:
        raise NotFound(f"no model {model_id!r}")
    return model


def get_any(session: Session, model_id: str) -> UploadedModel | None:
    """For the worker, which acts for whoever owns it."""
    return session.get(UploadedModel, model_id)


def listing(session: Session, owner: str) -> list[UploadedModel]:
    return list(
        session.execute(select(UploadedModel).where(UploadedModel.owner == owner).order_by(UploadedModel.created_at))
        .scalars()
        .all()
    )


def inspection(model: UploadedModel) -> ModelInspection | None:
    return None if model.inspection is None else ModelInspection.model_validate(model.inspection)


def _chunk(session: Session, model: UploadedModel, seq: int) -> bytes:
    row = session.execute(
        select(ModelChunk.data, ModelChunk.sha256).where(ModelChunk.model_id == model.id, ModelChunk.seq == seq)
    ).one_or_none()
    if row is None:
        raise CorruptArtifact(f"stored model {model.id} is missing part {seq}; it cannot be served")
    data = bytes(row.data)
    if hashlib.sha256(data).hexdigest() != row.sha256:
        raise CorruptArtifact(f"stored model {model.id} part {seq} fails its sha256 check; it cannot be served")
    return data


def read_bytes(session: Session, model_id: str) -> bytes:
    """The whole file, every chunk and the whole checked against their sha256 (the worker loads it from this)."""
    model = session.get(UploadedModel, model_id)
    if model is None:
        raise NotFound(f"no model {model_id!r}")
    data = b"".join(_chunk(session, model, seq) for seq in range(model.chunk_count))
    if hashlib.sha256(data).hexdigest() != model.sha256 or len(data) != model.size_bytes:
        raise CorruptArtifact(f"stored model {model.id} fails its sha256 check; it cannot be served")
    return data


def stream(db: Database, model: UploadedModel) -> Iterator[bytes]:
    """One chunk per query, each checked; the first is read before this returns, so a bad single-chunk file is an
    error response rather than a broken download."""
    with db.session() as session:
        first = _chunk(session, model, 0) if model.chunk_count else b""

    def rest() -> Iterator[bytes]:
        yield first
        for seq in range(1, model.chunk_count):
            with db.session() as session:
                data = _chunk(session, model, seq)
            yield data

    return rest()


# --------------------------------------------------------------------------- jobs that use a model


def jobs_using(session: Session, model_id: str, owner: str) -> list[str]:
    """Queued and running jobs whose recipe starts from this model (``transfer.base_model_id``)."""
    return [
        job_id
        for job_id, recipe in session.execute(
            select(Job.id, Job.recipe).where(Job.owner == owner, Job.status.in_(storage.ACTIVE))
        ).all()
        if ((recipe or {}).get("transfer") or {}).get("base_model_id") == model_id
    ]


def in_use(session: Session, model_id: str) -> bool:
    owner = session.scalar(select(UploadedModel.owner).where(UploadedModel.id == model_id))
    return owner is not None and bool(jobs_using(session, model_id, owner))


def delete_model(session: Session, model_id: str, owner: str) -> None:
    """Gone with its chunks; refused while a queued or running job will load it."""
    get(session, model_id, owner)
    users = jobs_using(session, model_id, owner)
    if users:
        shown = ", ".join(users[:5]) + (f" and {len(users) - 5} more" if len(users) > 5 else "")
        raise Conflict(
            f"model {model_id} is the base of {len(users)} queued or running job(s) ({shown}): "
            "cancel them or wait for them to end first"
        )
    session.execute(delete(ModelChunk).where(ModelChunk.model_id == model_id))
    session.execute(delete(UploadedModel).where(UploadedModel.id == model_id, UploadedModel.owner == owner))


# --------------------------------------------------------------------------- the inspection's states


def claim_inspection(
    session: Session, model_id: str, worker: str, settings: Settings, now: datetime | None = None
) -> int | None:
    """Begin an inspection: the attempt's number, or None when there is nothing to do (already ready or rejected,
    deleted, another worker's inspection still within ``inspect_timeout_s``, or no attempts left)."""
    now = now or utcnow()
    stale = now - timedelta(seconds=settings.inspect_timeout_s)
    done = rows_matched(
        session,
        update(UploadedModel)
        .where(
            UploadedModel.id == model_id,
            UploadedModel.status == INSPECTING,
            UploadedModel.inspect_attempts < settings.max_attempts,
            or_(UploadedModel.inspect_started_at.is_(None), UploadedModel.inspect_started_at < stale),
        )
        .values(inspect_attempts=UploadedModel.inspect_attempts + 1, inspect_started_at=now, worker=worker),
    )
    if not done:
        return None
    return session.scalar(select(UploadedModel.inspect_attempts).where(UploadedModel.id == model_id))


def finish_inspection(session: Session, model_id: str, attempt: int, result: ModelInspection) -> bool:
    return bool(
        rows_matched(
            session,
            update(UploadedModel)
            .where(
                UploadedModel.id == model_id, UploadedModel.status == INSPECTING, UploadedModel.inspect_attempts == attempt
            )
            .values(status=READY, inspection=result.model_dump(mode="json"), reason=None, inspected_at=utcnow()),
        )
    )


def reject(session: Session, model_id: str, reason: str, attempt: int | None = None) -> bool:
    """``attempt`` None: whichever attempt (the reconciler's and the worker parent's verdicts)."""
    where = [UploadedModel.id == model_id, UploadedModel.status == INSPECTING]
    if attempt is not None:
        where.append(UploadedModel.inspect_attempts == attempt)
    return bool(
        rows_matched(
            session,
            update(UploadedModel).where(*where).values(status=REJECTED, reason=reason[:MAX_REASON], inspected_at=utcnow()),
        )
    )


def reject_inspecting_on(session: Session, worker: str, reason: str) -> str | None:
    """The worker's parent saw the child ``worker`` die (killed for memory, or crashed) while inspecting a model:
    a file that takes a process down is not tried again. Returns the model's id, if one was being inspected."""
    model_id = session.scalar(
        select(UploadedModel.id).where(UploadedModel.worker == worker, UploadedModel.status == INSPECTING)
    )
    if model_id is None or not reject(session, model_id, reason):
        return None
    return model_id


def mark_dispatched(session: Session, model_id: str, now: datetime | None = None) -> None:
    session.execute(update(UploadedModel).where(UploadedModel.id == model_id).values(dispatched_at=now or utcnow()))


def reconcile(session: Session, settings: Settings, now: datetime | None = None) -> dict[str, list[str]]:
    """Inspections to send again: sent over ``redispatch_after_s`` ago and either never begun or begun over
    ``inspect_timeout_s`` ago and not finished (their process was lost); one out of attempts is rejected instead.
    Returns ``{"redispatch": [...], "rejected": [...]}``; the caller sends once this commits."""
    now = now or utcnow()
    out: dict[str, list[str]] = {"redispatch": [], "rejected": []}
    unsent = now - timedelta(seconds=settings.redispatch_after_s)
    stale = now - timedelta(seconds=settings.inspect_timeout_s)
    rows = session.execute(
        select(UploadedModel.id, UploadedModel.inspect_attempts, UploadedModel.dispatched_at).where(
            UploadedModel.status == INSPECTING,
            or_(UploadedModel.dispatched_at.is_(None), UploadedModel.dispatched_at < unsent),
            or_(UploadedModel.inspect_started_at.is_(None), UploadedModel.inspect_started_at < stale),
        )
    ).all()
    for model_id, attempts, dispatched_at in rows:
        if attempts >= settings.max_attempts:
            reason = (
                f"the inspection did not finish in {attempts} attempts of {settings.inspect_timeout_s:.0f} s "
                "(its process was lost each time)"
            )
            if reject(session, model_id, reason):
                out["rejected"].append(model_id)
            continue
        sent = (
            UploadedModel.dispatched_at.is_(None) if dispatched_at is None else UploadedModel.dispatched_at == dispatched_at
        )
        guard = update(UploadedModel).where(UploadedModel.id == model_id, UploadedModel.status == INSPECTING, sent)
        if rows_matched(session, guard.values(dispatched_at=now)):
            out["redispatch"].append(model_id)
    return out
