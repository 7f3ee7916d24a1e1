"""How each resource looks on the wire: the response models that build every JSON body and document it.

A view builds its body with ``SomeModel(...).model_dump(mode="json")`` and documents the same model with
``documented(description, SomeModel)``, so ``/openapi.json`` and what is sent cannot drift. Stored parts (the
recipe, the plan, the result, the error) are read back through their ``core`` models; fields the stored JSON
leaves out stay out (``_stored``), as they always have.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import typing
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from flask import Response, stream_with_context
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
    create_model,
)

from core import artifacts
from core import models as rows
from core.causes import JobError
from core.datasets import DatasetInfo
from core.experiments import ExperimentSpec
from core.model_inspect import ModelInspection
from core.models import Artifact, JobStatus
from core.plan import JobPlan
from core.recipe import Recipe
from core.results import PLOTS, ComparisonRow, JobResult

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)

#: Where response schemas are referenced in ``/openapi.json``; ``SCHEMAS`` is merged into its components.
REF = "#/components/schemas/{model}"
SCHEMAS: dict[str, dict] = {}


def documented(
    description: str,
    model: type[BaseModel] | None = None,
    media: str = "application/json",
    schema: dict | None = None,
    also: dict | None = None,
) -> dict:
    """A documented response: ``model``'s serialization schema (registered for the components), or a plain
    ``schema`` (a file, text); ``also`` adds other media types of the same response (``{"text/csv": {...}}``)."""
    if model is not None:
        full = model.model_json_schema(ref_template=REF, mode="serialization")
        SCHEMAS.update(full.pop("$defs", {}))
        SCHEMAS[model.__name__] = full
        schema = {"$ref": REF.format(model=model.__name__)}
    content = {media: {"schema": schema or {"type": "object"}}}
    for other, other_schema in (also or {}).items():
        content[other] = {"schema": other_schema}
    return {"description": description, "content": content}


def _stored(value: BaseModel | None):  # no return annotation: the field keeps its model's schema
    """As the stored JSON has it: a field that does not apply is absent, not null."""
    return None if value is None else value.model_dump(mode="json", exclude_none=True)


#: A model whose unset fields are left out of the body (its schema is the model's, those fields optional).
Stored = PlainSerializer(_stored)


def _null_if_unreadable(value, handler: ValidatorFunctionWrapHandler):
    """A stored part that no longer fits its model (a row written by an older version, or by hand) is shown as
    null and logged: the body always fits the schema, and one odd row does not make the job unreadable."""
    try:
        return handler(value)
    except ValidationError as exc:
        log.warning("a stored %s does not fit its model; shown as null: %s", exc.title, exc.errors()[0]["msg"])
        return None


#: For an optional stored part: what does not fit its model reads as null (``_null_if_unreadable``).
Lenient = WrapValidator(_null_if_unreadable)


class ResponseDrift(RuntimeError):
    """A body its own response model refuses: a bug or a stored row that does not fit; a 500, never a 422."""


def build(model: type[M], **fields: Any) -> M:
    try:
        return model(**fields)
    except ValidationError as exc:
        raise ResponseDrift(f"{model.__name__} refused its own body: {exc}") from None


#: A UTC time as ``datetime.isoformat()`` writes it (``+00:00``, as the API always has; pydantic would write ``Z``).
Timestamp = Annotated[
    datetime, PlainSerializer(datetime.isoformat, return_type=str), WithJsonSchema({"type": "string", "format": "date-time"})
]
#: A metric's value: keras's floats, or an integer where one was recorded.
Number = float | int | None

FINISHED = frozenset(status.value for status in rows.FINISHED)


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


# --- jobs ------------------------------------------------------------------------------------------------


class Progress(BaseModel):
    """Where a job is; ``plan`` is what admission fixed before it was queued."""

    epoch: int = Field(description="Epochs finished so far (of every phase of a transfer job).")
    epochs: int = Field(description="Epochs asked for (`training.epochs`).")
    phase: str = Field(
        description="queued, starting, train, frozen, fine_tune, inference (measuring it after export), or the status "
        "it ended in."
    )
    plan: JobPlan | None = None
    sparsity: float | None = Field(None, description="The pruned kernels' share of zeros at the last epoch.")


class HistoryRow(BaseModel):
    """One finished epoch: its metrics (``loss``, ``accuracy``, ``val_*``, ``sparsity``, ``learning_rate``,
    ``seconds``, …) after the three fields every row has."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, Number]

    epoch: int
    phase: str = Field(description="train, or a transfer job's frozen / fine_tune.")
    attempt: int = Field(description="The attempt that trained it (a resumed job continues on a later one).")


