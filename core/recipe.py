"""The recipe: the one definition of what a user may ask to train.

The same pydantic models validate ``POST /v1/jobs``, generate ``/openapi.json`` and are what the
worker's model builder reads, so the contract cannot drift between them. Shape and parameter
arithmetic lives here too (``output_shape``/``param_count``), because the API must reject an
oversized model without importing TensorFlow. Step arithmetic is in ``core.steps``, split arithmetic in
``core.splits``, SELU advice in ``core.advice`` and the default decoder in ``core.decoder``.
"""

from __future__ import annotations

import math
from collections.abc import Set
from typing import Annotated, Any, Literal, Self, Union

from pydantic import Field, model_validator

from core.decoder import mirrored_decoder
from core.errors import LayerChoiceError, ShapeError
from core.layers import PRUNABLE_TYPES, FromList, KernelLayer, Layer, Regularization, Shape, Strict


def _name_layers(layers: list[Layer], prefix: str, seen: set[str]) -> None:
    for index, layer in enumerate(layers):
        if layer.name is None:
            layer.name = f"{prefix}{layer.type}_{index}"
        if layer.name in seen:
            raise ValueError(f"layer name {layer.name!r} is used twice")
        seen.add(layer.name)


def layer_shapes(layers: list[Layer], start: Shape) -> list[tuple[Shape, Shape]]:
    """(input, output) shape of every layer from ``start``, without the batch axis; ShapeError at a bad one."""
    shape, out = start, list[tuple[Shape, Shape]]()
    for index, layer in enumerate(layers):
        try:
            nxt = layer.output_shape(shape)
        except ValueError as exc:
            raise ShapeError(index, str(exc)) from None
        out.append((shape, nxt))
        shape = nxt
    return out


def layer_flops(layers: list[Layer], start: Shape) -> dict[str, int]:
    """FLOPs per sample of each layer that has any (``LayerBase.flops``), by name; ShapeError at a bad shape."""
    out: dict[str, int] = {}
    for layer, (shape, _) in zip(layers, layer_shapes(layers, start)):
        count = layer.flops(shape)
        if count:
            out[layer.given_name] = count
    return out


class ModelSpec(Strict):
    """``input_shape`` and ``layers`` are required (``Recipe._model_rules``) except on an uploaded base model
    (``transfer.base_model_id``): admission then fills ``input_shape`` from the model's inspected shape, and
    ``reuse: "all"`` trains the base itself, so it has no layers of its own."""

    input_shape: list[Annotated[int, Field(ge=1, le=1_000_000)]] | None = Field(
        None, min_length=1, max_length=4, description="Without batch axis; default: the base model's."
    )
    layers: list[Layer] = Field(default_factory=list, max_length=200)
    decoder: list[Layer] | None = Field(
        None, max_length=200, description="Autoencoders only: the decoder; default mirrors the dense encoder."
    )

    @model_validator(mode="after")
    def _names(self) -> "ModelSpec":
        seen: set[str] = set()
        _name_layers(self.layers, "", seen)
        _name_layers(self.decoder or [], "decoder_", seen)
        return self

    @property
    def start(self) -> Shape:
        """The input shape; a recipe without one (a base model's, before admission filled it) has none to give."""
        if self.input_shape is None:
            raise ValueError("model.input_shape is not known yet: it comes from the base model at admission")
        return tuple(self.input_shape)

    def shapes(self, start: Shape | None = None) -> list[tuple[Shape, Shape]]:
        return layer_shapes(self.layers, self.start if start is None else start)

    def param_count(self, start: Shape | None = None) -> int:
        return sum(layer.param_count(i) for layer, (i, _) in zip(self.layers, self.shapes(start)))

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
    def _one_norm_clip(self) -> Self:
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
    """Seed: fine for simple quadratic problems, but often stops too early for deep nets."""

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
    amsgrad: bool = Field(False, description="adam only")

    @model_validator(mode="after")
    def _amsgrad_is_adam_only(self) -> Self:
        if self.amsgrad and self.type != "adam":
            raise ValueError(f"amsgrad is an option of adam, not {self.type}")
        return self


class AdamW(ClipOptions):
    type: Literal["adamw"]
    weight_decay: float = Field(0.004, ge=0, le=1)
    beta_1: float = Field(0.9, gt=0, lt=1)
    beta_2: float = Field(0.999, gt=0, lt=1)
    epsilon: float = Field(1e-7, gt=0, le=1)
    amsgrad: bool = False


