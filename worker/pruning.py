"""TF-MOT magnitude pruning, applied only to the layers the recipe names (or every prunable one).

``prune_low_magnitude`` refuses layers it has no registry entry for, so the model is cloned with a
``clone_function`` that wraps just the chosen layers; the rest are reported as left dense.
"""
from __future__ import annotations

from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude

from core.recipe import ConstantSparsity, PolynomialDecay, Recipe
from worker.tf_env import keras, tfmot

sparsity = tfmot.sparsity.keras


def prune_schedule(spec: PolynomialDecay | ConstantSparsity, end_step: int):
    if isinstance(spec, PolynomialDecay):
        return sparsity.PolynomialDecay(
            initial_sparsity=spec.initial_sparsity, final_sparsity=spec.final_sparsity,
            begin_step=spec.begin_step, end_step=end_step, power=spec.power, frequency=spec.frequency,
        )
    return sparsity.ConstantSparsity(
        target_sparsity=spec.target_sparsity, begin_step=spec.begin_step, end_step=end_step, frequency=spec.frequency
    )


def apply(model, recipe: Recipe, end_step: int):
    """Returns (model with wrappers, names pruned)."""
    names = set(recipe.pruned_layer_names())
    schedule = prune_schedule(recipe.pruning.schedule, end_step)

    def clone(layer):
        if layer.name in names:
            return sparsity.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer.__class__.from_config(layer.get_config())

    pruned = keras.models.clone_model(model, clone_function=clone)
    return pruned, sorted(names)


def strip(model):
    return sparsity.strip_pruning(model)


def callbacks() -> list:
    """Without UpdatePruningStep the masks never change (and TF-MOT raises)."""
    return [sparsity.UpdatePruningStep()]


def wrapped_kernels(model) -> list:
    return [layer.layer.kernel for layer in model.layers if isinstance(layer, PruneLowMagnitude)]
