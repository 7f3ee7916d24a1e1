"""The recipe: the one definition of what a user may ask to train.

The same pydantic models validate ``POST /v1/jobs``, generate ``/openapi.json`` and are what the
worker's model builder reads, so the contract cannot drift between them. Shape and parameter
arithmetic lives here too (``output_shape``/``param_count``), because the API must reject an
oversized model without importing TensorFlow.
"""
from __future__ import annotations

import math
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

Activation = Literal["sigmoid", "tanh", "relu", "elu", "selu", "gelu", "swish", "softmax", "linear"]
Initializer = Literal[
    "glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_uniform", "lecun_normal", "zeros"
]
Shape = tuple[int, ...]


class Strict(BaseModel):
    """Unknown fields are errors: a misspelt option silently ignored would train the wrong model."""

    model_config = ConfigDict(extra="forbid")


class Regularization(Strict):
    """Penalties on kernels. L1 drives weights to exactly zero (seed: "Sparse models"), which pruning then keeps."""

    l1: float = Field(0.0, ge=0, le=1)
    l2: float = Field(0.0, ge=0, le=1)


class LayerBase(Strict):
    name: str | None = Field(
        None, pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$", description="Defaults to '<type>_<index>'."
    )

    def output_shape(self, input_shape: Shape) -> Shape:
        return input_shape

    def param_count(self, input_shape: Shape) -> int:
        return 0


class DenseLayer(LayerBase):
    type: Literal["dense"]
    units: int = Field(ge=1, le=65536)
    activation: Activation = "linear"
    kernel_initializer: Initializer = "glorot_uniform"
    use_bias: bool = True
    regularization: Regularization | None = Field(None, description="Overrides the recipe's global one.")

    def output_shape(self, input_shape: Shape) -> Shape:
        return (*input_shape[:-1], self.units)

    def param_count(self, input_shape: Shape) -> int:
        return input_shape[-1] * self.units + (self.units if self.use_bias else 0)


class BatchNormalizationLayer(LayerBase):
    """Seed: BN adds 4 parameters per feature, 2 of them (moving mean/variance) not trained by backprop."""

    type: Literal["batch_normalization"]
    momentum: float = Field(0.99, gt=0, lt=1)
    epsilon: float = Field(1e-3, gt=0, le=1)
    center: bool = True
    scale: bool = True

    def param_count(self, input_shape: Shape) -> int:
        return input_shape[-1] * (2 + int(self.center) + int(self.scale))


class ActivationLayer(LayerBase):
    type: Literal["activation"]
    activation: Activation


class DropoutLayer(LayerBase):
    type: Literal["dropout"]
    rate: float = Field(ge=0, lt=1)


Layer = Annotated[
    Union[DenseLayer, BatchNormalizationLayer, ActivationLayer, DropoutLayer], Field(discriminator="type")
]

#: Layers TF-MOT's registry knows how to prune (their kernels); the rest are left dense.
PRUNABLE_TYPES = frozenset({"dense"})


class ModelSpec(Strict):
    input_shape: list[Annotated[int, Field(ge=1, le=1_000_000)]] = Field(min_length=1, max_length=4)
    layers: list[Layer] = Field(min_length=1, max_length=200)

    @model_validator(mode="after")
    def _name_layers(self) -> "ModelSpec":
        seen: set[str] = set()
        for index, layer in enumerate(self.layers):
            if layer.name is None:
                layer.name = f"{layer.type}_{index}"
            if layer.name in seen:
                raise ValueError(f"layer name {layer.name!r} is used twice")
            seen.add(layer.name)
        return self

    def shapes(self) -> list[tuple[Shape, Shape]]:
        """(input, output) shape of every layer, without the batch axis."""
        shape: Shape = tuple(self.input_shape)
        out = []
        for layer in self.layers:
            nxt = layer.output_shape(shape)
            out.append((shape, nxt))
            shape = nxt
        return out

    def param_count(self) -> int:
        return sum(layer.param_count(i) for layer, (i, _) in zip(self.layers, self.shapes()))

    @property
    def output_shape(self) -> Shape:
        return self.shapes()[-1][1]


