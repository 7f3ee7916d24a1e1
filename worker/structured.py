"""Structured pruning in the worker: masks on whole units/filters while the model trains, then the *shrink*,
which rebuilds a smaller dense model of stock layers that predicts what the masked model predicts.

Where the mask sits is what makes the shrink exact. A unit's channel is zeroed by a ``ChannelMask`` placed
after every channel-wise layer that follows the pruned layer (batch normalization, activations, dropout,
pooling) and right before the layer that consumes it (the next dense/conv2d, or a flatten / global pooling in
front of it). Zeroing only the kernel column and bias would not do: a following batch normalization turns a
zero into ``β − γ·μ/√(σ²+ε)``, a sigmoid into 0.5, and folding such constants into the next layer's bias is
exact only where no zero padding meets them. With the mask at the consumer's input, a removed channel
contributes exactly nothing there, so removing it — its kernel column and bias, its batch normalization
entries, and the consumer's input weights for it — changes the outputs by float rounding only.

Units are ranked by the L1 or L2 norm of their incoming kernel slice; when a batch normalization follows, the
slice is first scaled by that unit's ``γ/√(σ²+ε)`` (the BN folded into the kernel), since BN rescales each unit.
Bias and β do not count. Masks only grow: a removed unit never comes back.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.recipe import StructuredPruning
from core.structured import MULTI_INPUT_CLASSES
from worker.tf_env import keras, tf

log = logging.getLogger("trainer.job")

#: Keras layers that act on each channel (last axis) alone; a removed channel is removed through them.
CHANNELWISE = frozenset(
    {
        "BatchNormalization",
        "Activation",
        "LeakyReLU",
        "ReLU",
        "ELU",
        "PReLU",
        "RReLU",
        "Dropout",
        "AlphaDropout",
        "GaussianDropout",
        "GaussianNoise",
        "MaxPooling2D",
        "AveragePooling2D",
    }
)
#: Layers after which a channel has new indices: flatten (channels-last positions) and global pooling.
REINDEXING = frozenset({"Flatten", "GlobalAveragePooling2D", "GlobalMaxPooling2D"})
KERNEL = frozenset({"Dense", "Conv2D"})


class StructureError(ValueError):
    """The model has a layer structured pruning cannot remove units through (its message names it)."""


class ChannelMask(keras.layers.Layer):
    """Multiplies the last axis by a 0/1 mask. Only in the model while it trains; the shrink drops it."""

    def __init__(self, channels: int, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels

    def build(self, input_shape):
        self.mask = self.add_weight(name="mask", shape=(self.channels,), initializer="ones", trainable=False)
        super().build(input_shape)

    def call(self, inputs):
        return inputs * tf.cast(self.mask, inputs.dtype)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}


@dataclass
class Group:
    """One pruned layer, the batch normalization that follows it (if any) and the mask at its consumer."""

    producer: Any  # a keras Dense / Conv2D (TensorFlow is untyped here)
    mask: ChannelMask
    bn: Any | None = None

    @property
    def units(self) -> int:
        return int(self.producer.kernel.shape[-1])

    def kept(self) -> np.ndarray:
        return np.flatnonzero(self.mask.mask.numpy())

    def scores(self, norm: str) -> np.ndarray:
        kernel = self.producer.kernel.numpy().reshape(-1, self.units)
        if self.bn is not None and self.bn.scale:
            kernel = kernel * (np.abs(self.bn.gamma.numpy()) / np.sqrt(self.bn.moving_variance.numpy() + self.bn.epsilon))
        return np.abs(kernel).sum(axis=0) if norm == "l1" else np.sqrt(np.square(kernel).sum(axis=0))

    def remove(self, count: int, norm: str) -> None:
        """Mask the ``count`` lowest-ranked units in all (those already masked stay masked)."""
        mask = self.mask.mask.numpy()
        have = int(np.sum(mask == 0))
        if count <= have:
            return
        alive = np.flatnonzero(mask)
        scores = self.scores(norm)
        mask[alive[np.argsort(scores[alive], kind="stable")][: count - have]] = 0
        self.mask.mask.assign(mask)
        gone = mask == 0  # the weights of a masked unit no longer matter; zeroed so the masked model shows it
        self.producer.kernel.assign(np.where(gone, 0.0, self.producer.kernel.numpy()).astype(np.float32))
        if self.producer.use_bias:
            self.producer.bias.assign(np.where(gone, 0.0, self.producer.bias.numpy()).astype(np.float32))


def _layers(model) -> list:
    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def refuse_branches(model) -> None:
    """A layer that joins branches (``Add``, ``Concatenate``, …) ends it: units would have to match across them."""
    for layer in _layers(model):
        if type(layer).__name__ in MULTI_INPUT_CLASSES or _inputs(layer) > 1:
            raise StructureError(
                f"layer {layer.name!r} ({type(layer).__name__}) joins branches; structured pruning removes units "
                "only along a single chain of layers"
            )


def _inputs(layer) -> int:
    nodes = getattr(layer, "_inbound_nodes", [])
    return max((len(tf.nest.flatten(node.input_tensors)) for node in nodes), default=1)


def _consumer_index(layers: list, index: int) -> int:
    """Index of the layer the mask goes in front of: the first flatten/global pooling or kernel layer after ``index``."""
    for j in range(index + 1, len(layers)):
        kind = type(layers[j]).__name__
        if kind in KERNEL or kind in REINDEXING:
            return j
        if kind == "BatchNormalization" and list(layers[j].axis) != [_rank(layers[j]) - 1]:
            raise StructureError(f"batch normalization {layers[j].name!r} does not normalize the last axis")
        if kind not in CHANNELWISE:
            raise StructureError(f"{layers[j].name!r} ({kind}) after {layers[index].name!r} mixes its units")
    raise StructureError(f"{layers[index].name!r} feeds the model's output: its units are the outputs")


def _rank(layer) -> int:
    return int(layer.input_spec.ndim if layer.input_spec.ndim is not None else layer.input_spec.min_ndim)


def insert_masks(model, names: list[str]) -> tuple[Any, list[Group]]:
    """A Sequential of the same layer objects (weights shared) with a ``ChannelMask`` at each pruned layer's
    consumer; the groups to update."""
    refuse_branches(model)
    layers = _layers(model)
    index = {layer.name: i for i, layer in enumerate(layers)}
    at: dict[int, ChannelMask] = {}
    groups = []
    for name in names:
        if name not in index or type(layers[index[name]]).__name__ not in KERNEL:
            raise StructureError(f"{name!r} is not a dense or conv2d layer of the model")
        i = index[name]
        j = _consumer_index(layers, i)
        mask = ChannelMask(int(layers[i].kernel.shape[-1]), name=f"{name}_structured_mask")
        bn = next((layer for layer in layers[i + 1 : j] if type(layer).__name__ == "BatchNormalization"), None)
        at[j] = mask
        groups.append(Group(layers[i], mask, bn))
    sequence = [keras.layers.InputLayer(input_shape=tuple(model.input_shape[1:]), name="input")]
    for j, layer in enumerate(layers):
        if j in at:
            sequence.append(at[j])
        sequence.append(layer)
    return keras.Sequential(sequence, name=model.name), groups


def fraction_at(spec: StructuredPruning, end_step: int, step: int) -> float:
    """TF-MOT's polynomial decay from 0 to ``final_fraction``, as of the last mask update at or before ``step``."""
    if step < spec.begin_step or step < 1:
        return 0.0
    last = spec.begin_step + ((min(step, end_step) - spec.begin_step) // spec.frequency) * spec.frequency
    progress = min(1.0, max(0.0, (last - spec.begin_step) / (end_step - spec.begin_step)))
    return spec.final_fraction * (1 - (1 - progress) ** spec.power)


class MaskSchedule(keras.callbacks.Callback):
    """Grows the masks along the schedule. Seen after each call into the graph (every batch, or every
    ``worker.training.STEPS_PER_EXECUTION`` in a long run), so an update lands up to that many steps late;
    the masks themselves act inside the graph on every step."""

    def __init__(self, groups: list[Group], spec: StructuredPruning, end_step: int):
        super().__init__()
        self.groups, self.spec, self.end_step = groups, spec, end_step
        self.fraction = 0.0

    def on_train_batch_end(self, batch, logs=None):
        self.update(int(self.model.optimizer.iterations.numpy()))

    def update(self, step: int) -> None:
        fraction = fraction_at(self.spec, self.end_step, step)
        if fraction > self.fraction:
            self.fraction = fraction
            for group in self.groups:
                group.remove(self.spec.removed(group.units, fraction), self.spec.norm)

    def finish(self) -> None:
        """The final masks, whatever step training stopped at (a run stopped early is shrunk as far as asked)."""
        self.update(self.end_step)


def shrink(masked, groups: list[Group]):
    """A plain Sequential of stock layers without the masked units, the masks and anything that fed only them."""
    kept = {group.producer.name: group.kept() for group in groups}
    keep: np.ndarray | None = None  # indices kept along the last axis of the tensor between layers
    shape = tuple(masked.input_shape[1:])
    rebuilt: list[tuple[Any, list[np.ndarray]]] = []
    for layer in _layers(masked):
        kind = type(layer).__name__
        out_shape = tuple(layer.compute_output_shape((None, *shape))[1:])
        if isinstance(layer, ChannelMask):
            shape = out_shape
            continue
        config, weights = layer.get_config(), layer.get_weights()
        if kind in KERNEL:
            kernel, *rest = weights
            if keep is not None:
                kernel = np.take(kernel, keep, axis=-2)
            keep = kept.get(layer.name)
            if keep is not None:
                kernel, rest = kernel[..., keep], [w[keep] for w in rest]
                config["units" if kind == "Dense" else "filters"] = len(keep)
            weights = [kernel, *rest]
        elif keep is not None and kind == "Flatten":
            channels, positions = shape[-1], math.prod(shape[:-1])
            keep = (np.arange(positions)[:, None] * channels + keep[None, :]).ravel()
        elif keep is not None and kind in ("BatchNormalization", "PReLU"):
            weights = [w[..., keep] for w in weights]
        elif keep is not None and weights:
            raise StructureError(f"{layer.name!r} ({kind}) has weights per unit that the shrink cannot cut")
        rebuilt.append((layer.__class__.from_config(config), weights))
        shape = out_shape
    model = keras.Sequential(
        [keras.layers.InputLayer(input_shape=tuple(masked.input_shape[1:]), name="input"), *(new for new, _ in rebuilt)],
        name=masked.name,
    )
    for new, weights in rebuilt:
        new.set_weights(weights)
    return model


@dataclass
class Report:
    """What the job's result says about the shrink (``core.results.StructuredResult`` without the FLOPs)."""

    units: dict[str, tuple[int, int]] = field(default_factory=dict)  # name → (before, kept)
    params_before: int = 0
    params_after: int = 0
    max_difference: float = 0.0


def report(masked, shrunk, groups: list[Group], sample: np.ndarray) -> Report:
    """Units kept, parameters (the masks not counted) and the largest output difference on ``sample``."""
    before = masked.predict(sample, verbose=0)
    after = shrunk.predict(sample, verbose=0)
    difference = float(np.max(np.abs(before - after))) if len(sample) else 0.0
    masks = sum(int(group.mask.mask.shape[0]) for group in groups)
    return Report(
        units={group.producer.name: (group.units, len(group.kept())) for group in groups},
        params_before=int(masked.count_params()) - masks,
        params_after=int(shrunk.count_params()),
        max_difference=difference,
    )
