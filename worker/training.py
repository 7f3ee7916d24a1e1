"""Train a recipe on arrays: plain Keras + TF-MOT, no Flask, no Celery, no database.

``hooks`` lets the caller see each epoch and stop training at a batch boundary (cancel, time limit);
it is the only way this module talks to the outside.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from core.recipe import Recipe
from worker import builder, pruning
from worker.data import Splits, to_dataset
from worker.tf_env import keras, tf


class Hooks(Protocol):
    def on_epoch(self, epoch: int, metrics: dict) -> None: ...

    def stop_reason(self) -> str | None: ...


class Diverged(Exception):
    """The loss became NaN or infinite."""

    def __init__(self, epoch: int, loss: float):
        super().__init__(f"the loss became {loss} in epoch {epoch}")
        self.epoch = epoch


@dataclass
class Outcome:
    model: object  # stripped Keras model
    test: dict
    epochs_run: int
    stopped: str | None = None  # "cancelled" | "timeout" | None
    pruned_layers: list[str] = field(default_factory=list)
    seconds: float = 0.0


class _Progress(keras.callbacks.Callback):
    """Reports each epoch and stops at the next batch when asked; keeps batch logs as tensors (no sync)."""

    def __init__(self, hooks: Hooks, measure_sparsity: Callable[[], float | None]):
        super().__init__()
        self._supports_tf_logs = True
        self.hooks, self.measure_sparsity = hooks, measure_sparsity
        self.stopped: str | None = None
        self._epoch_started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        reason = self.hooks.stop_reason()
        if reason:
            self.stopped = reason
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        metrics = {k: float(v) for k, v in (logs or {}).items()}
        loss = metrics.get("loss", 0.0)
        if not math.isfinite(loss):
            self.model.stop_training = True
            raise Diverged(epoch + 1, loss)
        metrics["seconds"] = round(time.perf_counter() - self._epoch_started, 4)
        metrics["learning_rate"] = float(keras.backend.get_value(self.model.optimizer.learning_rate))
        current = self.measure_sparsity()
        if current is not None:
            metrics["sparsity"] = current
        if self.stopped is None:  # an epoch cut short by a stop is not a finished epoch
            self.hooks.on_epoch(epoch + 1, metrics)


def _loss_and_metrics(recipe: Recipe):
    return recipe.training.loss, list(recipe.training.metrics)


def train(recipe: Recipe, splits: Splits, hooks: Hooks, end_step: int | None = None, device: str = "/CPU:0") -> Outcome:
    started = time.perf_counter()
    keras.utils.set_random_seed(recipe.seed)
    tf.config.experimental.enable_op_determinism()
    with tf.device(device):
        model = builder.build_model(recipe)
        callbacks: list = []
        pruned_names: list[str] = []
        if recipe.pruning:
            model, pruned_names = pruning.apply(model, recipe, end_step)
            callbacks += pruning.callbacks()
            kernels = pruning.wrapped_kernels(model)

            def measure():
                total = sum(int(np.prod(k.shape)) for k in kernels)
                zeros = sum(int(np.sum(k.numpy() == 0)) for k in kernels)
                return round(zeros / total, 6) if total else None
        else:
            def measure():
                return None

        loss, metrics = _loss_and_metrics(recipe)
        model.compile(optimizer=builder.build_optimizer(recipe), loss=loss, metrics=metrics)
        progress = _Progress(hooks, measure)
        callbacks.append(progress)
        if recipe.training.early_stopping:
            es = recipe.training.early_stopping
            callbacks.append(keras.callbacks.EarlyStopping(
                monitor=es.monitor, patience=es.patience, restore_best_weights=es.restore_best_weights))
        batch = recipe.training.batch_size
        train_ds = to_dataset(splits.x_train, splits.y_train, batch, shuffle_seed=recipe.seed)
        val_ds = to_dataset(splits.x_val, splits.y_val, batch, None) if splits.x_val is not None else None
        history = model.fit(train_ds, validation_data=val_ds, epochs=recipe.training.epochs, callbacks=callbacks,
                            verbose=0)
        final = pruning.strip(model) if recipe.pruning else model
        final.compile(optimizer="sgd", loss=loss, metrics=metrics)
        test = final.evaluate(to_dataset(splits.x_test, splits.y_test, batch, None), verbose=0, return_dict=True)
    return Outcome(
        model=final, test={k: float(v) for k, v in test.items()}, epochs_run=len(history.epoch),
        stopped=progress.stopped, pruned_layers=pruned_names, seconds=time.perf_counter() - started,
    )
