"""A recipe's training memory, estimated at admission from shapes alone (no TensorFlow).

The parameter limit does not bound activations: a ``reshape`` and a wide dense layer on the last axis of an
image cost tens of GiB per batch with a few hundred thousand parameters. The estimate adds what a worker
child holds while it trains: weights, their gradients and optimizer slots, pruning masks, each layer's kept
activations × the rows of a batch, the gradients live during backprop, the dataset with its ``tf.data``
copies, and the runtime's own cost of a first fit. It is measured against TensorFlow's peak in
``bench/footprint.py`` (within 2× either way; the table is in README). It excludes the worker's baseline
with TensorFlow imported, which the child shares with the Celery parent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from core.datasets import DatasetInfo
from core.errors import RecipeError
from core.plan import JobPlan
from core.recipe import SGD, Adagrad, Adam, AdamW, Recipe, RMSprop, layer_shapes
from core.transfer import TransferPlan

FLOAT_BYTES = 4
LABEL_BYTES = 8  # int64 labels, as the worker loads them
#: Rows of the diagnostics probe (the worker imports this): a forward and backward pass per epoch.
PROBE_ROWS = 256
#: Copies of the dataset a job holds: the numpy split, ``tf.data``'s tensor, its cache and the shuffle buffer.
DATASET_COPIES = 4
#: Tensors of the widest output's size alive at once in backprop: the gradient arriving, the one leaving and
#: a temporary (a pre-activation, a reshape's copy); 3 matches the wide-dense case within 20 % (bench/footprint).
BACKPROP_LIVE = 3
#: A first ``fit`` in a fresh child: graph tracing, kernels paged in, thread pools (measured, bench/footprint).
RUNTIME_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class LayerCost:
    loc: tuple[str | int, ...]  # where the layer is in the recipe, for the error
    name: str
    type: str
    activation_bytes: int


@dataclass(frozen=True)
class Footprint:
    rows: int  # the largest batch a pass holds: batch_size, the probe, or the whole training set if smaller
    weights_bytes: int  # weights, gradients and optimizer slots
    pruning_bytes: int
    activation_bytes: int
    dataset_bytes: int
    runtime_bytes: int
    layers: tuple[LayerCost, ...]

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.pruning_bytes + self.activation_bytes + self.dataset_bytes + self.runtime_bytes

    @property
    def largest(self) -> LayerCost:
        return max(self.layers, key=lambda layer: layer.activation_bytes)


def optimizer_slots(recipe: Recipe) -> int:
    """Variables of a parameter's size each optimizer keeps (Keras's: momentum, velocity, accumulator…)."""
    spec = recipe.training.optimizer
    if isinstance(spec, SGD):
        return int(spec.momentum > 0)
    if isinstance(spec, Adagrad):
        return 1
    if isinstance(spec, RMSprop):
        return 1 + int(spec.momentum > 0)
    if isinstance(spec, (Adam, AdamW)):
        return 2 + int(spec.amsgrad)
    raise TypeError(f"no slot count for optimizer {spec.type!r}")


def _layer_costs(recipe: Recipe, tp: TransferPlan | None, rows: int) -> tuple[list[LayerCost], int, int]:
    """(kept activations per layer, the widest output in values per sample, pruned kernel parameters)."""
    pruned: set[str] = set()
    if recipe.pruning and recipe.pruning.during_training:
        pruned = set(recipe.pruned_layer_names())
        if tp and recipe.pruning.layers is None:  # as core.admission.check: the reused prunable layers too
            pruned |= {layer.name for layer in tp.reused if layer.prunable}
    costs, widest, pruned_params = [], math.prod(recipe.model.start), 0
    if tp:
        for kept in tp.reused:  # a stored Keras layer: its output is what it keeps
            size = math.prod(kept.output_shape)
            widest = max(widest, size)
            costs.append(LayerCost(("transfer", "reuse"), kept.name, "reused", size * rows * FLOAT_BYTES))
            if kept.name in pruned:
                pruned_params += kept.params
        layers, start = recipe.model.layers, tp.output_shape
    else:
        layers, start = recipe.all_layers(), recipe.model.start
        if recipe.dataset.standardize:
            costs.append(
                LayerCost(("dataset", "standardize"), "standardize", "normalization", math.prod(start) * rows * FLOAT_BYTES)
            )
    n_encoder = len(recipe.model.layers)
    for index, (layer, (in_shape, out_shape)) in enumerate(zip(layers, layer_shapes(layers, start))):
        loc: tuple[str | int, ...]
        if index < n_encoder:
            loc = ("model", "layers", index)
        else:
            loc = ("model", "decoder", index - n_encoder) if recipe.model.decoder else ("model", "layers")
        size = layer.activation_size(in_shape)
        widest = max(widest, math.prod(out_shape))
        costs.append(LayerCost(loc, layer.given_name, layer.type, size * rows * FLOAT_BYTES))
        if layer.given_name in pruned:
            pruned_params += layer.param_count(in_shape)
    return costs, widest, pruned_params


def estimate(recipe: Recipe, info: DatasetInfo, sizes: JobPlan, params: int, tp: TransferPlan | None = None) -> Footprint:
    """``info`` as the recipe selects it, ``sizes`` the plan's split (``core.plan.plan_for``), ``params`` all of
    the model's (reused layers included)."""
    n_train = sizes.train_samples
    rows = min(recipe.training.batch_size, n_train)
    if recipe.training.diagnostics and recipe.training.distribution == "none":
        rows = max(rows, min(PROBE_ROWS, n_train))
    costs, widest, pruned_params = _layer_costs(recipe, tp, rows)
    per_sample = math.prod(info.feature_shape)
    inputs = per_sample * rows * FLOAT_BYTES
    backprop = BACKPROP_LIVE * widest * rows * FLOAT_BYTES
    samples = n_train + sizes.validation_samples + sizes.test_samples
    return Footprint(
        rows=rows,
        weights_bytes=params * FLOAT_BYTES * (2 + optimizer_slots(recipe)),
        # a mask per pruned kernel, and the masked kernel the wrapper computes each step
        pruning_bytes=2 * pruned_params * FLOAT_BYTES,
        activation_bytes=inputs + sum(c.activation_bytes for c in costs) + backprop,
        dataset_bytes=samples * (per_sample * FLOAT_BYTES * DATASET_COPIES + LABEL_BYTES),
        runtime_bytes=RUNTIME_BYTES,
        layers=tuple(costs),
    )


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def admit(footprint: Footprint, limit: int) -> None:
    """RecipeError at the layer whose activations are largest when the whole is over ``limit``."""
    if footprint.total_bytes <= limit:
        return
    top = footprint.largest
    raise RecipeError(
        list(top.loc),
        (
            f"training would need about {gib(footprint.total_bytes)} of memory (estimate); the limit is {gib(limit)}. "
            f"The largest layer is {top.name!r} ({top.type}): {gib(top.activation_bytes)} of activations at "
            f"{footprint.rows} rows per batch. Lower training.batch_size or that layer's size"
        ),
    )
