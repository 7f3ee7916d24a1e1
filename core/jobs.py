"""Jobs and their state machine: queued → running → succeeded | failed | cancelled.

Every change of status is a guarded ``UPDATE … WHERE status = :expected`` (and, for a worker, the
attempt it claimed), so a duplicate delivery, a stale worker or a cancel racing completion each
end in exactly one state.
"""
from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from core import artifacts, datasets, footprint, selection, storage, transfer
from core.causes import Cause, JobError
from core.errors import Conflict, IdempotencyMismatch, NotFound, RecipeError, TooManyRequests
from core.models import FINISHED, Artifact, EpochRecord, IdempotencyKey, Job, JobStatus, LogLine, utcnow
from core.recipe import LayerChoiceError, Recipe, ShapeError, layer_shapes, resolve_end_step, split_sizes, steps_per_epoch
from core.settings import Settings

Q, R = JobStatus.QUEUED.value, JobStatus.RUNNING.value


# --- submission (API side) -------------------------------------------------------------------------------


def plan(recipe: Recipe, info: datasets.DatasetInfo) -> dict:
    """Sizes the worker will see (split, steps, the resolved pruning end_step) and warnings for the user.

    ``info`` is the dataset as the recipe selects it (``core.selection.describe``).
    """
    val_fraction = recipe.dataset.validation_fraction
    if info.n_test_samples:
        n_val = round(info.n_samples * val_fraction)
        n_train, n_test = info.n_samples - n_val, info.n_test_samples
    else:
        n_train, n_val, n_test = split_sizes(info.n_samples, recipe.dataset.test_fraction, val_fraction)
    if recipe.dataset.limit:
        n_train = min(n_train, recipe.dataset.limit)
    steps = steps_per_epoch(n_train, recipe.training.batch_size)
    out: dict[str, Any] = {
        "train_samples": n_train, "validation_samples": n_val, "test_samples": n_test,
        "steps_per_epoch": steps, "total_steps": steps * recipe.training.epochs,
        "warnings": recipe.selu_warnings(),
    }
    if recipe.pruning and recipe.pruning.schedule:
        try:
            out["pruning_end_step"] = resolve_end_step(recipe.pruning.schedule, out["total_steps"])
        except ValueError as exc:
            raise RecipeError(["pruning", "schedule", "end_step"], str(exc)) from None
    return out


def check(session: Session, recipe: Recipe, owner: str, settings: Settings) -> dict:
    """The checks that need the dataset, a base job or the limits; raises RecipeError naming the field."""
    info = selection.describe(datasets.lookup(session, recipe.dataset.name, owner, settings), recipe.dataset)
    tp = transfer.resolve(session, recipe, owner) if recipe.transfer else None
    try:
        recipe.check_pruned_layers(extra_prunable={k.name for k in tp.reused if k.prunable} if tp else set())
    except LayerChoiceError as exc:
        raise RecipeError(["pruning", "layers", exc.index], str(exc)) from None
    if tuple(recipe.model.input_shape) != info.feature_shape:
        raise RecipeError(
            ["model", "input_shape"],
            f"dataset {info.name!r} has samples of shape {list(info.feature_shape)}, not {recipe.model.input_shape}",
        )
    try:
        if tp:
            shapes = recipe.model.shapes(tp.output_shape)
            params = sum(layer.params for layer in tp.reused) + recipe.model.param_count(tp.output_shape)
        else:
            shapes = layer_shapes(recipe.all_layers(), tuple(recipe.model.input_shape))
            params = sum(layer.param_count(i) for layer, (i, _) in zip(recipe.all_layers(), shapes))
        output = shapes[-1][1]
    except ShapeError as exc:
        raise RecipeError(["model", "layers", exc.index], str(exc)) from None
    if params > settings.max_params:
        raise RecipeError(["model", "layers"], f"the model has {params:,} parameters; the limit is {settings.max_params:,}")
    if recipe.training.epochs > settings.max_epochs:
        raise RecipeError(["training", "epochs"], f"at most {settings.max_epochs} epochs")
    if recipe.training.max_runtime_s and recipe.training.max_runtime_s > settings.max_runtime_s:
        raise RecipeError(["training", "max_runtime_s"], f"at most {settings.max_runtime_s} s")
    if recipe.kind == "autoencoder":
        if output != tuple(recipe.model.input_shape):
            raise RecipeError(["model", "decoder"], f"the decoder outputs {list(output)}; it must rebuild "
                              f"inputs of shape {recipe.model.input_shape}")
    else:
        if len(output) != 1:
            raise RecipeError(["model", "layers", -1], f"the model's output must be a vector, not of shape {list(output)}")
        datasets.check_labels(info, recipe.training.loss, output[0])
    info_plan = plan(recipe, info)
    if info_plan["train_samples"] < 1:
        raise RecipeError(["dataset"], "no training samples are left after the test and validation splits")
    memory = footprint.estimate(recipe, info, info_plan, params, tp)
    footprint.admit(memory, settings.max_training_bytes)
    info_plan["estimated_training_bytes"] = memory.total_bytes
    if tp:
        info_plan["transfer"] = tp.as_dict()
    if recipe.pruning:
        info_plan["pruned_layers"] = recipe.pruned_layer_names()
        if tp and recipe.pruning.layers is None:  # by default the reused prunable layers are pruned again
            info_plan["pruned_layers"] = [k.name for k in tp.reused if k.prunable] + info_plan["pruned_layers"]
    return {**info_plan, "params": params, "n_classes": info.n_classes}


