"""TF-MOT magnitude pruning, applied only to the layers the recipe names (or every prunable one).

``prune_low_magnitude`` refuses layers it has no registry entry for (PReLU, our RReLU), so the model
is cloned with a ``clone_function`` that wraps just the chosen layers; the rest are reported dense.
"""

from __future__ import annotations

import numpy as np
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude

from core.recipe import ConstantSparsity, PolynomialDecay, Recipe
from worker.tf_env import keras, tfmot

sparsity = tfmot.sparsity.keras


def prune_schedule(spec: PolynomialDecay | ConstantSparsity | None, end_step: int | None):
    if spec is None:  # 2:4 alone: TF-MOT sets the structured mask once, at step 1, whatever the schedule
        return sparsity.ConstantSparsity(0.5, begin_step=0, frequency=1)
    if isinstance(spec, PolynomialDecay):
        return sparsity.PolynomialDecay(
            initial_sparsity=spec.initial_sparsity,
            final_sparsity=spec.final_sparsity,
            begin_step=spec.begin_step,
            end_step=end_step,
            power=spec.power,
            frequency=spec.frequency,
        )
    return sparsity.ConstantSparsity(
        target_sparsity=spec.target_sparsity, begin_step=spec.begin_step, end_step=end_step, frequency=spec.frequency
    )


def apply(model, recipe: Recipe, end_step: int | None, names: list[str]):
    """Returns (model with wrappers, names pruned). Other layers are kept as they are, weights included."""
    spec = recipe.pruning
    if spec is None:
        raise ValueError("apply() is for a recipe that prunes")
    chosen = set(names)
    options = {
        "pruning_schedule": prune_schedule(spec.schedule, end_step),
        "block_size": tuple(spec.block_size),
        "block_pooling_type": spec.block_pooling_type,
    }
    if spec.sparsity_m_by_n:
        options["sparsity_m_by_n"] = tuple(spec.sparsity_m_by_n)

    def clone(layer):
        if layer.name in chosen:
            return sparsity.prune_low_magnitude(layer, **options)
        return layer

    pruned = keras.models.clone_model(model, clone_function=clone)
    return pruned, sorted(chosen)


def strip(model):
    return sparsity.strip_pruning(model)


def callbacks() -> list:
    """Without UpdatePruningStep the masks never change (and TF-MOT raises)."""
    return [sparsity.UpdatePruningStep()]


def wrapped_kernels(model) -> list:
    """The weights TF-MOT masks in each wrapper (a DepthwiseConv2D's is its ``depthwise_kernel``)."""
    return [weight for layer in model.layers if isinstance(layer, PruneLowMagnitude) for weight, _, _ in layer.pruning_vars]


def threshold_after_training(model, names: list[str], fraction: float) -> None:
    """The seed's naive baseline: zero the ``fraction`` smallest-magnitude weights of each kernel, no fine-tuning."""
    for layer in model.layers:
        if layer.name not in names:
            continue
        kernel = layer.kernel.numpy()
        k = int(round(kernel.size * fraction))
        if k:
            cut = np.partition(np.abs(kernel).ravel(), k - 1)[k - 1]
            mask = np.abs(kernel) > cut
            # ties at the cut: keep exactly size - k weights
            extra = int(mask.size - mask.sum()) - k
            if extra > 0:
                ties = np.flatnonzero((np.abs(kernel) == cut).ravel())[:extra]
                mask.ravel()[ties] = True
            layer.kernel.assign(kernel * mask)
