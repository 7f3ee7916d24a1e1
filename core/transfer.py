"""Transfer from a finished job or an uploaded model: which of its Keras layers a new job reuses, checked
without TensorFlow.

The base job's recipe says exactly which Keras layers its stored model has (``keras_plan``); an uploaded
model's inspection (``core.model_inspect.ModelInspection``) says the same from its config. So the API can
refuse a bad reuse — unknown, unfinished or refused base, ``reuse`` larger than the base, a head or a
dataset that does not fit the base — before anything is queued; the worker then takes the same layers.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from core import model_store
from core.errors import Conflict, NotFound, RecipeError, ShapeError
from core.layers import PRUNABLE_TYPES, KernelLayer, activation_name
from core.model_inspect import ModelInspection
from core.models import Job, JobStatus
from core.plan import TransferChoice
from core.recipe import Recipe, TransferSpec, layer_shapes


@dataclass(frozen=True)
class KerasLayer:
    name: str
    recipe_index: int  # index into recipe.all_layers(); -1 for the standardize preprocessing
    output_shape: tuple[int, ...]
    params: int
    prunable: bool


def keras_plan(recipe: Recipe) -> list[KerasLayer]:
    """The Keras layers ``worker.builder`` makes for a (non-transfer) recipe, in order, InputLayer excluded."""
    shape = recipe.model.start
    plan = []
    if recipe.dataset.standardize:
        plan.append(KerasLayer("standardize", -1, shape, 0, False))
    layers = recipe.all_layers()
    for index, (layer, (in_shape, out_shape)) in enumerate(zip(layers, layer_shapes(layers, shape))):
        plan.append(
            KerasLayer(layer.given_name, index, out_shape, layer.param_count(in_shape), layer.type in PRUNABLE_TYPES)
        )
        if isinstance(layer, KernelLayer) and activation_name(layer.activation) == "leaky_relu":
            plan.append(KerasLayer(f"{layer.given_name}_leaky_relu", index, out_shape, 0, False))
    return plan


@dataclass(frozen=True)
class TransferPlan:
    base_job_id: str | None
    base_input_shape: tuple[int, ...]
    reused: list[KerasLayer]
    unfreeze: list[str]
    fine_tune_learning_rate: float
    base_model_id: str | None = None
    whole: bool = False
    #: An uploaded base's output shape (reuse "all": the model's output).
    base_output_shape: tuple[int, ...] | None = None

    @property
    def output_shape(self) -> tuple[int, ...]:
        if self.whole and self.base_output_shape is not None:
            return self.base_output_shape
        return self.reused[-1].output_shape if self.reused else self.base_input_shape

    def choice(self) -> TransferChoice:
        """What the job plan keeps of it for the worker: layer names, not shapes."""
        return TransferChoice(
            base_job_id=self.base_job_id,
            base_model_id=self.base_model_id,
            whole=True if self.whole else None,
            reused_layers=[layer.name for layer in self.reused],
            unfreeze_layers=self.unfreeze,
            fine_tune_learning_rate=self.fine_tune_learning_rate,
        )


def resolve(session: Session, recipe: Recipe, owner: str) -> TransferPlan:
    """The reused layers of the base job, checked against the new head; RecipeError naming the field."""
    spec = recipe.transfer
    if spec is None:
        raise ValueError("resolve() is for a recipe with a transfer")
    if spec.base_model_id is not None:
        return _resolve_uploaded(session, recipe, spec, spec.base_model_id, owner)
    if spec.base_job_id is None:  # TransferSpec gives exactly one of the two
        raise ValueError("a transfer names a base job or a base model")
    base = _base_recipe(session, spec.base_job_id, owner)
    if recipe.dataset.standardize:
        raise RecipeError(
            ["dataset", "standardize"],
            "a transfer job reuses its base's input preprocessing; standardize is set by the base's recipe",
        )
    reused = [layer for layer in keras_plan(base) if layer.recipe_index < _kept(base, spec)]
    if recipe.model.start != base.model.start:
        raise RecipeError(
            ["model", "input_shape"],
            f"the base takes inputs of shape {base.model.input_shape}, not {recipe.model.input_shape}",
        )
    clash = {layer.name for layer in reused} & {layer.name for layer in recipe.model.layers}
    if clash:
        raise RecipeError(["model", "layers"], f"head layer names {sorted(clash)} are taken by reused layers")
    tp = TransferPlan(
        spec.base_job_id,
        base.model.start,
        reused,
        _thawed(reused, spec),
        spec.fine_tune_learning_rate or recipe.training.optimizer.learning_rate / 10,
    )
    _check_head(recipe, tp)
    return tp


def _base_recipe(session: Session, base_job_id: str, owner: str) -> Recipe:
    """The recipe of a succeeded, non-transfer job of the owner that stored a model the worker can load."""
    where = ["transfer", "base_job_id"]
    base_row = session.get(Job, base_job_id)
    if base_row is None or base_row.owner != owner:
        raise RecipeError(where, f"no job {base_job_id!r} to transfer from")
    if base_row.status != JobStatus.SUCCEEDED.value:
        raise RecipeError(where, f"job {base_job_id} is {base_row.status}; only a succeeded job can be a base")
    if not {"h5", "keras"} & set(base_row.recipe["export"]["formats"]):
        raise RecipeError(where, f"job {base_job_id} exported no h5 or keras model to load")
    base = Recipe.model_validate(base_row.recipe)
    if base.transfer is not None:
        raise RecipeError(where, "the base is itself a transfer job; chains of transfers are not supported yet")
    return base


def _kept(base: Recipe, spec: TransferSpec) -> int:
    """How many of the base's recipe layers ``reuse`` keeps."""
    n_layers = len(base.all_layers())
    if spec.reuse == "encoder":
        if base.kind != "autoencoder":
            raise RecipeError(["transfer", "reuse"], "'encoder' needs a base of kind 'autoencoder'")
        return len(base.model.layers)
    if spec.reuse == "all_but_output":
        return n_layers - 1
    if spec.reuse == "all":  # TransferSpec allows it for an uploaded base only
        return n_layers
    if spec.reuse > n_layers:
        raise RecipeError(["transfer", "reuse"], f"the base has {n_layers} layers; cannot reuse {spec.reuse}")
    return spec.reuse


