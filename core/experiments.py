"""Experiments: the seed's comparisons run as one request — a base recipe, variants of it, several seeds.

Each variant × seed is an ordinary job (queued, trained, cancellable like any); the comparison is computed
from their results when asked. Variants are overrides by dotted path (``training.optimizer.type``), applied to
the base and validated like any recipe, so a bad variant is a 422 naming it. A sweep is the common case
written short: one dotted path and its values (``{"pruning.schedule.final_sparsity": [0.5, 0.9]}``), each
value a variant named ``final_sparsity=0.9``; its table says what each level of sparsity costs, and its plot
``tradeoff.png`` draws it.
"""

from __future__ import annotations

import json
import re
import statistics
import uuid
from typing import Annotated, Any

from pydantic import Field, GetJsonSchemaHandler, ValidationError, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core import admission, artifacts, job_state, jobs
from core.errors import Conflict, NotFound, RecipeError
from core.layers import Strict
from core.models import FINISHED, Artifact, ArtifactChunk, Experiment, Job, JobStatus
from core.recipe import Recipe
from core.results import ComparisonRow, JobResult, MeanSpread
from core.settings import Settings

#: Variants (or swept values) per experiment; with ``repeats`` seeds each, at most 200 jobs.
MAX_VARIANTS = 20


class Variant(Strict):
    name: str = Field(min_length=1, max_length=100)
    overrides: dict[str, Any] = Field(
        default_factory=dict, max_length=200, description='e.g. {"training.optimizer.type": "nadam"}'
    )


class _PartialRecipe:
    """Documents the base as a recipe's fields, none required: it is a recipe only once a variant's overrides are
    applied (they may add, change or remove any field), and each child recipe is validated then, naming its variant.
    Validation of the base itself stays a plain object's."""

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        recipe = handler.resolve_ref_schema(handler(Recipe.__pydantic_core_schema__))
        return {"type": "object", "title": "PartialRecipe", "properties": recipe["properties"]}


class ExperimentSpec(Strict):
    name: str = Field("experiment", min_length=1, max_length=200)
    description: str | None = Field(None, max_length=4000)
    base: Annotated[dict[str, Any], _PartialRecipe()] = Field(
        description="A recipe (its fields as in POST /v1/jobs), before each variant's overrides; every variant "
        "starts from it."
    )
    variants: list[Variant] | None = Field(None, min_length=1, max_length=MAX_VARIANTS)
    sweep: dict[str, list[Any]] | None = Field(
        None,
        min_length=1,
        max_length=1,
        description="Instead of variants: one dotted path of the base and its values, e.g. "
        '{"pruning.schedule.final_sparsity": [0.5, 0.7, 0.9]}; each value is a variant named "final_sparsity=0.9".',
    )
    repeats: int = Field(1, ge=1, le=10, description="Seeds per variant: base seed, +1, +2, …")
    target_accuracy: float | None = Field(None, gt=0, le=1, description="For 'epochs to reach' in the table.")

    @model_validator(mode="after")
    def _variants_or_sweep(self) -> ExperimentSpec:
        if (self.variants is None) == (self.sweep is None):
            raise ValueError("give variants or a sweep, exactly one of the two")
        for path, values in (self.sweep or {}).items():
            if not 1 <= len(values) <= MAX_VARIANTS:
                raise ValueError(f"sweep {path!r}: give 1 to {MAX_VARIANTS} values, not {len(values)}")
        return self

    @property
    def swept(self) -> tuple[str, list[Any]] | None:
        """The sweep's one (path, values), or None for an experiment of listed variants."""
        return next(iter(self.sweep.items())) if self.sweep else None

    def all_variants(self) -> list[Variant]:
        """The listed variants, or one per swept value."""
        if self.variants is not None:
            return self.variants
        path, values = self.swept or ("", [])
        leaf = path.rsplit(".", 1)[-1]
        return [Variant(name=f"{leaf}={_shown(value)}"[:100], overrides={path: value}) for value in values]


def _shown(value: Any) -> str:
    """A swept value as its variant's name shows it: 0.9, adam, [2, 4]."""
    return value if isinstance(value, str) else json.dumps(value)


class OverrideError(ValueError):
    """An override path that does not lead anywhere in the base: past a list's end, or through a number."""


_INDEX = re.compile(r"[0-9]{1,6}")


