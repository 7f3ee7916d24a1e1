"""Structured pruning, the API's half: which layers lose units, whether the model lets them go, and the shrunk
architecture's parameters and FLOPs — all without TensorFlow (``worker.structured`` does the masking and shrink).

A unit (dense) or filter (conv2d) can be removed only if every layer between it and the next kernel layer keeps
channels apart: then the next layer's input weights for it are simply cut. Layers that mix channels (``reshape``,
a batch normalization over another axis) or join branches (``Add``, ``Concatenate``, …) are refused, naming the
layer. The recipe language has no branches; the multi-input check is for Keras models that come from elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable

from core.errors import RecipeError
from core.layers import BatchNormalizationLayer, Layer, Shape
from core.recipe import Recipe, StructuredPruning, layer_flops, layer_shapes

#: Recipe layer types that act on each channel (last axis) alone: a removed unit is removed through them.
CHANNELWISE = frozenset(
    {"batch_normalization", "activation", "leaky_relu", "prelu", "rrelu", "elu", "dropout", "alpha_dropout", "max_pooling2d"}
)
#: Layers a removed channel passes through to a new index set: flatten (channels-last positions) and global pooling.
REINDEXING = frozenset({"flatten", "global_average_pooling2d"})
#: Keras layers that join branches: units would have to be kept consistent across them, which this does not do.
MULTI_INPUT_CLASSES = frozenset({"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate", "Dot"})

_LOC: list[str | int] = ["pruning", "structured"]


def output_layer(layers: list[Layer]) -> str | None:
    """The last dense/conv2d layer: its units are the model's outputs (the classes), never removed."""
    kernels = [layer.given_name for layer in layers if layer.type in ("dense", "conv2d")]
    return kernels[-1] if kernels else None


def pruned_names(recipe: Recipe) -> list[str]:
    """The layers structured pruning removes units from (``structured.layers`` or its default)."""
    spec = recipe.pruning.structured if recipe.pruning else None
    if spec is None:
        return []
    if spec.layers is not None:
        return list(spec.layers)
    layers = recipe.all_layers()
    last = output_layer(layers)
    return [layer.given_name for layer in layers if layer.type in ("dense", "conv2d") and layer.given_name != last]


def refuse_branches(layers: Iterable[tuple[str, str]]) -> None:
    """``(name, Keras class name)`` of a model's layers: RecipeError naming the first that joins branches."""
    for name, class_name in layers:
        if class_name in MULTI_INPUT_CLASSES:
            raise RecipeError(
                _LOC,
                f"layer {name!r} ({class_name}) joins branches; structured pruning removes units only along a "
                "single chain of layers, so it cannot keep them consistent across the branches",
            )


def check(recipe: Recipe) -> None:
    """RecipeError naming the field when the recipe's structured pruning cannot be done as asked."""
    spec = recipe.pruning.structured if recipe.pruning else None
    if spec is None:
        return
    if recipe.transfer is not None:
        raise RecipeError(_LOC, "structured pruning works on a recipe's own layers; it does not combine with transfer yet")
    if recipe.training.early_stopping is not None:
        raise RecipeError(
            ["training", "early_stopping"],
            "structured pruning must run its schedule to the end before the shrink; drop early_stopping",
        )
    if spec.epochs is not None and spec.epochs >= recipe.training.epochs:
        raise RecipeError(
            [*_LOC, "epochs"],
            f"the structured phase ({spec.epochs} epochs) must leave epochs of training.epochs "
            f"({recipe.training.epochs}) for the unstructured phase",
        )
    layers = recipe.all_layers()
    by_name = {layer.given_name: (i, layer) for i, layer in enumerate(layers)}
    last = output_layer(layers)
    names = pruned_names(recipe)
    if not names:
        raise RecipeError([*_LOC, "layers"], "no dense or conv2d layer but the output layer: nothing to prune")
    shapes = layer_shapes(layers, recipe.model.start)
    for k, name in enumerate(names):
        loc: list[str | int] = [*_LOC, "layers", k]
        if name not in by_name:
            raise RecipeError(loc, f"{name!r} is not a layer of the model ({', '.join(by_name)})")
        index, layer = by_name[name]
        if layer.type not in ("dense", "conv2d"):
            raise RecipeError(loc, f"{name!r} is a {layer.type} layer; only dense units and conv2d filters can be removed")
        if name == last:
            raise RecipeError(loc, f"{name!r} is the output layer: its units are the model's outputs and are never removed")
        units = shapes[index][1][-1]
        if spec.removed(units) >= units:
            raise RecipeError(
                [*_LOC, "final_fraction"],
                f"removing {spec.final_fraction} of {name!r}'s {units} units would leave none",
            )
        _check_path(layers, shapes, index, loc)
    if len(set(names)) != len(names):
        raise RecipeError([*_LOC, "layers"], "a layer is named twice")


def _check_path(layers: list[Layer], shapes: list[tuple[Shape, Shape]], index: int, loc: list[str | int]) -> None:
    """Every layer from ``layers[index]`` to the next kernel layer must keep channels apart."""
    for layer, (shape, _) in zip(layers[index + 1 :], shapes[index + 1 :]):
        if layer.type in ("dense", "conv2d"):
            return
        if isinstance(layer, BatchNormalizationLayer) and layer._axes(shape) != [len(shape)]:
            raise RecipeError(
                loc,
                f"batch normalization {layer.given_name!r} normalizes over axis {layer.axis}, mixing the units of "
                f"{layers[index].given_name!r}; structured pruning needs axis -1 there",
            )
        if layer.type not in CHANNELWISE | REINDEXING:
            raise RecipeError(
                loc,
                f"{layer.given_name!r} ({layer.type}) after {layers[index].given_name!r} mixes its units, "
                "so they cannot be removed one by one",
            )


def shrunk_layers(layers: list[Layer], kept: dict[str, int]) -> list[Layer]:
    """The recipe's layers as the shrink rebuilds them: ``kept`` units/filters of each pruned layer."""
    out: list[Layer] = []
    for layer in layers:
        if layer.given_name in kept:
            field = "units" if layer.type == "dense" else "filters"
            layer = layer.model_copy(update={field: kept[layer.given_name]})
        out.append(layer)
    return out


def kept_units(recipe: Recipe, spec: StructuredPruning) -> dict[str, int]:
    """Units/filters each pruned layer keeps at ``final_fraction`` (what the worker's masks reach)."""
    layers = recipe.all_layers()
    shapes = dict(zip((layer.given_name for layer in layers), layer_shapes(layers, recipe.model.start)))
    return {name: shapes[name][1][-1] - spec.removed(shapes[name][1][-1]) for name in pruned_names(recipe)}


def flops(layers: list[Layer], start: Shape) -> dict[str, int]:
    """FLOPs per sample by layer (``core.layers.LayerBase.flops``)."""
    return layer_flops(layers, start)
