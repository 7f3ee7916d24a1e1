"""Resumable training state: weights (TF-MOT's masks and pruning step included), optimizer state, epoch.

Hours of GPU time are not thrown away when a worker dies: a finished epoch's state goes to the
database and a requeued job continues from it. How often is ``Policy``'s call: a small model's state is
written after every epoch, a big one's only as often as keeps the writing under a share of the job's time.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: A state this small is written after every epoch: a tiny model then loses nothing to a crash, and its
#: few milliseconds need no budget (the tests' iris model's is about 11 KB).
ALWAYS_BYTES = 256 * 1024


@dataclass
class Policy:
    """When the next checkpoint is due, from what the last one cost (it is measured, not estimated).

    Never more often than ``interval_s``. Above ``ALWAYS_BYTES``, after a checkpoint that took ``c``
    seconds the next waits ``c / max_share`` seconds, so checkpointing takes at most ``max_share`` of the
    job's wall time (a 70 MB state that takes 1 s to write is written at most every 20 s at 5 %), and a
    crash loses at most that long. ``max_share`` 0 switches the budget off: every epoch, as before.
    """

    interval_s: float = 0.0
    max_share: float = 0.05
    clock: Callable[[], float] = time.monotonic
    last_at: float = -math.inf
    last_seconds: float = 0.0
    last_bytes: int = 0
    written: int = 0
    skipped: int = 0
    seconds_total: float = 0.0

    def due(self) -> bool:
        since = self.clock() - self.last_at
        ok = since >= self.interval_s and (
            self.max_share <= 0 or self.last_bytes <= ALWAYS_BYTES or since >= self.last_seconds / self.max_share
        )
        if not ok:
            self.skipped += 1
        return ok

    def spacing_s(self) -> float:
        """The shortest time between two checkpoints that the last one's cost allows."""
        budget = 0.0 if self.max_share <= 0 or self.last_bytes <= ALWAYS_BYTES else self.last_seconds / self.max_share
        return max(self.interval_s, budget)

    def record(self, started: float, size: int) -> None:
        """``started``: the clock when capturing began; called once the checkpoint is committed."""
        self.last_at = self.clock()
        self.last_seconds, self.last_bytes = self.last_at - started, size
        self.seconds_total += self.last_seconds
        self.written += 1


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
        return State(int(npz["epoch"]), [npz[f"w{i}"] for i in range(count("w"))], [npz[f"o{i}"] for i in range(count("o"))])


def restore(model, state: State) -> None:
    """``model`` is compiled and built exactly as when the state was captured."""
    model.optimizer.build(model.trainable_variables)
    model.set_weights(state.weights)
    variables = model.optimizer.variables
    if len(variables) != len(state.optimizer):
        raise ValueError(f"checkpoint has {len(state.optimizer)} optimizer variables, the model {len(variables)}")
    for variable, value in zip(variables, state.optimizer):
        variable.assign(value)