def _index(node: list[Any], part: str, dotted: str, where: str) -> int:
    """The index ``part`` names in the list ``node``; OverrideError when it names nothing there."""
    if not _INDEX.fullmatch(part):
        raise OverrideError(f"{dotted!r}: {where or 'the recipe'} is a list, and {part!r} is not an index of it")
    if int(part) >= len(node):
        raise OverrideError(f"{dotted!r}: index {part} is past the end of {where} ({len(node)} items)")
    return int(part)


def _copied(child: object, dotted: str, where: str) -> dict[str, Any] | list[Any]:
    """A copy of the container on the path, to change without touching the base; OverrideError for a scalar."""
    if isinstance(child, dict):
        return dict(child)
    if isinstance(child, list):
        return list(child)
    raise OverrideError(
        f"{dotted!r}: {where} is {type(child).__name__} {str(child)[:40]!r}, not an object or a list to go into"
    )


def apply_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The base with each dotted path set (``None`` removes a key). Only the containers on a path are copied,
    so the base is never changed and is never walked as a whole (it may be nested arbitrarily deep)."""
    recipe = dict(base)
    for dotted, value in overrides.items():
        *path, last = dotted.split(".")
        node: dict[str, Any] | list[Any] = recipe
        for depth, part in enumerate(path):
            where, into = ".".join(path[:depth]), ".".join(path[: depth + 1])
            if isinstance(node, dict):
                child = node[part] = _copied(node.get(part, {}), dotted, into)
            else:
                index = _index(node, part, dotted, where)
                child = node[index] = _copied(node[index], dotted, into)
            node = child
        if isinstance(node, list):
            node[_index(node, last, dotted, ".".join(path))] = value
        elif value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return recipe


def check_sweep_path(spec: ExperimentSpec) -> None:
    """A swept path must lead to a field the base recipe has (given, or a default once validated): a typo would
    otherwise add a field that each variant's validation refuses with a less helpful message."""
    if spec.swept is None:
        return
    path, _ = spec.swept
    if _lookup(spec.base, path) or _lookup(_validated_base(spec.base), path):
        return
    raise RecipeError(["sweep", path], f"{path!r} is not a field of the base recipe")


def _validated_base(base: dict[str, Any]) -> dict[str, Any]:
    try:
        return Recipe.model_validate(base).model_dump(mode="json")
    except (ValidationError, RecursionError):
        return {}


def _lookup(node: Any, dotted: str) -> bool:
    """Whether the dotted path leads to something in ``node`` (a dict key or a list index)."""
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and _INDEX.fullmatch(part) and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def _where(spec: ExperimentSpec, index: int) -> tuple[list[str | int], str]:
    """Where an error in the index-th variant is reported, and how it is named: a variant by its name, a swept
    value by the value (at ``["sweep", path, i]``)."""
    if spec.swept is not None:
        path, values = spec.swept
        return ["sweep", path, index], f"{path}={_shown(values[index])}"
    return ["variants", index], f"variant {spec.all_variants()[index].name!r}"


def variant_recipe(spec: ExperimentSpec, index: int, repeat: int) -> Recipe:
    """The recipe of one child job; every way it can be wrong is a RecipeError naming the variant."""
    variant = spec.all_variants()[index]
    loc, named = _where(spec, index)
    try:
        raw = apply_overrides(spec.base, variant.overrides)
        seed = raw.get("seed", 42)
        if isinstance(seed, int) and not isinstance(seed, bool):  # anything else: validation names the seed
            raw["seed"] = seed = seed + repeat
        raw["name"] = f"{spec.name}/{variant.name}/seed{seed if isinstance(seed, int) else repeat}"[:200]
        return Recipe.model_validate(raw)
    except OverrideError as exc:
        raise RecipeError(loc if spec.swept else [*loc, "overrides"], f"{named}: {exc}") from None
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        raise RecipeError(loc, f"{named}: {'.'.join(map(str, first['loc'])) or 'recipe'}: {first['msg']}") from None
    except RecursionError:
        raise RecipeError(loc, f"{named}: the recipe is nested too deeply") from None


