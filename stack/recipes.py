"""The small recipe tests and benchmarks submit when the recipe itself is not the point."""

from __future__ import annotations

import copy
from typing import Any

SMALL = {
    "name": "iris-small",
    "dataset": {"name": "iris", "test_fraction": 0.2, "validation_fraction": 0.1},
    "seed": 7,
    "model": {
        "input_shape": [4],
        "layers": [
            {"type": "dense", "units": 16, "activation": "relu", "kernel_initializer": "he_normal"},
            {"type": "dense", "units": 3, "activation": "softmax"},
        ],
    },
    "training": {"optimizer": {"type": "adam", "learning_rate": 0.01}, "epochs": 5, "batch_size": 16},
    "regularization": {"l1": 1e-5},
    "pruning": {
        "schedule": {
            "type": "polynomial_decay",
            "initial_sparsity": 0.0,
            "final_sparsity": 0.5,
            "begin_step": 0,
            "end_step": "auto",
            "frequency": 2,
        }
    },
    "export": {"formats": ["h5"]},
}


def small_recipe(**overrides: Any) -> dict[str, Any]:
    """A tiny pruned iris model that trains in about a second; ``overrides`` are dotted paths
    (``small_recipe(**{"training.epochs": 2})``)."""
    recipe = copy.deepcopy(SMALL)
    for dotted, value in overrides.items():
        target: Any = recipe  # a dict, or whatever the path leads to
        *path, last = dotted.split(".")
        for part in path:
            target = target[part]
        target[last] = value
    return recipe
