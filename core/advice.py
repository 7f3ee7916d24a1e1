"""Advice on a valid recipe that will likely train badly: warnings shown with the job, never a refusal."""

from __future__ import annotations

from core.layers import KernelLayer, activation_name, initializer_name
from core.recipe import Recipe

#: Layers that break SELU's self-normalization (Klambauer et al. 2017 derive it for a plain dense stack).
SELU_BREAKERS = ("dropout", "batch_normalization", "conv2d", "max_pooling2d")


def selu_warnings(recipe: Recipe) -> list[str]:
    """Seed: SELU self-normalizes only with standardized inputs, LeCun-normal init and a plain dense stack."""
    layers = recipe.model.layers
    if not any(activation_name(getattr(layer, "activation", "linear")) == "selu" for layer in layers):
        return []
    out = []
    if not recipe.dataset.standardize:
        out.append("SELU needs standardized inputs: set dataset.standardize")
    hidden = [layer for layer in layers if isinstance(layer, KernelLayer)][:-1]  # the output layer's init is free
    odd_init = [layer.given_name for layer in hidden if initializer_name(layer.kernel_initializer) != "lecun_normal"]
    if odd_init:
        out.append(f"SELU needs lecun_normal initialization; not in {', '.join(odd_init)}")
    breaking = [layer.given_name for layer in layers if layer.type in SELU_BREAKERS]
    if breaking:
        out.append(
            f"SELU self-normalization is only guaranteed for a sequential stack of dense layers; "
            f"{', '.join(breaking)} break it (use alpha_dropout instead of dropout)"
        )
    if recipe.regularization and (recipe.regularization.l1 or recipe.regularization.l2):
        out.append("l1/l2 regularization weakens SELU's self-normalization")
    return out