class JobLinks(BaseModel):
    self: str
    history: str
    logs: str
    diagnostics: str
    cancel: str
    models: dict[str, str] = Field(description="Export format → download URL, once the job has succeeded.")
    plots: dict[str, str] = Field(description="Plot name → PNG URL, once the job has succeeded.")


class Job(BaseModel):
    """A training job as a client sees it: the recipe it runs, where it is, what it made or why it stopped."""

    id: str
    name: str
    status: JobStatus
    recipe: Recipe
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    attempt: int = Field(description="1 for the first run; more when a lost worker's job was requeued.")
    progress: Annotated[Progress, Stored]
    history: list[HistoryRow] = Field(description="One row per finished epoch (not in the job list).")
    result: Annotated[JobResult | None, Lenient, Stored] = Field(description="A succeeded job's figures.")
    error: Annotated[JobError | None, Lenient, Stored] = Field(description="Why a failed or cancelled job stopped.")
    warnings: list[str] = Field(description="Advice about the recipe, from its plan.")
    device: str | None = Field(description="What the worker trained on.")
    cancel_requested: bool
    links: JobLinks
    pinned: bool = Field(description="Kept by retention however old (POST/DELETE /v1/jobs/{id}/pin).")


#: A job in the list: the job without its history (derived from ``Job`` so the two cannot drift).
_SUMMARY_FIELDS: dict[str, Any] = {
    name: (field.annotation, field) for name, field in Job.model_fields.items() if name != "history"
}
JobSummary = create_model(
    "JobSummary", __doc__="A job in the list: every field of the job but its history.", **_SUMMARY_FIELDS
)


class JobList(BaseModel):
    items: list[JobSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last.")


def job_fields(job: rows.Job, models: dict[str, Artifact] | None = None) -> dict:
    """The fields of ``Job`` but ``history``, read from the stored row."""
    base = f"/v1/jobs/{job.id}"
    progress = build(Progress, **(job.progress or {}))
    return dict(
        id=job.id,
        name=job.name,
        status=job.status,
        recipe=job.recipe,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        attempt=job.attempt,
        progress=progress,
        result=job.result,
        error=job.error,
        warnings=progress.plan.warnings if progress.plan else [],
        device=job.device,
        cancel_requested=job.cancel_requested,
        pinned=bool(job.pinned),
        links=JobLinks(
            self=base,
            history=f"{base}/history",
            logs=f"{base}/logs",
            diagnostics=f"{base}/diagnostics",
            cancel=f"{base}/cancel",
            models={fmt: f"{base}/model?format={fmt}" for fmt in (models or {})},
            plots={name: f"{base}/plots/{name}.png" for name in PLOTS} if job.status == JobStatus.SUCCEEDED.value else {},
        ),
    )


def job_body(job: rows.Job, history: list[dict], models: dict[str, Artifact] | None = None) -> dict:
    return build(Job, **job_fields(job, models), history=history).model_dump(mode="json")


def job_list_body(jobs: list[rows.Job], next_cursor: str | None) -> dict:
    items = [build(JobSummary, **job_fields(job)) for job in jobs]
    return build(JobList, items=items, next_cursor=next_cursor).model_dump(mode="json")


class History(BaseModel):
    job_id: str
    history: list[HistoryRow]


def history_body(job_id: str, history: list[dict]) -> dict:
    return build(History, job_id=job_id, history=history).model_dump(mode="json")


class LayerDiagnostics(BaseModel):
    name: str = Field(description="The Keras layer's name.")
    mean_abs_grad: float | None = Field(None, description="Mean |∂loss/∂kernel| on the probe batch.")
    activation: str | None = None
    saturation: float | None = Field(None, description="Share of the activation's outputs in its flat regions.")


class EpochDiagnostics(BaseModel):
    epoch: int
    phase: str
    layers: list[Annotated[LayerDiagnostics, Stored]]


class Diagnostics(BaseModel):
    job_id: str
    epochs: list[EpochDiagnostics]


def diagnostics_body(job_id: str, epochs: list[dict]) -> dict:
    return build(Diagnostics, job_id=job_id, epochs=epochs).model_dump(mode="json")


def png(db, artifact: Artifact) -> Response:
    """A stored picture, streamed (and checked) like any artifact."""
    return Response(
        stream_with_context(artifacts.stream(db, artifact)),
        mimetype="image/png",
        headers={"Content-Length": str(artifact.size), "Cache-Control": "max-age=3600"},
    )


def history_csv(history: list[dict]) -> str:
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    return out.getvalue()


# --- datasets --------------------------------------------------------------------------------------------

_INFO_TYPES = typing.get_type_hints(DatasetInfo)


class Dataset(
    create_model(  # type: ignore[misc]
        "DatasetFields",
        id=(str, Field(description="What a recipe's `dataset.name` takes.")),
        **{
            f.name: (_INFO_TYPES[f.name], ... if f.default is dataclasses.MISSING else f.default)
            for f in dataclasses.fields(DatasetInfo)
        },
    )
):
    """A dataset's figures (``core.datasets.DatasetInfo``'s fields, derived from it); a built-in says whether it
    is installed here, an upload what it was called and its format. Fields that do not apply are absent."""

    available: bool | None = Field(None, description="Built-ins: whether its files are installed here.")
    install: str | None = Field(None, description="Built-ins not installed: the command that installs them.")
    missing_files: list[str] | None = Field(None, description="Built-ins not installed: the files looked for.")
    uploaded_name: str | None = Field(None, description="Uploads: the name given, or the file's name.")
    format: str | None = Field(None, description="Uploads: npz or csv, as uploaded.")


class DatasetList(BaseModel):
    items: list[Annotated[Dataset, PlainSerializer(lambda d: d.model_dump(mode="json", exclude_unset=True))]]


def dataset_body(item: dict) -> dict:
    return build(Dataset, **item).model_dump(mode="json", exclude_unset=True)


def dataset_list_body(items: list[dict]) -> dict:
    return build(DatasetList, items=items).model_dump(mode="json")


# --- experiments -----------------------------------------------------------------------------------------


class ExperimentLinks(BaseModel):
    self: str
    cancel: str
    compare_plot: str
    tradeoff_plot: str | None = Field(None, description="Sweeps only: accuracy and size against sparsity.")


class Experiment(BaseModel):
    """An experiment: its spec, how many of its child jobs have ended, and the comparison table per variant."""

    id: str
    name: str
    created_at: Timestamp
    spec: ExperimentSpec
    jobs: int = Field(description="Child jobs: variants × repeats.")
    finished: int = Field(description="Child jobs that have ended (succeeded, failed or cancelled).")
    comparison: list[ComparisonRow]
    links: ExperimentLinks


def experiment_body(experiment: rows.Experiment, children: list[rows.Job], comparison: list) -> dict:
    base = f"/v1/experiments/{experiment.id}"
    return build(
        Experiment,
        id=experiment.id,
        name=experiment.name,
        created_at=experiment.created_at,
        spec=experiment.spec,
        jobs=len(children),
        finished=sum(job.status in FINISHED for job in children),
        comparison=comparison,
        links=ExperimentLinks(
            self=base,
            cancel=f"{base}/cancel",
            compare_plot=f"{base}/plots/compare.png",
            tradeoff_plot=f"{base}/plots/tradeoff.png" if experiment.spec.get("sweep") else None,
        ),
    ).model_dump(mode="json")


class Cancelled(BaseModel):
    cancelled: int = Field(description="Child jobs that were queued or running and are now cancelled or stopping.")


# --- health ----------------------------------------------------------------------------------------------


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, str] = Field(description='Dependency → "ok" or why it cannot be reached.')


