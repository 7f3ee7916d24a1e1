"""Training-step arithmetic: steps per epoch and the step a pruning schedule reaches its target — computed
by the API at admission (``core.plan``) so a schedule that never reaches its sparsity is a 422, not a job."""

from __future__ import annotations

import math

from core.recipe import ConstantSparsity, PolynomialDecay, StructuredPruning


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    return math.ceil(n_train / batch_size)


def first_mask_update(begin_step: int, frequency: int) -> int:
    """TF-MOT counts steps from 1 (``pruning_step`` is -1, set to 0, then incremented before the mask update)."""
    return begin_step if begin_step >= 1 else frequency


def resolve_end_step(schedule: PolynomialDecay | ConstantSparsity | StructuredPruning, total_steps: int) -> int:
    """The step at which the schedule's target is reached, or ValueError saying why it never is.

    Masks change only at steps where ``(step - begin_step) % frequency == 0``: ``auto`` becomes the last
    such step within the run (= epochs × steps per epoch when that is aligned), so the target is reached.
    Structured pruning's schedule is a polynomial decay too; its "run" is the structured phase.
    """
    polynomial = isinstance(schedule, (PolynomialDecay, StructuredPruning))
    begin, freq = schedule.begin_step, schedule.frequency
    last_update = begin + ((total_steps - begin) // freq) * freq if total_steps >= begin else -1
    first = first_mask_update(begin, freq)
    if first > total_steps:
        raise ValueError(
            f"the run has {total_steps} training steps, but the first mask update is at step {first} "
            f"(begin_step={begin}, frequency={freq}): lower frequency or begin_step, or train longer"
        )
    if schedule.end_step == "auto":
        end = last_update
    else:
        end = schedule.end_step
        if end > total_steps:
            raise ValueError(
                f"end_step {end} is past the run's last step {total_steps} "
                f"(epochs × steps per epoch): the target sparsity would not be reached; use {last_update} or 'auto'"
            )
        if polynomial and (end - begin) % freq:
            nearest = begin + ((end - begin) // freq) * freq
            raise ValueError(
                f"masks change only every {freq} steps from begin_step {begin}, so end_step {end} is never a "
                f"mask update and the final sparsity is not reached; use {nearest} or 'auto'"
            )
    if polynomial and end <= begin:
        raise ValueError(f"end_step {end} must be after begin_step {begin}")
    return end