class ClipOptions(Strict):
    """Seed: clipvalue can turn the gradient's direction; clipnorm keeps it."""

    learning_rate: float = Field(0.001, gt=0, le=10)
    clipvalue: float | None = Field(None, gt=0)
    clipnorm: float | None = Field(None, gt=0)
    global_clipnorm: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_norm_clip(self):
        if self.clipnorm is not None and self.global_clipnorm is not None:
            raise ValueError("clipnorm and global_clipnorm cannot both be set")
        return self


class SGD(ClipOptions):
    """Plain, momentum (seed: friction 0.9) and Nesterov accelerated gradient."""

    type: Literal["sgd"]
    learning_rate: float = Field(0.01, gt=0, le=10)
    momentum: float = Field(0.0, ge=0, lt=1)
    nesterov: bool = False


class Adagrad(ClipOptions):
    type: Literal["adagrad"]


class RMSprop(ClipOptions):
    type: Literal["rmsprop"]
    rho: float = Field(0.9, gt=0, lt=1)
    momentum: float = Field(0.0, ge=0, lt=1)


class Adam(ClipOptions):
    type: Literal["adam", "adamax", "nadam"]
    beta_1: float = Field(0.9, gt=0, lt=1)
    beta_2: float = Field(0.999, gt=0, lt=1)
    epsilon: float = Field(1e-7, gt=0, le=1)


Optimizer = Annotated[Union[SGD, Adagrad, RMSprop, Adam], Field(discriminator="type")]


class EarlyStopping(Strict):
    monitor: Literal["val_loss", "val_accuracy", "loss", "accuracy"] = "val_loss"
    patience: int = Field(5, ge=0, le=1000)
    restore_best_weights: bool = True


class TrainingSpec(Strict):
    optimizer: Optimizer = Field(default_factory=lambda: Adam(type="adam"))
    loss: Literal["sparse_categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy", "mse"] = (
        "sparse_categorical_crossentropy"
    )
    metrics: list[Literal["accuracy"]] = Field(default_factory=lambda: ["accuracy"], max_length=4)
    epochs: int = Field(10, ge=1, le=100_000)
    batch_size: int = Field(32, ge=1, le=65536)
    early_stopping: EarlyStopping | None = None
    max_runtime_s: int | None = Field(None, ge=1, description="The job fails with 'timeout' past this.")


class DatasetSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$", description="Built-in name or uploaded id.")
    test_fraction: float = Field(0.2, gt=0, lt=1)
    validation_fraction: float = Field(0.1, ge=0, lt=1, description="Of what is left after the test split.")


class PolynomialDecay(Strict):
    """TF-MOT's schedule, with its argument names. ``end_step: "auto"`` is the run's last mask update."""

    type: Literal["polynomial_decay"]
    initial_sparsity: float = Field(0.0, ge=0, lt=1)
    final_sparsity: float = Field(ge=0, lt=1)
    begin_step: int = Field(0, ge=0)
    end_step: int | Literal["auto"] = "auto"
    power: float = Field(3.0, gt=0, le=100)
    frequency: int = Field(100, ge=1)

    @property
    def target(self) -> float:
        return self.final_sparsity


class ConstantSparsity(Strict):
    type: Literal["constant_sparsity"]
    target_sparsity: float = Field(ge=0, lt=1)
    begin_step: int = Field(0, ge=0)
    end_step: int | Literal["auto"] = "auto"
    frequency: int = Field(100, ge=1)

    @property
    def target(self) -> float:
        return self.target_sparsity


PruningSchedule = Annotated[Union[PolynomialDecay, ConstantSparsity], Field(discriminator="type")]


class PruningSpec(Strict):
    schedule: PruningSchedule
    layers: list[str] | None = Field(
        None, description="Names of the layers to prune; default every layer TF-MOT can prune."
    )


ExportFormat = Literal["h5", "keras", "savedmodel", "tflite"]


