"""Admission: whether a recipe may become a queued job — the checks that need its dataset, a base job or
the limits, the owner's queue and storage quotas, and the Idempotency-Key replay — and the job it creates.

Everything here runs in the API before anything is queued, without TensorFlow; a refusal is a
``RecipeError`` naming the recipe's field, so the client gets a 422 that says what to change.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from core import datasets, footprint, log_context, selection, storage, structured, transfer
from core.datasets import DatasetInfo
from core.errors import IdempotencyMismatch, LayerChoiceError, QueueFull, RecipeError, ShapeError
from core.models import IdempotencyKey, Job, JobStatus, utcnow
from core.plan import JobPlan, plan_for
from core.recipe import Recipe, layer_shapes
from core.settings import Settings
from core.transfer import TransferPlan


def check(session: Session, recipe: Recipe, owner: str, settings: Settings) -> JobPlan:
    """The checks that need the dataset, a base job or the limits, in the order a user fixes them; raises
    RecipeError naming the field. Returns the plan the worker will follow."""
    info = selection.describe(datasets.lookup(session, recipe.dataset.name, owner, settings), recipe.dataset)
    tp = transfer.resolve(session, recipe, owner) if recipe.transfer else None
    if tp is not None and recipe.model.input_shape is None:  # an uploaded base gives it: the stored recipe says it
        recipe.model.input_shape = list(tp.base_input_shape)
    _check_pruned_layers(recipe, tp)
    if recipe.model.start != info.feature_shape:
        if tp is not None and tp.base_model_id:
            raise RecipeError(
                ["dataset"],
                f"dataset {info.name!r} has samples of shape {list(info.feature_shape)}; the base model takes "
                f"{list(recipe.model.start)} (dataset.reshape can give the samples another shape)",
            )
        raise RecipeError(
            ["model", "input_shape"],
            f"dataset {info.name!r} has samples of shape {list(info.feature_shape)}, not {recipe.model.input_shape}",
        )
    params, output = _params_and_output(recipe, tp)
    structured.check(recipe)
    _check_limits(recipe, params, settings)
    _check_output(recipe, info, output)
    job_plan = plan_for(recipe, info)
    if job_plan.train_samples < 1:
        raise RecipeError(["dataset"], "no training samples are left after the test and validation splits")
    memory = footprint.estimate(recipe, info, job_plan, params, tp)
    footprint.admit(memory, settings.max_training_bytes)
    return job_plan.model_copy(
        update={
            "estimated_training_bytes": memory.total_bytes,
            "transfer": tp.choice() if tp else None,
            "pruned_layers": _pruned_layers(recipe, tp),
            "params": params,
            "n_classes": info.n_classes,
            "structured_layers": structured.pruned_names(recipe) or None,
            "flops": None if tp else sum(structured.flops(recipe.all_layers(), recipe.model.start).values()),
        }
    )


def _check_pruned_layers(recipe: Recipe, tp: TransferPlan | None) -> None:
    try:
        recipe.check_pruned_layers(extra_prunable={k.name for k in tp.reused if k.prunable} if tp else set())
    except LayerChoiceError as exc:
        raise RecipeError(["pruning", "layers", exc.index], exc.msg) from None


def _params_and_output(recipe: Recipe, tp: TransferPlan | None) -> tuple[int, tuple[int, ...]]:
    """All of the model's parameters (reused layers included) and its output shape."""
    try:
        if tp and tp.whole:
            return sum(layer.params for layer in tp.reused), tp.output_shape
        if tp:
            shapes = recipe.model.shapes(tp.output_shape)
            params = sum(layer.params for layer in tp.reused) + recipe.model.param_count(tp.output_shape)
        else:
            shapes = layer_shapes(recipe.all_layers(), recipe.model.start)
            params = sum(layer.param_count(i) for layer, (i, _) in zip(recipe.all_layers(), shapes))
    except ShapeError as exc:
        raise RecipeError(["model", "layers", exc.index], exc.msg) from None
    return params, shapes[-1][1]