def create(session: Session, spec: ExperimentSpec, owner: str, settings: Settings) -> tuple[Experiment, list[Job]]:
    check_sweep_path(spec)
    variants = spec.all_variants()
    names = [variant.name for variant in variants]
    for index, name in enumerate(names):
        if name in names[:index]:
            loc, named = _where(spec, index)
            raise RecipeError(loc, f"{named}: named like an earlier variant (each needs a name of its own)")
    recipes = [
        (index, variant_recipe(spec, index, repeat)) for index in range(len(variants)) for repeat in range(spec.repeats)
    ]
    try:
        stored = spec.model_dump(mode="json")
    except (ValueError, RecursionError):  # pydantic's serializer refuses very deep values the variants dropped
        raise RecipeError(["base"], "nested too deeply to store") from None
    experiment = Experiment(id=uuid.uuid4().hex, owner=owner, name=spec.name, spec=stored)
    session.add(experiment)
    children = []
    for index, recipe in recipes:
        variant = variants[index]
        try:
            job = admission.create(session, recipe, owner, settings)
        except RecipeError as exc:
            loc, named = _where(spec, index)
            raise RecipeError(loc, f"{named}: {exc.detail}") from None
        job.experiment_id, job.variant = experiment.id, variant.name
        children.append(job)
    return experiment, children


def get(session: Session, experiment_id: str, owner: str) -> tuple[Experiment, list[Job]]:
    experiment = session.get(Experiment, experiment_id)
    if experiment is None or experiment.owner != owner:
        raise NotFound(f"no experiment {experiment_id!r}")
    children = list(
        session.execute(select(Job).where(Job.experiment_id == experiment_id).order_by(Job.created_at, Job.id)).scalars()
    )
    return experiment, children


def _mean_spread(values: list[float]) -> MeanSpread | None:
    if not values:
        return None
    return MeanSpread(
        mean=round(statistics.fmean(values), 4),
        spread=round(statistics.pstdev(values), 4) if len(values) > 1 else 0.0,
        n=len(values),
    )


def comparison(session: Session, experiment: Experiment, children: list[Job]) -> list[ComparisonRow]:
    """One row per variant, from its succeeded jobs' stored results and histories."""
    spec = ExperimentSpec.model_validate(experiment.spec)
    return [
        _row(
            session,
            variant.model_dump(mode="json"),
            [job for job in children if job.variant == variant.name],
            spec.target_accuracy,
        )
        for variant in spec.all_variants()
    ]


#: The TFLite figures a sweep's table shows, best first: the smallest format the inference report measured.
TFLITE_FORMATS = ("tflite_sparse_int8", "tflite_sparse", "tflite_float")


def _target_sparsity(mine: list[Job]) -> float | None:
    """What the variant's recipe asked for: the schedule's target, or the naive baseline's threshold."""
    if not mine:
        return None
    pruning = Recipe.model_validate(mine[0].recipe).pruning
    if pruning is None:
        return None
    if pruning.schedule is not None:
        return pruning.schedule.target
    return pruning.post_training_threshold


def _tflite(results: list[JobResult]) -> dict[str, Any]:
    """TFLite size and batch-1 latency: from the measured inference report when the job has one, else the size
    of the exported ``tflite`` file (no latency then)."""
    reports = [r.inference for r in results if r.inference is not None]
    for fmt in TFLITE_FORMATS:
        measured = [report.model[fmt] for report in reports if fmt in report.model]
        if measured:
            return {
                "tflite_format": fmt,
                "tflite_bytes": _mean_spread([float(m.bytes) for m in measured]),
                "tflite_latency_ms": _mean_spread([m.single_thread.batch1.median_ms for m in measured]),
            }
    sizes = [float(r.sizes["tflite"].bytes) for r in results if "tflite" in r.sizes]
    return {"tflite_format": "tflite" if sizes else None, "tflite_bytes": _mean_spread(sizes)}


def _row(session: Session, variant: dict[str, Any], mine: list[Job], target: float | None) -> ComparisonRow:
    done = [job for job in mine if job.status == JobStatus.SUCCEEDED.value]
    results = [JobResult.model_validate(job.result) for job in done]
    histories = [jobs.history(session, job.id) for job in done]
    reach = []
    for history in histories:
        hits = [h["epoch"] for h in history if (h.get("val_accuracy") or 0) >= (target or 2)]
        if target and hits:
            reach.append(hits[0])
    sizes = [next(iter(result.sizes.values())).gzip_bytes for result in results if result.sizes]
    return ComparisonRow(
        variant=variant["name"],
        overrides=variant["overrides"],
        jobs={job.id: job.status for job in mine},
        test_accuracy=_mean_spread([r.test["accuracy"] for r in results if "accuracy" in r.test]),
        best_val_accuracy=_mean_spread(
            [max((h.get("val_accuracy") or 0) for h in history) for history in histories if history]
        ),
        epochs_to_target=_mean_spread([float(e) for e in reach]) if target else None,
        reached_target=f"{len(reach)}/{len(done)}" if target else None,
        wall_seconds=_mean_spread(
            [(job.finished_at - job.started_at).total_seconds() for job in done if job.finished_at and job.started_at]
        ),  # a succeeded job has both
        sparsity=_mean_spread([r.sparsity.overall for r in results]),
        gzip_bytes=_mean_spread([float(s) for s in sizes]),
        target_sparsity=_target_sparsity(mine),
        baseline_accuracy=_mean_spread(
            [r.baseline.test["accuracy"] for r in results if r.baseline is not None and "accuracy" in r.baseline.test]
        ),
        **_tflite(results),
    )


