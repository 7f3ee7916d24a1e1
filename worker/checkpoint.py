"""Resumable training state: weights (TF-MOT's masks and pruning step included), optimizer state, epoch.

Hours of GPU time are not thrown away when a worker dies: each finished epoch's state goes to the
database (at most every ``checkpoint_interval_s``), and a requeued job continues from it.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np


@dataclass
class State:
    epoch: int
    weights: list[np.ndarray]
    optimizer: list[np.ndarray]


def capture(model, epoch: int) -> bytes:
    arrays = {f"w{i}": w for i, w in enumerate(model.get_weights())}
    arrays.update({f"o{i}": v.numpy() for i, v in enumerate(model.optimizer.variables)})
    buffer = io.BytesIO()
    np.savez(buffer, epoch=np.array(epoch), **arrays)
    return buffer.getvalue()


def parse(data: bytes) -> State:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        count = lambda prefix: sum(1 for k in npz.files if k.startswith(prefix))  # noqa: E731
        return State(int(npz["epoch"]), [npz[f"w{i}"] for i in range(count("w"))],
                     [npz[f"o{i}"] for i in range(count("o"))])


def restore(model, state: State) -> None:
    """``model`` is compiled and built exactly as when the state was captured."""
    model.optimizer.build(model.trainable_variables)
    model.set_weights(state.weights)
    variables = model.optimizer.variables
    if len(variables) != len(state.optimizer):
        raise ValueError(f"checkpoint has {len(state.optimizer)} optimizer variables, the model {len(variables)}")
    for variable, value in zip(variables, state.optimizer):
        variable.assign(value)
