"""Train a recipe on arrays: plain Keras + TF-MOT, no Flask, no Celery, no database.

``hooks`` lets the caller see each epoch and stop training at a batch boundary (cancel, time limit);
it is the only way this module talks to the outside.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from core.causes import Cause, JobStopped
from core.recipe import Recipe, ReduceOnPlateau
from worker import builder, checkpoint, pruning, reuse
from worker.data import Splits, shaped_for_output, standardization, to_dataset
from worker.diagnostics import Probe
from worker.tf_env import keras, tf

log = logging.getLogger("trainer.job")


class Hooks(Protocol):
    def on_epoch(self, epoch: int, metrics: dict, diagnostics: list[dict] | None, phase: str,
                 state: Callable[[], bytes] | None = None) -> None: ...

    def stop_reason(self) -> str | None: ...


class Silent:
    """Hooks that watch nothing and never stop: for benchmarks and tests of the training code alone."""

    def on_epoch(self, *args, **kwargs) -> None:
        pass

    def stop_reason(self) -> str | None:
        return None


class Diverged(JobStopped):
    """The loss became NaN or infinite."""

    def __init__(self, epoch: int, batch: int, loss: float):
        super().__init__(Cause.DIVERGED, f"the loss became {loss} in epoch {epoch}, batch {batch}",
                         epoch=epoch, batch=batch)
        self.epoch, self.batch = epoch, batch


@dataclass
class Outcome:
    model: object  # stripped Keras model
    test: dict
    epochs_run: int
    stopped: str | None = None  # what Hooks.stop_reason said: "cancelled" | "timeout" | "lost" | None
    pruned_layers: list[str] = field(default_factory=list)
    seconds: float = 0.0
    test_before_threshold: dict | None = None
    transfer: dict | None = None
    initial_kernels: list = field(default_factory=list)


class _Progress(keras.callbacks.Callback):
    """Reports each epoch, stops at a batch boundary when asked (within ``STEPS_PER_EXECUTION`` batches in a
    long run), and fails fast on a NaN/inf loss (seen at the same granularity)."""

    def __init__(self, hooks: Hooks, measure_sparsity: Callable[[], float | None], probe: Probe | None):
        super().__init__()
        self._supports_tf_logs = True  # batch logs stay tensors: only the loss is read
        self.hooks, self.measure_sparsity, self.probe = hooks, measure_sparsity, probe
        self.stopped: str | None = None
        self.phase = "train"
        self.checkpointable = False
        self._epoch_started, self._epoch = 0.0, 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_started, self._epoch = time.perf_counter(), epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            self.model.stop_training = True
            raise Diverged(self._epoch, batch + 1, loss)
        reason = self.hooks.stop_reason()
        if reason:
            self.stopped = reason
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.stopped is not None:  # an epoch cut short by a stop is not a finished epoch
            return
        metrics = {k: float(v) for k, v in (logs or {}).items()}
        metrics["seconds"] = round(time.perf_counter() - self._epoch_started, 4)
        metrics["learning_rate"] = builder.current_learning_rate(self.model.optimizer)
        current = self.measure_sparsity()
        if current is not None:
            metrics["sparsity"] = current
        state = (lambda: checkpoint.capture(self.model, epoch + 1)) if self.checkpointable else None
        self.hooks.on_epoch(epoch + 1, metrics, self.probe.measure() if self.probe else None, self.phase, state)


def _kernel_sparsity(kernels) -> Callable[[], float | None]:
    def measure():
        total = sum(int(np.prod(k.shape)) for k in kernels)
        zeros = sum(int(np.sum(k.numpy() == 0)) for k in kernels)
        return round(zeros / total, 6) if total else None

    return measure


def _evaluate(model, recipe: Recipe, splits: Splits, stats=None) -> dict:
    model.compile(optimizer="sgd", loss=recipe.training.loss, metrics=list(recipe.training.metrics))
    y = _targets(recipe, splits.x_test, splits.y_test, stats)
    test = model.evaluate(to_dataset(splits.x_test, y, recipe.training.batch_size, None), verbose=0,
                          return_dict=True)
    return {k: float(v) for k, v in test.items()}


@dataclass
class Transfer:
    """What ``worker.reuse`` loaded for a transfer job, and how to thaw it."""

    layers: list
    unfreeze: list[str]
    fine_tune_learning_rate: float


def _targets(recipe: Recipe, x, y, stats):
    """An autoencoder's target is its (standardized) input; a supervised model's, the labels."""
    if recipe.kind != "autoencoder":
        return y
    if stats is None:
        return x
    mean, variance = stats
    return (x - mean) / np.sqrt(np.maximum(variance, 1e-7))


#: Training steps Keras runs per call into the graph (one Python round trip, one ``_Progress`` batch check) in a
#: run of at least ``BATCHED_FROM_STEPS`` steps. A per-batch Python callback cost the seed's MLP on Fashion-MNIST
#: about a quarter of its CPU per epoch (3.6 vs 2.65 CPU-s, same weights bit for bit); the graph loop costs a
#: little more tracing once, which a short run (the contract's digits recipe: 1,230 steps) does not win back.
#: A stop request or a NaN loss is then seen within 16 steps instead of one.
STEPS_PER_EXECUTION = 16
BATCHED_FROM_STEPS = 2048


def steps_per_execution(n_train: int, recipe: Recipe) -> int:
    total = math.ceil(n_train / recipe.training.batch_size) * recipe.training.epochs
    return STEPS_PER_EXECUTION if total >= BATCHED_FROM_STEPS else 1


def _compile(model, recipe: Recipe, learning_rate: float | None = None, steps: int = 1) -> None:
    model.compile(optimizer=builder.build_optimizer(recipe, learning_rate), loss=recipe.training.loss,
                  metrics=list(recipe.training.metrics), jit_compile=recipe.training.jit_compile,
                  steps_per_execution=steps)


def placement(recipe: Recipe, device: str):
    """Where the model's variables live: one pinned device, or a MirroredStrategy's scope (model and pruning
    wrappers must be built inside it)."""
    if recipe.training.distribution != "mirrored":
        return tf.device(device), None
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    strategy = tf.distribute.MirroredStrategy(devices)
    log.info("mirrored over %s", ", ".join(devices))
    return strategy.scope(), strategy


def precision(recipe: Recipe) -> None:
    """mixed_float16 only where it pays (a GPU); on a CPU it is slower, so the job says so and trains in float32."""
    policy = "float32"
    if recipe.training.mixed_precision:
        if tf.config.list_physical_devices("GPU"):
            policy = "mixed_float16"
        else:
            log.warning("mixed_precision needs a GPU; this worker has none, so the job trains in float32")
    keras.mixed_precision.set_global_policy(policy)


def _callbacks(recipe: Recipe) -> list:
    out = []
    schedule = recipe.training.learning_rate_schedule
    if isinstance(schedule, ReduceOnPlateau):
        out.append(keras.callbacks.ReduceLROnPlateau(
            monitor=schedule.monitor, factor=schedule.factor, patience=schedule.patience, min_lr=schedule.min_lr))
    if recipe.training.early_stopping:
        es = recipe.training.early_stopping
        out.append(keras.callbacks.EarlyStopping(
            monitor=es.monitor, patience=es.patience, restore_best_weights=es.restore_best_weights))
    return out


def train(recipe: Recipe, splits: Splits, hooks: Hooks, end_step: int | None = None, device: str = "/CPU:0",
          pruned_layers: list[str] | None = None, transfer: Transfer | None = None,
          resume: checkpoint.State | None = None) -> Outcome:
    """``resume``: continue after the checkpoint's epoch (not for transfer jobs, whose phases restart)."""
    started = time.perf_counter()
    keras.utils.set_random_seed(recipe.seed)
    tf.config.experimental.enable_op_determinism()
    precision(recipe)
    scope, strategy = placement(recipe, device)
    with scope:
        stats = standardization(splits.x_train) if recipe.dataset.standardize else None
        model = builder.build_model(recipe, standardize=stats, reused=transfer.layers if transfer else None)
        splits = shaped_for_output(splits, model.output_shape)
        callbacks: list = []
        pruned_names: list[str] = []
        measure = lambda: None  # noqa: E731
        pruning_spec = recipe.pruning
        if pruning_spec and pruning_spec.during_training:
            names = pruned_layers if pruned_layers is not None else recipe.pruned_layer_names()
            model, pruned_names = pruning.apply(model, recipe, end_step, names)
            callbacks += pruning.callbacks()
            measure = _kernel_sparsity(pruning.wrapped_kernels(model))
        initial_kernels = [k.numpy() for k in _kernels(model)]
        y_train = _targets(recipe, splits.x_train, splits.y_train, stats)
        probe = None
        if recipe.training.diagnostics and strategy is None:  # mirrored variables can't be read off a replica
            probe = Probe(model, splits.x_train, y_train, recipe.training.loss)
        progress = _Progress(hooks, measure, probe)
        callbacks += [progress, *_callbacks(recipe)]
        batch = recipe.training.batch_size
        per_call = steps_per_execution(len(splits.x_train), recipe)
        train_ds = to_dataset(splits.x_train, y_train, batch, shuffle_seed=recipe.seed)
        val_ds = None
        if splits.x_val is not None:
            val_ds = to_dataset(splits.x_val, _targets(recipe, splits.x_val, splits.y_val, stats), batch, None)
        fit = dict(x=train_ds, validation_data=val_ds, callbacks=callbacks, verbose=0)
        epochs, checksums, epochs_run = recipe.training.epochs, {}, 0
        if transfer:
            reused = {layer.name for layer in transfer.layers}
            wrapped = [layer for layer in model.layers if getattr(layer, "layer", layer).name in reused]
            checksums["base"] = reuse.checksums(wrapped)
            frozen_epochs = min(recipe.transfer.freeze_epochs, epochs)
            if frozen_epochs:
                for layer in wrapped:
                    layer.trainable = False
                _compile(model, recipe, steps=per_call)  # a change of trainable takes effect only on compile
                progress.phase = "frozen"
                epochs_run = len(model.fit(epochs=frozen_epochs, **fit).epoch)
                checksums["frozen"] = reuse.checksums(wrapped)
            if epochs_run == frozen_epochs and progress.stopped is None and frozen_epochs < epochs:
                for layer in wrapped:
                    layer.trainable = getattr(layer, "layer", layer).name in transfer.unfreeze
                _compile(model, recipe, transfer.fine_tune_learning_rate, steps=per_call)
                progress.phase = "fine_tune"
                history = model.fit(epochs=epochs, initial_epoch=frozen_epochs, **fit)
                epochs_run += len(history.epoch)
                checksums["fine_tune"] = reuse.checksums(wrapped)
        else:
            _compile(model, recipe, steps=per_call)
            progress.checkpointable = True
            start = 0
            if resume is not None:
                checkpoint.restore(model, resume)
                start = resume.epoch
            epochs_run = start + len(model.fit(epochs=epochs, initial_epoch=start, **fit).epoch)
        final = pruning.strip(model) if pruned_names else model
        before = None
        if pruning_spec and not pruning_spec.during_training:
            before = _evaluate(final, recipe, splits, stats)
            pruned_names = pruned_layers if pruned_layers is not None else recipe.pruned_layer_names()
            pruning.threshold_after_training(final, pruned_names, pruning_spec.post_training_threshold)
        test = _evaluate(final, recipe, splits, stats)
    return Outcome(
        model=final, test=test, epochs_run=epochs_run, stopped=progress.stopped, pruned_layers=pruned_names,
        seconds=time.perf_counter() - started, test_before_threshold=before,
        transfer={"checksums": checksums} if transfer else None, initial_kernels=initial_kernels,
    )


def _kernels(model) -> list:
    return [k for k in (getattr(getattr(layer, "layer", layer), "kernel", None) for layer in model.layers)
            if k is not None]