Optimizer = Annotated[Union[SGD, Adagrad, RMSprop, Adam, AdamW], Field(discriminator="type")]


class ExponentialDecay(Strict):
    """lr · decay_rate^(step / decay_steps), from the optimizer's learning_rate."""

    type: Literal["exponential_decay"]
    decay_steps: int = Field(ge=1)
    decay_rate: float = Field(gt=0, le=1)
    staircase: bool = False


class PiecewiseConstant(Strict):
    type: Literal["piecewise_constant"]
    boundaries: list[Annotated[int, Field(ge=1)]] = Field(min_length=1, max_length=100)
    values: list[Annotated[float, Field(gt=0, le=10)]] = Field(min_length=2, max_length=101)

    @model_validator(mode="after")
    def _shape(self) -> Self:
        if len(self.values) != len(self.boundaries) + 1:
            raise ValueError("values needs one more entry than boundaries")
        if self.boundaries != sorted(set(self.boundaries)):
            raise ValueError("boundaries must be increasing")
        return self


class ReduceOnPlateau(Strict):
    type: Literal["reduce_on_plateau"]
    monitor: Literal["val_loss", "val_accuracy", "loss", "accuracy"] = "val_loss"
    factor: float = Field(0.5, gt=0, lt=1)
    patience: int = Field(5, ge=0, le=1000)
    min_lr: float = Field(0.0, ge=0)


LearningRateSchedule = Annotated[Union[ExponentialDecay, PiecewiseConstant, ReduceOnPlateau], Field(discriminator="type")]


Metric = Literal["accuracy"]
_ACCURACY: list[Metric] = ["accuracy"]  # typed constants, copied per recipe: a lambda's list literal is list[str]


class EarlyStopping(Strict):
    monitor: Literal["val_loss", "val_accuracy", "loss", "accuracy"] = "val_loss"
    patience: int = Field(5, ge=0, le=1000)
    restore_best_weights: bool = True


class TrainingSpec(Strict):
    optimizer: Optimizer = Field(default_factory=lambda: Adam(type="adam"))
    loss: Literal["sparse_categorical_crossentropy", "binary_crossentropy", "mse"] = "sparse_categorical_crossentropy"
    metrics: list[Metric] = Field(default_factory=lambda: _ACCURACY.copy(), max_length=4)
    epochs: int = Field(10, ge=1, le=100_000)
    batch_size: int = Field(32, ge=1, le=65536)
    learning_rate_schedule: LearningRateSchedule | None = None
    early_stopping: EarlyStopping | None = None
    max_runtime_s: int | None = Field(None, ge=1, description="The job fails with 'timeout' past this.")
    diagnostics: bool = Field(True, description="Per-epoch gradient and saturation figures on a probe batch.")
    distribution: Literal["none", "mirrored"] = Field(
        "none", description="mirrored: data-parallel over the worker's GPUs (or its logical CPUs when it has none)."
    )
    jit_compile: bool = Field(False, description="XLA-compile the training step.")
    mixed_precision: bool = Field(False, description="float16 compute, float32 weights; applied on a GPU only.")


class DatasetSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$", description="Built-in name or uploaded id.")
    test_fraction: float = Field(0.2, gt=0, lt=1)
    validation_fraction: float = Field(0.1, ge=0, lt=1, description="Of what is left after the test split.")
    classes: list[Annotated[int, Field(ge=0, le=100_000)]] | None = Field(
        None,
        min_length=1,
        description="Keep only these original labels (relabelled 0..k-1 in this order unless relabel says otherwise).",
    )
    relabel: dict[str, Annotated[int, Field(ge=0, le=100_000)]] | None = Field(
        None, description='Original label (as a string) → new label, e.g. {"6": 1, "8": 0}.'
    )
    limit: int | None = Field(None, ge=1, description="Train on the first N training samples only.")
    reshape: list[Annotated[int, Field(ge=1, le=100_000)]] | None = Field(
        None, min_length=1, max_length=3, description="Sample shape to train on, e.g. [8, 8, 1] for digits."
    )
    standardize: bool = Field(
        False,
        description="Z-score inputs with the training split's mean and std "
        "(a Normalization layer inside the model, so exports take raw inputs).",
    )

    @model_validator(mode="after")
    def _relabel_keys(self) -> Self:
        if self.relabel:
            for key in self.relabel:
                if not (key.isascii() and key.isdigit() and len(key) <= 6):  # "²" is a digit to isdigit()
                    raise ValueError(f"relabel keys are original labels as strings, not {key!r}")
            if self.classes is not None and set(map(int, self.relabel)) != set(self.classes):
                raise ValueError("relabel must map exactly the kept classes")
        return self


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