def _check_limits(recipe: Recipe, params: int, settings: Settings) -> None:
    if params > settings.max_params:
        raise RecipeError(["model", "layers"], f"the model has {params:,} parameters; the limit is {settings.max_params:,}")
    if recipe.training.epochs > settings.max_epochs:
        raise RecipeError(["training", "epochs"], f"at most {settings.max_epochs} epochs")
    if recipe.training.max_runtime_s and recipe.training.max_runtime_s > settings.max_runtime_s:
        raise RecipeError(["training", "max_runtime_s"], f"at most {settings.max_runtime_s} s")


def _check_output(recipe: Recipe, info: DatasetInfo, output: tuple[int, ...]) -> None:
    """An autoencoder rebuilds its inputs; a supervised model ends in a vector that fits the labels and loss."""
    if recipe.kind == "autoencoder":
        if output != recipe.model.start:
            raise RecipeError(
                ["model", "decoder"],
                f"the decoder outputs {list(output)}; it must rebuild inputs of shape {recipe.model.input_shape}",
            )
        return
    whole = recipe.transfer is not None and recipe.transfer.whole
    if len(output) != 1:
        raise RecipeError(
            ["transfer", "base_model_id"] if whole else ["model", "layers", -1],
            f"the model's output must be a vector, not of shape {list(output)}",
        )
    if not whole:
        datasets.check_labels(info, recipe.training.loss, output[0])
        return
    try:  # the base's own output layer must fit the dataset's labels: name the base, not a layer of the recipe
        datasets.check_labels(info, recipe.training.loss, output[0])
    except RecipeError as exc:
        raise RecipeError(["dataset"], f"the base model outputs {list(output)}: {exc.msg}") from None


def _pruned_layers(recipe: Recipe, tp: TransferPlan | None) -> list[str] | None:
    """By default a transfer job prunes the reused prunable layers again, before its own."""
    if not recipe.pruning:
        return None
    names = recipe.pruned_layer_names()
    if tp and recipe.pruning.layers is None:
        names = [k.name for k in tp.reused if k.prunable] + names
    return names


def create(session: Session, recipe: Recipe, owner: str, settings: Settings) -> Job:
    queued = (
        session.scalar(select(func.count()).select_from(Job).where(Job.owner == owner, Job.status == JobStatus.QUEUED.value))
        or 0
    )
    if queued >= settings.max_queued_per_owner:
        raise QueueFull(
            f"{queued} of your jobs are queued (the limit is {settings.max_queued_per_owner}); wait for some to start",
            retry_after_s=30,
        )
    storage.admit_job(session, owner, settings)
    # the submitting request's id (core.log_context), for the worker's log lines: the queue carries only the job id
    job_plan = check(session, recipe, owner, settings).model_copy(update={"request_id": log_context.current("request_id")})
    job = Job(
        id=uuid.uuid4().hex,
        owner=owner,
        name=recipe.name,
        status=JobStatus.QUEUED.value,
        recipe=recipe.model_dump(mode="json"),
        progress={"epoch": 0, "epochs": recipe.training.epochs, "phase": "queued", "plan": job_plan.stored()},
        dispatched_at=utcnow(),
    )
    session.add(job)
    return job


def submit(
    session: Session,
    recipe: Recipe,
    owner: str,
    settings: Settings,
    idempotency_key: str | None = None,
    body_sha256: str = "",
) -> tuple[Job, bool]:
    """Create the job, or with an Idempotency-Key seen before (same body, not expired) return its job.

    Returns (job, created)."""
    if idempotency_key:
        expiry = utcnow() - timedelta(seconds=settings.idempotency_ttl_s)
        session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < expiry))
        seen = session.get(IdempotencyKey, (owner, idempotency_key))
        if seen is not None:
            if seen.request_sha256 != body_sha256:
                raise IdempotencyMismatch("this Idempotency-Key was used with a different body; use a new key for a new job")
            job = session.get(Job, seen.job_id)
            if job is not None:
                return job, False
    job = create(session, recipe, owner, settings)
    if idempotency_key:
        session.merge(IdempotencyKey(owner=owner, key=idempotency_key, request_sha256=body_sha256, job_id=job.id))
    return job, True