class ExportSpec(Strict):
    formats: list[ExportFormat] = Field(default_factory=lambda: ["h5", "keras"], min_length=1, max_length=4)


class Recipe(Strict):
    """A training job: data, network, optimizer, regularization, pruning and what to export."""

    name: str = Field("job", min_length=1, max_length=200)
    dataset: DatasetSpec
    seed: int = Field(42, ge=0, le=2**31 - 1)
    model: ModelSpec
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    regularization: Regularization | None = None
    pruning: PruningSpec | None = None
    export: ExportSpec = Field(default_factory=ExportSpec)

    def check_pruned_layers(self) -> None:
        """Named layers must exist and be prunable; raises ValueError with the index into ``pruning.layers``."""
        if not (self.pruning and self.pruning.layers is not None):
            return
        by_name = {layer.name: layer for layer in self.model.layers}
        for i, name in enumerate(self.pruning.layers):
            if name not in by_name:
                raise LayerChoiceError(i, f"{name!r} is not a layer of the model ({', '.join(by_name)})")
            if by_name[name].type not in PRUNABLE_TYPES:
                raise LayerChoiceError(i, f"{name!r} is a {by_name[name].type} layer, which TF-MOT cannot prune")

    def regularization_for(self, layer: DenseLayer) -> Regularization | None:
        return layer.regularization if layer.regularization is not None else self.regularization

    def pruned_layer_names(self) -> list[str]:
        if not self.pruning:
            return []
        if self.pruning.layers is not None:
            return list(self.pruning.layers)
        return [layer.name for layer in self.model.layers if layer.type in PRUNABLE_TYPES]


class LayerChoiceError(ValueError):
    def __init__(self, index: int, msg: str):
        super().__init__(msg)
        self.index = index


def split_sizes(n: int, test_fraction: float, validation_fraction: float) -> tuple[int, int, int]:
    """(train, validation, test) counts; the worker splits with exactly these so steps match the API's check."""
    n_test = max(1, math.ceil(n * test_fraction))
    rest = n - n_test
    n_val = math.ceil(rest * validation_fraction) if validation_fraction > 0 else 0
    return rest - n_val, n_val, n_test


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    return math.ceil(n_train / batch_size)


def first_mask_update(begin_step: int, frequency: int) -> int:
    """TF-MOT counts steps from 1 (``pruning_step`` is -1, set to 0, then incremented before the mask update)."""
    return begin_step if begin_step >= 1 else frequency


def resolve_end_step(schedule: PolynomialDecay | ConstantSparsity, total_steps: int) -> int:
    """The step at which the schedule's target is reached, or ValueError saying why it never is.

    Masks change only at steps where ``(step - begin_step) % frequency == 0``: ``auto`` becomes the last
    such step within the run (= epochs × steps per epoch when that is aligned), so the target is reached.
    """
    begin, freq = schedule.begin_step, schedule.frequency
    last_update = begin + ((total_steps - begin) // freq) * freq if total_steps >= begin else -1
    first = first_mask_update(begin, freq)
    if first > total_steps:
        raise ValueError(
            f"the run has {total_steps} training steps, but the first mask update is at step {first} "
            f"(begin_step={begin}, frequency={freq}): lower frequency or begin_step, or train longer"
        )
    if schedule.end_step == "auto":
        end = last_update
    else:
        end = schedule.end_step
        if end > total_steps:
            raise ValueError(
                f"end_step {end} is past the run's last step {total_steps} "
                f"(epochs × steps per epoch): the target sparsity would not be reached; use {last_update} or 'auto'"
            )
        if isinstance(schedule, PolynomialDecay) and (end - begin) % freq:
            nearest = begin + ((end - begin) // freq) * freq
            raise ValueError(
                f"masks change only every {freq} steps from begin_step {begin}, so end_step {end} is never a "
                f"mask update and the final sparsity is not reached; use {nearest} or 'auto'"
            )
    if isinstance(schedule, PolynomialDecay) and end <= begin:
        raise ValueError(f"end_step {end} must be after begin_step {begin}")
    return end