class StructuredPruning(Strict):
    """Remove whole units of dense layers and whole filters of conv2d layers, then shrink the model.

    The share of each layer's units masked follows TF-MOT's polynomial decay from 0 to ``final_fraction``
    (same arithmetic and argument names as ``PolynomialDecay``): ``final_fraction × (1 − (1 − p)^power)``,
    p the progress from ``begin_step`` to ``end_step``, updated every ``frequency`` steps. Units are ranked by
    the ``norm`` of their incoming weights (``worker.structured``). After the structured phase the model is
    rebuilt without the masked units (the *shrink*). With ``pruning.schedule`` (or ``sparsity_m_by_n``) too,
    the structured phase is the first ``epochs`` epochs and TF-MOT's unstructured pruning fine-tunes the
    shrunk model for the rest; its schedule's steps count from the start of that second phase."""

    final_fraction: float = Field(gt=0, lt=1, description="Share of units/filters removed from each pruned layer.")
    norm: Literal["l1", "l2"] = Field("l1", description="How a unit's incoming weights are ranked.")
    begin_step: int = Field(0, ge=0)
    end_step: int | Literal["auto"] = Field("auto", description="auto: the structured phase's last mask update.")
    power: float = Field(3.0, gt=0, le=100)
    frequency: int = Field(100, ge=1)
    epochs: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="With pruning.schedule or sparsity_m_by_n only (then required): epochs of the structured phase; "
        "the rest of training.epochs fine-tune the shrunk model under TF-MOT's unstructured pruning.",
    )
    layers: list[str] | None = Field(
        None, description="Dense/conv2d layers to prune; default every one but the output layer (its units are the classes)."
    )

    def removed(self, units: int, fraction: float | None = None) -> int:
        """Units removed from a layer of ``units`` at ``fraction`` (default the final one), rounded half up."""
        return math.floor(units * (self.final_fraction if fraction is None else fraction) + 0.5)


class PruningSpec(Strict):
    """Gradual magnitude pruning during training (``schedule``), 2:4 structured sparsity, or the seed's naive
    baseline: zero the smallest weights after training, no fine-tuning (``post_training_threshold``)."""

    schedule: PruningSchedule | None = None
    layers: list[str] | None = Field(None, description="Names of the layers to prune; default every layer TF-MOT can prune.")
    block_size: Annotated[tuple[Annotated[int, Field(ge=1, le=64)], Annotated[int, Field(ge=1, le=64)]], FromList] = (1, 1)
    block_pooling_type: Literal["AVG", "MAX"] = "AVG"
    sparsity_m_by_n: Annotated[tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=2)]], FromList] | None = Field(
        None, description="e.g. [2, 4]: at most 2 non-zero weights in every 4 (TF-MOT structured pruning)"
    )
    post_training_threshold: float | None = Field(None, gt=0, lt=1)
    structured: StructuredPruning | None = Field(
        None, description="Remove whole units/filters, then rebuild a smaller dense model (see README)."
    )

    @model_validator(mode="after")
    def _one_method(self) -> Self:
        if self.structured is not None:
            self._structured_rules(self.structured)
        methods = [
            self.schedule is not None or self.sparsity_m_by_n is not None or self.structured is not None,
            self.post_training_threshold is not None,
        ]
        if sum(methods) != 1:
            raise ValueError(
                "give a schedule (and/or sparsity_m_by_n, and/or structured) for pruning during training, or "
                "post_training_threshold for the naive baseline — exactly one of the two"
            )
        if self.sparsity_m_by_n and self.sparsity_m_by_n[0] >= self.sparsity_m_by_n[1]:
            raise ValueError("sparsity_m_by_n is [m, n] with m < n")
        if self.sparsity_m_by_n and self.block_size != (1, 1):
            raise ValueError("block_size does not combine with sparsity_m_by_n")
        return self

    def _structured_rules(self, structured: StructuredPruning) -> None:
        if self.post_training_threshold is not None:
            raise ValueError(
                "structured pruning fine-tunes while it removes units; post_training_threshold is the baseline "
                "without fine-tuning — give one or the other"
            )
        if self.unstructured and structured.epochs is None:
            raise ValueError(
                "with pruning.schedule (or sparsity_m_by_n) too, give structured.epochs: the epochs of the structured "
                "phase, before the shrunk model is fine-tuned under unstructured pruning"
            )
        if not self.unstructured and structured.epochs is not None:
            raise ValueError("structured.epochs splits the run with unstructured pruning; without pruning.schedule drop it")
        if not self.unstructured and self.layers is not None:
            raise ValueError(
                "pruning.layers picks the layers of TF-MOT's unstructured pruning; "
                "structured pruning alone takes pruning.structured.layers"
            )

    @property
    def unstructured(self) -> bool:
        """TF-MOT's pruning (a schedule or m:n) runs — after the shrink when ``structured`` is set too."""
        return self.schedule is not None or self.sparsity_m_by_n is not None

    @property
    def during_training(self) -> bool:
        return self.post_training_threshold is None