def create(session: Session, recipe: Recipe, owner: str, settings: Settings) -> Job:
    queued = session.scalar(select(func.count()).select_from(Job).where(Job.owner == owner, Job.status == Q))
    if queued >= settings.max_queued_per_owner:
        raise TooManyRequests(f"{queued} of your jobs are queued (the limit is {settings.max_queued_per_owner}); "
                              "wait for some to start", headers={"Retry-After": "30"})
    storage.admit_job(session, owner, settings)
    job_plan = check(session, recipe, owner, settings)
    job = Job(
        id=uuid.uuid4().hex, owner=owner, name=recipe.name, status=Q,
        recipe=recipe.model_dump(mode="json"), progress={"epoch": 0, "epochs": recipe.training.epochs,
                                                         "phase": "queued", "plan": job_plan},
        dispatched_at=utcnow(),
    )
    session.add(job)
    return job


def submit(session: Session, recipe: Recipe, owner: str, settings: Settings,
           idempotency_key: str | None = None, body_sha256: str = "") -> tuple[Job, bool]:
    """Create the job, or with an Idempotency-Key seen before (same body, not expired) return its job.

    Returns (job, created)."""
    if idempotency_key:
        expiry = utcnow() - timedelta(seconds=settings.idempotency_ttl_s)
        session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < expiry))
        seen = session.get(IdempotencyKey, (owner, idempotency_key))
        if seen is not None:
            if seen.request_sha256 != body_sha256:
                raise IdempotencyMismatch(
                    "this Idempotency-Key was used with a different body; use a new key for a new job")
            job = session.get(Job, seen.job_id)
            if job is not None:
                return job, False
    job = create(session, recipe, owner, settings)
    if idempotency_key:
        session.merge(IdempotencyKey(owner=owner, key=idempotency_key, request_sha256=body_sha256, job_id=job.id))
    return job, True


# --- reading -----------------------------------------------------------------------------------------------


def get(session: Session, job_id: str, owner: str) -> Job:
    job = session.execute(select(Job).where(Job.id == job_id, Job.owner == owner)).scalar_one_or_none()
    if job is None:
        raise NotFound(f"no job {job_id!r}")
    return job


def get_any(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"no job {job_id!r}")
    return job


def version(session: Session, job_id: str, owner: str) -> int:
    """What a poller's If-None-Match is compared with: one column, no job body."""
    found = session.scalar(select(Job.version).where(Job.id == job_id, Job.owner == owner))
    if found is None:
        raise NotFound(f"no job {job_id!r}")
    return found


def history(session: Session, job_id: str) -> list[dict]:
    rows = session.execute(  # not the diagnostics column: it has an endpoint of its own
        select(EpochRecord.epoch, EpochRecord.phase, EpochRecord.attempt, EpochRecord.metrics)
        .where(EpochRecord.job_id == job_id).order_by(EpochRecord.epoch)
    ).all()
    return [{"epoch": epoch, "phase": phase, "attempt": attempt, **metrics} for epoch, phase, attempt, metrics in rows]


def logs(session: Session, job_id: str) -> list[LogLine]:
    return list(session.execute(select(LogLine).where(LogLine.job_id == job_id).order_by(LogLine.id)).scalars())


def log_line_count(session: Session, job_id: str) -> int:
    """Lines already stored (earlier attempts): they count against ``max_log_lines_per_job``."""
    return session.scalar(select(func.count()).select_from(LogLine).where(LogLine.job_id == job_id))


def model_artifacts(session: Session, job_id: str) -> dict[str, Artifact]:
    rows = session.execute(select(Artifact).where(Artifact.job_id == job_id, Artifact.kind == "model")).scalars()
    return {a.format: a for a in rows}


def plot_artifacts(session: Session, job_id: str) -> dict[str, Artifact]:
    rows = session.execute(select(Artifact).where(Artifact.job_id == job_id, Artifact.kind == "plot")).scalars()
    return {a.filename.removesuffix(".png"): a for a in rows}