# --- uploaded models -------------------------------------------------------------------------------------


class UploadedModelLinks(BaseModel):
    self: str
    file: str = Field(description="The exact bytes uploaded (their sha256 never changes).")


class UploadedModel(BaseModel):
    """A model you uploaded: ``inspecting`` until a worker has checked, loaded and measured it, then ``ready`` (with
    its ``inspection``) or ``rejected`` (with the ``reason``)."""

    id: str = Field(description="32 hex digits: what a recipe's `transfer.base_model_id` takes.")
    filename: str
    format: Literal["keras", "h5"]
    status: Literal["inspecting", "ready", "rejected"]
    reason: str | None = Field(description="Why it was rejected: the layer and its class, or what is wrong with the file.")
    sha256: str
    size_bytes: int
    created_at: Timestamp
    inspected_at: Timestamp | None
    inspection: Annotated[ModelInspection | None, Lenient] = Field(
        description="Once ready: input and output shapes (without the batch axis), every layer with its params and "
        "whether TF-MOT can prune it."
    )
    links: UploadedModelLinks


class UploadedModelList(BaseModel):
    items: list[UploadedModel]


def _uploaded_model(model: rows.UploadedModel) -> UploadedModel:
    base = f"/v1/models/{model.id}"
    return build(
        UploadedModel,
        id=model.id,
        filename=model.filename,
        format=model.format,
        status=model.status,
        reason=model.reason,
        sha256=model.sha256,
        size_bytes=model.size_bytes,
        created_at=model.created_at,
        inspected_at=model.inspected_at,
        inspection=model.inspection,
        links=UploadedModelLinks(self=base, file=f"{base}/file"),
    )


def uploaded_model_body(model: rows.UploadedModel) -> dict:
    return _uploaded_model(model).model_dump(mode="json")


def uploaded_model_list_body(models: list[rows.UploadedModel]) -> dict:
    return build(UploadedModelList, items=[_uploaded_model(m) for m in models]).model_dump(mode="json")