ExportFormat = Literal["h5", "keras", "savedmodel", "tflite"]
_H5_AND_KERAS: list[ExportFormat] = ["h5", "keras"]


class TFLiteOptions(Strict):
    sparsity: bool = Field(False, description="Store pruned weights in TFLite's sparse format.")
    dynamic_range_int8: bool = Field(False, description="Post-training dynamic-range int8 quantization.")


class ExportSpec(Strict):
    formats: list[ExportFormat] = Field(default_factory=lambda: _H5_AND_KERAS.copy(), min_length=1, max_length=4)
    tflite_options: TFLiteOptions = Field(default_factory=TFLiteOptions)


class TransferSpec(Strict):
    """Reuse the bottom layers of a finished job (seed: "Transfer learning with Keras") or of an uploaded model
    (``base_model_id``, exactly one of the two); ``model.layers`` is the new head stacked on them. Phase 1
    trains the head with the reused layers frozen; phase 2 unfreezes (the seed's code sets ``trainable =
    False`` there — it means True) and goes on at a lower rate. ``reuse: "all"`` (uploaded models only) has
    no head and no phases: the whole base is fine-tuned while pruning makes it sparse (TF-MOT's "prune a
    pre-trained model")."""

    base_job_id: str | None = Field(None, pattern=r"^[0-9a-f]{32}$", description="A succeeded job of yours.")
    base_model_id: str | None = Field(None, pattern=r"^[0-9a-f]{32}$", description="A ready model you uploaded.")
    reuse: Literal["all", "all_but_output", "encoder"] | Annotated[int, Field(ge=1, le=200)] = "all_but_output"
    freeze_epochs: int = Field(4, ge=0, le=100_000)
    unfreeze: Literal["all"] | Annotated[int, Field(ge=0, le=200)] = "all"
    fine_tune_learning_rate: float | None = Field(
        None, gt=0, le=10, description="Default: the optimizer's learning_rate / 10."
    )

    @model_validator(mode="after")
    def _one_base(self) -> Self:
        if (self.base_job_id is None) == (self.base_model_id is None):
            raise ValueError("give exactly one of base_job_id (a finished job) and base_model_id (an uploaded model)")
        if self.base_model_id is not None and self.reuse not in ("all", "all_but_output"):
            raise ValueError(f"an uploaded base model is reused 'all' or 'all_but_output', not {self.reuse!r}")
        if self.base_job_id is not None and self.reuse == "all":
            raise ValueError("reuse 'all' is for an uploaded base model (base_model_id)")
        return self

    @property
    def whole(self) -> bool:
        """The base itself is trained (and pruned): no head, no frozen phase."""
        return self.reuse == "all"