def _encode_cursor(job: Job) -> str:
    return base64.urlsafe_b64encode(json.dumps([job.created_at.isoformat(), job.id]).encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created, job_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(created), str(job_id)
    except (ValueError, TypeError) as exc:
        raise RecipeError(["query", "cursor"], "not a cursor this service issued") from exc


def page(session: Session, owner: str, status: str | None, limit: int, cursor: str | None) -> tuple[list[Job], str | None]:
    """Newest first; keyset pagination so a page is stable while new jobs arrive."""
    query = select(Job).where(Job.owner == owner)
    if status:
        query = query.where(Job.status == status)
    if cursor:
        created, job_id = _decode_cursor(cursor)
        query = query.where((Job.created_at < created) | ((Job.created_at == created) & (Job.id < job_id)))
    rows = list(session.execute(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)).scalars())
    next_cursor = _encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


# --- user actions ------------------------------------------------------------------------------------------


def cancel(session: Session, job_id: str, owner: str) -> Job:
    """Queued: cancelled now. Running: flagged; the worker stops at the next batch and ends it cancelled."""
    job = get(session, job_id, owner)
    now = utcnow()
    done = session.execute(
        update(Job).where(Job.id == job_id, Job.status == Q)
        .values(status=JobStatus.CANCELLED.value, finished_at=now, version=Job.version + 1,
                progress=_with_phase(job.progress, "cancelled"),
                error=JobError.of(Cause.CANCELLED, "cancelled before it started").stored())
    ).rowcount
    if not done:
        done = session.execute(
            update(Job).where(Job.id == job_id, Job.status == R)
            .values(cancel_requested=True, version=Job.version + 1)
        ).rowcount
    if not done:
        raise Conflict(f"job {job_id} is already {session.scalar(select(Job.status).where(Job.id == job_id))}")
    session.refresh(job)
    return job


def remove(session: Session, job_id: str, owner: str) -> None:
    job = get(session, job_id, owner)
    if JobStatus(job.status) not in FINISHED:
        raise Conflict(f"job {job_id} is {job.status}: cancel it first")
    storage.refuse_removing_a_base(session, job_id, owner)
    artifacts.delete_for(session, job_id=job_id)
    session.execute(delete(EpochRecord).where(EpochRecord.job_id == job_id))
    session.execute(delete(LogLine).where(LogLine.job_id == job_id))
    gone = session.execute(
        delete(Job).where(Job.id == job_id, Job.status.in_([s.value for s in FINISHED]))
    ).rowcount
    if not gone:
        raise Conflict(f"job {job_id} changed while being deleted")


def _with_phase(progress: dict | None, phase: str) -> dict:
    return {**(progress or {}), "phase": phase}


# --- worker side -------------------------------------------------------------------------------------------


def claim(session: Session, job_id: str, worker: str) -> int | None:
    """queued → running in one conditional UPDATE; returns the attempt number, or None if not ours to run."""
    now = utcnow()
    taken = session.execute(
        update(Job).where(Job.id == job_id, Job.status == Q)
        .values(status=R, attempt=Job.attempt + 1, started_at=now, heartbeat_at=now, worker=worker,
                version=Job.version + 1, cancel_requested=False)
    ).rowcount
    if not taken:
        return None
    return session.scalar(select(Job.attempt).where(Job.id == job_id))


def _mine(job_id: str, attempt: int):
    return (Job.id == job_id, Job.status == R, Job.attempt == attempt)


def heartbeat(session: Session, job_id: str, attempt: int) -> tuple[bool, bool]:
    """(still ours, cancel requested)."""
    ours = session.execute(update(Job).where(*_mine(job_id, attempt)).values(heartbeat_at=utcnow())).rowcount
    cancel = bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))
    return bool(ours), cancel


def update_running(session: Session, job_id: str, attempt: int, **values) -> bool:
    values.setdefault("heartbeat_at", utcnow())
    return bool(
        session.execute(update(Job).where(*_mine(job_id, attempt)).values(version=Job.version + 1, **values)).rowcount
    )


def record_epoch(session: Session, job_id: str, attempt: int, epoch: int, phase: str, metrics: dict,
                 progress: dict, diagnostics: list | None = None) -> bool:
    if not update_running(session, job_id, attempt, progress=progress):
        return False
    session.merge(EpochRecord(job_id=job_id, epoch=epoch, attempt=attempt, phase=phase, metrics=metrics,
                              diagnostics=diagnostics))
    return True