def cancel(session: Session, experiment_id: str, owner: str) -> int:
    _, children = get(session, experiment_id, owner)
    count = 0
    for job in children:
        if job.status in (JobStatus.QUEUED.value, JobStatus.RUNNING.value):
            try:
                job_state.cancel(session, job.id, owner)
                count += 1
            except Conflict:  # it finished meanwhile
                pass
    return count


PLOT_KIND = "experiment-plot"


def finished_curves(session: Session, experiment_id: str) -> dict[str, list[list[dict[str, Any]]]] | None:
    """Each variant's histories once every child job has ended, else None."""
    children = list(session.execute(select(Job).where(Job.experiment_id == experiment_id)).scalars())
    if not children or any(JobStatus(job.status) not in FINISHED for job in children):
        return None
    curves: dict[str, list[list[dict[str, Any]]]] = {}
    for job in children:
        if job.status == JobStatus.SUCCEEDED.value and job.variant is not None:  # a child job has a variant
            curves.setdefault(job.variant, []).append(jobs.history(session, job.id))
    return curves


def _plot_file(experiment_id: str, name: str) -> str:
    """compare.png keeps the name it always had; a sweep's tradeoff.png is stored beside it."""
    return f"{experiment_id}.png" if name == "compare" else f"{experiment_id}-{name}.png"


def plot_artifact(session: Session, experiment_id: str, name: str = "compare") -> Artifact | None:
    return (
        session.execute(
            select(Artifact).where(Artifact.kind == PLOT_KIND, Artifact.filename == _plot_file(experiment_id, name))
        )
        .scalars()
        .first()
    )


def store_plot(session: Session, experiment_id: str, png: bytes, chunk_bytes: int, name: str = "compare") -> None:
    import io

    filename = _plot_file(experiment_id, name)
    session.execute(delete(Artifact).where(Artifact.kind == PLOT_KIND, Artifact.filename == filename))
    artifacts.store(session, io.BytesIO(png), kind=PLOT_KIND, format="png", filename=filename, chunk_bytes=chunk_bytes)


def sweep_rows(session: Session, experiment_id: str) -> list[ComparisonRow] | None:
    """A sweep's table, for its tradeoff plot; None for an experiment of listed variants."""
    experiment = session.get(Experiment, experiment_id)
    if experiment is None or not experiment.spec.get("sweep"):
        return None
    children = list(session.execute(select(Job).where(Job.experiment_id == experiment_id)).scalars())
    return comparison(session, experiment, children)


def remove(session: Session, experiment_id: str, owner: str) -> None:
    experiment, children = get(session, experiment_id, owner)
    busy = [job.id for job in children if JobStatus(job.status) not in FINISHED]
    if busy:
        raise Conflict(f"{len(busy)} jobs of this experiment are still queued or running: cancel it first")
    for job in children:
        jobs.remove(session, job.id, owner)
    forget(session, [experiment_id])


def forget(session: Session, experiment_ids: list[str]) -> None:
    """The experiments' rows and their comparison plots (their jobs are deleted, or kept, by the caller)."""
    files = [_plot_file(experiment_id, name) for experiment_id in experiment_ids for name in ("compare", "tradeoff")]
    plots = select(Artifact.id).where(Artifact.kind == PLOT_KIND, Artifact.filename.in_(files))
    session.execute(delete(ArtifactChunk).where(ArtifactChunk.artifact_id.in_(plots)))
    session.execute(delete(Artifact).where(Artifact.kind == PLOT_KIND, Artifact.filename.in_(files)))
    session.execute(delete(Experiment).where(Experiment.id.in_(experiment_ids)))