class Recipe(Strict):
    """A training job: data, network, optimizer, regularization, pruning and what to export."""

    name: str = Field("job", min_length=1, max_length=200)
    description: str | None = Field(None, max_length=4000, description="Free text: what this recipe shows.")
    kind: Literal["supervised", "autoencoder"] = Field(
        "supervised", description="autoencoder: trains on the inputs alone; model.layers is the encoder."
    )
    dataset: DatasetSpec
    seed: int = Field(42, ge=0, le=2**31 - 1)
    model: ModelSpec = Field(default_factory=ModelSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    regularization: Regularization | None = None
    pruning: PruningSpec | None = None
    export: ExportSpec = Field(default_factory=ExportSpec)
    transfer: TransferSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _head_names(cls, data: Any) -> Any:
        """On a transfer, unnamed head layers are ``head_<type>_<i>``: the reused layers own the plain names."""
        if isinstance(data, dict) and data.get("transfer") and isinstance(data.get("model"), dict):
            layers = data["model"].get("layers")
            if isinstance(layers, list):
                data = {
                    **data,
                    "model": {
                        **data["model"],
                        "layers": [
                            {**layer, "name": f"head_{layer.get('type')}_{i}"}
                            if isinstance(layer, dict) and layer.get("name") is None
                            else layer
                            for i, layer in enumerate(layers)
                        ],
                    },
                }
        return data

    @model_validator(mode="after")
    def _model_rules(self) -> Self:
        """What ``model`` must give: everything, unless an uploaded base model gives the input (and, reused
        whole, all the layers)."""
        base_model = self.transfer is not None and self.transfer.base_model_id is not None
        if self.model.input_shape is None and not base_model:
            raise ValueError("model.input_shape is required (only an uploaded base model can supply it)")
        if self.transfer is not None and self.transfer.whole:
            if self.model.layers or self.model.decoder is not None:
                raise ValueError("reuse 'all' trains the base model as it is: leave model.layers empty")
            if self.kind != "supervised":
                raise ValueError("reuse 'all' fine-tunes a supervised model")
        elif not self.model.layers:
            raise ValueError("model.layers needs at least one layer" + (" (the new head)" if self.transfer else ""))
        return self

    @model_validator(mode="after")
    def _kind_rules(self) -> Self:
        if self.kind == "autoencoder":
            if "loss" not in self.training.model_fields_set:
                self.training.loss = "mse"
            if "metrics" not in self.training.model_fields_set:
                self.training.metrics = []
            if self.training.loss == "sparse_categorical_crossentropy":
                raise ValueError("an autoencoder reconstructs its inputs: use mse or binary_crossentropy")
            if self.decoder_layers() is None:
                raise ValueError("give model.decoder: only a dense encoder can be mirrored")
        elif self.model.decoder is not None:
            raise ValueError("model.decoder belongs to kind 'autoencoder'")
        if self.transfer and self.transfer.reuse == "encoder" and self.kind == "autoencoder":
            raise ValueError("reuse 'encoder' builds a new model on an autoencoder's encoder, not another autoencoder")
        return self

    def decoder_layers(self) -> list[Layer] | None:
        """The decoder (``core.decoder``): [] for a supervised model, None when it cannot be mirrored."""
        if self.kind != "autoencoder":
            return []
        return (
            self.model.decoder
            if self.model.decoder is not None
            else mirrored_decoder(self.model.layers, list(self.model.start))
        )

    def all_layers(self) -> list[Layer]:
        """Every recipe layer in build order (an autoencoder's decoder after its encoder)."""
        return [*self.model.layers, *(self.decoder_layers() or [])]

    def check_pruned_layers(self, extra_prunable: Set[str] = frozenset()) -> None:
        """Named layers must exist and be prunable; raises ValueError with the index into ``pruning.layers``.

        ``extra_prunable``: prunable layers reused from a transfer base."""
        if not (self.pruning and self.pruning.layers is not None):
            return
        by_name = {layer.given_name: layer for layer in self.all_layers()}
        for i, name in enumerate(self.pruning.layers):
            if name in extra_prunable:
                continue
            if name not in by_name:
                raise LayerChoiceError(i, f"{name!r} is not a layer of the model ({', '.join(by_name)})")
            if by_name[name].type not in PRUNABLE_TYPES:
                raise LayerChoiceError(i, f"{name!r} is a {by_name[name].type} layer, which TF-MOT cannot prune")

    def regularization_for(self, layer: KernelLayer) -> Regularization | None:
        return layer.regularization if layer.regularization is not None else self.regularization

    def pruned_layer_names(self) -> list[str]:
        """The layers TF-MOT (or the naive threshold) prunes; structured pruning's are ``core.structured``'s."""
        if not self.pruning or (self.pruning.structured is not None and not self.pruning.unstructured):
            return []
        if self.pruning.layers is not None:
            return list(self.pruning.layers)
        return [layer.given_name for layer in self.all_layers() if layer.type in PRUNABLE_TYPES]