def diagnostics(session: Session, job_id: str) -> list[dict]:
    rows = session.execute(
        select(EpochRecord.epoch, EpochRecord.phase, EpochRecord.diagnostics)
        .where(EpochRecord.job_id == job_id).order_by(EpochRecord.epoch)
    ).all()
    return [{"epoch": epoch, "phase": phase, "layers": layers or []} for epoch, phase, layers in rows]


def finish(session: Session, job_id: str, attempt: int, status: JobStatus, **values) -> bool:
    """running → final, only by the attempt that holds the job; its checkpoint goes with it."""
    done = bool(
        session.execute(
            update(Job).where(*_mine(job_id, attempt))
            .values(status=status.value, finished_at=utcnow(), version=Job.version + 1, **values)
        ).rowcount
    )
    if done:
        artifacts.delete_for(session, job_id=job_id, kind=CHECKPOINT)
    return done


CHECKPOINT = "checkpoint"


def save_checkpoint(session: Session, job_id: str, data: bytes, chunk_bytes: int) -> None:
    """Replaces the job's previous checkpoint in the caller's transaction (with the epoch it belongs to)."""
    import io

    artifacts.delete_for(session, job_id=job_id, kind=CHECKPOINT)
    artifacts.store(session, io.BytesIO(data), kind=CHECKPOINT, format="npz", filename=f"{job_id}-checkpoint.npz",
                    chunk_bytes=chunk_bytes, job_id=job_id)


def append_logs(session: Session, job_id: str, lines: list[tuple[datetime, str, str]]) -> None:
    session.add_all(LogLine(job_id=job_id, at=at, level=level, message=msg) for at, level, msg in lines)


def fail_running_on(session: Session, worker: str, error: JobError) -> str | None:
    """Fail the job a worker process holds (its process is gone: killed for memory); the job's id, or None
    when that process held no running job (it had just finished, or the job was taken from it)."""
    row = session.execute(select(Job.id, Job.attempt).where(Job.worker == worker, Job.status == R)).first()
    if row is None:
        return None
    job_id, attempt = row
    progress = session.scalar(select(Job.progress).where(Job.id == job_id))
    if not finish(session, job_id, attempt, JobStatus.FAILED, error=error.stored(),
                  progress=_with_phase(progress, JobStatus.FAILED.value)):
        return None
    append_logs(session, job_id, [(utcnow(), "ERROR", f"job failed: {error.type.value}: {error.message}")])
    return job_id


# --- reconciler --------------------------------------------------------------------------------------------


def reconcile(session: Session, settings: Settings, now: datetime | None = None) -> dict[str, list[str]]:
    """Find queued jobs nobody took and running jobs whose worker went silent.

    Returns ``{"redispatch": [...], "failed": [...]}``; the caller sends the redispatched ids again
    after this transaction commits. The broker's own redelivery is a bonus; this is the guarantee
    (the embedded SQLAlchemy transport has no redelivery at all).
    """
    now = now or utcnow()
    out: dict[str, list[str]] = {"redispatch": [], "failed": []}
    stale_queue = now - timedelta(seconds=settings.redispatch_after_s)
    for job_id in session.execute(
        select(Job.id).where(Job.status == Q, Job.dispatched_at < stale_queue)
    ).scalars():
        if session.execute(
            update(Job).where(Job.id == job_id, Job.status == Q, Job.dispatched_at < stale_queue)
            .values(dispatched_at=now)
        ).rowcount:
            out["redispatch"].append(job_id)
    stale_beat = now - timedelta(seconds=settings.heartbeat_timeout_s)
    for job_id, attempt in session.execute(
        select(Job.id, Job.attempt).where(Job.status == R, Job.heartbeat_at < stale_beat)
    ).all():
        guard = (Job.id == job_id, Job.status == R, Job.attempt == attempt, Job.heartbeat_at < stale_beat)
        if attempt < settings.max_attempts:
            if session.execute(
                update(Job).where(*guard).values(status=Q, dispatched_at=now, version=Job.version + 1)
            ).rowcount:
                out["redispatch"].append(job_id)
                append_logs(session, job_id, [(now, "WARNING", f"attempt {attempt}: the worker stopped "
                                               f"heartbeating; the job is queued again")])
        elif session.execute(
            update(Job).where(*guard).values(
                status=JobStatus.FAILED.value, finished_at=now, version=Job.version + 1,
                error=JobError.of(Cause.WORKER_LOST, f"the worker stopped heartbeating on each of {attempt} "
                                  "attempts (its process was killed or the job may need more memory than the "
                                  "worker has)").stored(),
            )
        ).rowcount:
            artifacts.delete_for(session, job_id=job_id, kind=CHECKPOINT)
            out["failed"].append(job_id)
    return out


def counts(session: Session) -> dict[str, int]:
    return dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