def _thawed(reused: list[KerasLayer], spec: TransferSpec) -> list[str]:
    """Names of the reused Keras layers the fine-tune phase trains: those of the top ``unfreeze`` recipe layers."""
    recipe_layers = sorted({layer.recipe_index for layer in reused if layer.recipe_index >= 0})
    if spec.unfreeze == "all":
        thawed = recipe_layers
    else:
        if spec.unfreeze > len(recipe_layers):
            raise RecipeError(
                ["transfer", "unfreeze"], f"only {len(recipe_layers)} layers are reused; cannot unfreeze {spec.unfreeze}"
            )
        thawed = recipe_layers[len(recipe_layers) - spec.unfreeze :]
    return [layer.name for layer in reused if layer.recipe_index in thawed]


def _uploaded_inspection(session: Session, model_id: str, owner: str) -> ModelInspection:
    """The inspection of a ready model of the owner. A refused model is a 422 (it will never be usable); one
    still being inspected is a 409 (submit again once its status is ``ready``)."""
    where = ["transfer", "base_model_id"]
    try:
        row = model_store.get(session, model_id, owner)
    except NotFound:
        raise RecipeError(where, f"no uploaded model {model_id!r}") from None
    if row.status == "rejected":
        raise RecipeError(where, f"model {model_id} was refused at upload ({row.reason}); it cannot be a base")
    if row.status != "ready" or row.inspection is None:
        raise Conflict(f"model {model_id} is still {row.status}; submit again once its status is 'ready'")
    return ModelInspection.model_validate(row.inspection)


def _shape(shape: list[int | None]) -> tuple[int, ...]:
    """A layer's inspected output shape (no batch axis); an axis known only at run time counts as 1 here."""
    return tuple(d if d is not None else 1 for d in shape)


def uploaded_layers(inspection: ModelInspection) -> list[KerasLayer]:
    """The uploaded model's Keras layers in the order of its config, InputLayer excluded."""
    return [
        KerasLayer(layer.name, index, _shape(layer.output_shape), layer.params, layer.prunable)
        for index, layer in enumerate(inspection.layers)
        if layer.class_name != "InputLayer"
    ]


def _resolve_uploaded(session: Session, recipe: Recipe, spec: TransferSpec, model_id: str, owner: str) -> TransferPlan:
    """``reuse: "all"`` reuses every layer (the base's output is the model's); ``"all_but_output"`` every layer
    but the last of the config, whose input the head then takes — for a functional model too, where the
    worker stacks the head on the output layer's input tensor."""
    inspection = _uploaded_inspection(session, model_id, owner)
    input_shape = tuple(inspection.input_shape)
    if recipe.model.input_shape is not None and tuple(recipe.model.input_shape) != input_shape:
        raise RecipeError(
            ["model", "input_shape"],
            f"the base model takes inputs of shape {list(input_shape)}, not {recipe.model.input_shape}",
        )
    if recipe.dataset.standardize:
        raise RecipeError(
            ["dataset", "standardize"],
            "an uploaded base model takes its inputs as it was trained on them; leave standardize off",
        )
    layers = uploaded_layers(inspection)
    if not layers:
        raise RecipeError(["transfer", "base_model_id"], f"model {model_id} has no layers to reuse")
    reused = layers if spec.whole else layers[:-1]
    clash = {layer.name for layer in reused} & {layer.name for layer in recipe.model.layers}
    if clash:
        raise RecipeError(["model", "layers"], f"head layer names {sorted(clash)} are taken by reused layers")
    names = [layer.name for layer in reused]
    if isinstance(spec.unfreeze, int) and spec.unfreeze > len(names):
        raise RecipeError(["transfer", "unfreeze"], f"only {len(names)} layers are reused; cannot unfreeze {spec.unfreeze}")
    tp = TransferPlan(
        None,
        input_shape,
        reused,
        names if spec.unfreeze == "all" or spec.whole else names[len(names) - spec.unfreeze :],
        spec.fine_tune_learning_rate or recipe.training.optimizer.learning_rate / 10,
        base_model_id=model_id,
        whole=spec.whole,
        base_output_shape=tuple(inspection.output_shape),
    )
    if not spec.whole:
        _check_head(recipe, tp)
    return tp


def _check_head(recipe: Recipe, tp: TransferPlan) -> None:
    """The recipe's new layers must take what the reused ones output: a 422 at the first layer that cannot."""
    try:
        recipe.model.shapes(tp.output_shape)
    except ShapeError as exc:
        raise RecipeError(
            ["model", "layers", exc.index], f"the reused layers output {list(tp.output_shape)}: {exc.msg}"
        ) from None
