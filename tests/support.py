"""What the tests share beyond fixtures: training hooks that record, a recipe that runs until cancelled, a
worker for given Settings, and waiting on a condition. Processes, databases, the small recipe and waiting on a
job come from ``stack`` (bench/ uses the same)."""

from __future__ import annotations

import time
from pathlib import Path

from core.settings import Settings
from stack import processes
from stack.jobs import wait_for
from stack.processes import Proc
from stack.processes import settings_env as worker_env
from stack.recipes import small_recipe

__all__ = ["UNTIL_CANCELLED", "Recorder", "small_recipe", "start_worker", "wait_for", "wait_until", "worker_env"]


class Recorder:
    """Training hooks that keep every epoch's metrics and diagnostics, and stop after ``stop_after`` epochs."""

    def __init__(self, stop_after: int | None = None):
        self.epochs: list[dict] = []
        self.diagnostics: list = []
        self.stop_after = stop_after

    def on_epoch(self, epoch, metrics, diagnostics=None, phase=None, state=None):
        self.epochs.append(metrics)
        self.diagnostics.append(diagnostics)

    def stop_reason(self):
        return "cancelled" if self.stop_after is not None and len(self.epochs) >= self.stop_after else None


UNTIL_CANCELLED = {"name": "until-cancelled", "training.epochs": 100_000, "training.batch_size": 1}
"""Overrides for ``small_recipe``: the recipe's maximum of epochs at ~100 steps each, hours on any machine, so a
test that must catch the job running (to cancel it, watch it move, kill its worker) never races its natural end.
Submit it to ``patient_api``: the suite's own API caps epochs at 1,000; cancel it in a ``finally``."""


def start_worker(settings: Settings, log_path: Path, **env) -> Proc:
    """A real ``celery worker`` process on ``settings`` (plus ``env``), waited on until it says ready."""
    return processes.start_worker(worker_env(settings, **env), log_path)


def wait_until(predicate, timeout: float = 60, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)
    return value


def tflite_predict(path: Path, x):
    """What a stock TFLite interpreter computes for the batch ``x`` from the exported file (the batch size resized)."""
    from worker.tf_env import tf

    interpreter = tf.lite.Interpreter(model_path=str(path))
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
