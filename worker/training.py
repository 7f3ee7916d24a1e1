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
from typing import Any, Protocol

import numpy as np

from core.errors import Diverged
from core.plan import TransferChoice
from core.recipe import Recipe, ReduceOnPlateau
from worker import builder, checkpoint, pruning, reuse, structured
from worker.data import Splits, shaped_for_output, standardization, to_dataset
from worker.diagnostics import Probe
from worker.shutdown import HANDED_BACK
from worker.tf_env import keras, tf

log = logging.getLogger("trainer.job")


class Hooks(Protocol):
    def on_epoch(
        self, epoch: int, metrics: dict, diagnostics: list[dict] | None, phase: str, state: Callable[[], bytes] | None = None
    ) -> None: ...

    def stop_reason(self) -> str | None: ...


class Silent:
    """Hooks that watch nothing and never stop: for benchmarks and tests of the training code alone."""

    def on_epoch(self, *args, **kwargs) -> None:
        pass

    def stop_reason(self) -> str | None:
        return None


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
    baseline: dict | None = None  # an uploaded base's test metrics before training
    structured: structured.Report | None = None


@dataclass
class StructuredPhase:
    """What the plan fixed for structured pruning: the layers, its resolved end step and its epochs."""

    layers: list[str]
    end_step: int
    epochs: int


class _Progress(keras.callbacks.Callback):
    """Reports each epoch, stops at a batch boundary when asked (within ``STEPS_PER_EXECUTION`` batches in a
    long run), and fails fast on a NaN/inf loss (seen at the same granularity).

    A hand-back (the worker is stopping) lets the epoch under way finish when the last epoch's time says it
    will within the hooks' ``finish_epoch_within_s``: that epoch is then recorded and checkpointed, not lost."""

    def __init__(self, hooks: Hooks, measure_sparsity: Callable[[], float | None], probe: Probe | None):
        super().__init__()
        self._supports_tf_logs = True  # batch logs stay tensors: only the loss is read
        self.hooks, self.measure_sparsity, self.probe = hooks, measure_sparsity, probe
        self.stopped: str | None = None
        self.phase = "train"
        self.checkpointable = False
        self._epoch_started, self._epoch = 0.0, 0
        self._last_epoch_s: float | None = None
        self._stop_after_epoch: str | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_started, self._epoch = time.perf_counter(), epoch + 1

    def _finishes_soon(self) -> bool:
        if self._last_epoch_s is None:
            return False
        remaining = self._last_epoch_s - (time.perf_counter() - self._epoch_started)
        return remaining <= getattr(self.hooks, "finish_epoch_within_s", 0.0)

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            self.model.stop_training = True
            raise Diverged(self._epoch, batch + 1, loss)
        reason = self.hooks.stop_reason()
        if reason == HANDED_BACK and (self._stop_after_epoch or self._finishes_soon()):
            self._stop_after_epoch = reason
        elif reason:
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
        self._last_epoch_s = metrics["seconds"]
        if self._stop_after_epoch and epoch + 1 < self.params.get("epochs", 0):  # the last epoch: just finish
            self.stopped = self._stop_after_epoch
            self.model.stop_training = True


def _kernel_sparsity(kernels) -> Callable[[], float | None]:
    def measure():
        total = sum(int(np.prod(k.shape)) for k in kernels)
        zeros = sum(int(np.sum(k.numpy() == 0)) for k in kernels)
        return round(zeros / total, 6) if total else None

    return measure


def _evaluate(model, recipe: Recipe, splits: Splits, stats=None) -> dict:
    model.compile(optimizer="sgd", loss=recipe.training.loss, metrics=list(recipe.training.metrics))
    y = _targets(recipe, splits.x_test, splits.y_test, stats)
    test = model.evaluate(to_dataset(splits.x_test, y, recipe.training.batch_size, None), verbose=0, return_dict=True)
    return {k: float(v) for k, v in test.items()}


@dataclass
class Transfer:
    """The layers ``worker.reuse`` loaded for a transfer job, and the plan's choice of how to thaw them.
    ``base``: an uploaded model, loaded whole (its reused ``layers`` are among its own)."""

    layers: list
    choice: TransferChoice
    base: Any = None

    @property
    def whole(self) -> bool:
        return bool(self.choice.whole)


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
    model.compile(
        optimizer=builder.build_optimizer(recipe, learning_rate),
        loss=recipe.training.loss,
        metrics=list(recipe.training.metrics),
        jit_compile=recipe.training.jit_compile,
        steps_per_execution=steps,
    )


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
        out.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor=schedule.monitor, factor=schedule.factor, patience=schedule.patience, min_lr=schedule.min_lr
            )
        )
    if recipe.training.early_stopping:
        es = recipe.training.early_stopping
        out.append(
            keras.callbacks.EarlyStopping(
                monitor=es.monitor, patience=es.patience, restore_best_weights=es.restore_best_weights
            )
        )
    return out


def train(
    recipe: Recipe,
    splits: Splits,
    hooks: Hooks,
    end_step: int | None = None,
    device: str = "/CPU:0",
    pruned_layers: list[str] | None = None,
    transfer: Transfer | None = None,
    resume: checkpoint.State | None = None,
    structured_phase: StructuredPhase | None = None,
) -> Outcome:
    """``resume``: continue after the checkpoint's epoch (not for transfer jobs with a head, whose phases restart,
    nor structured pruning, whose model changes at the shrink; a job on a whole uploaded model resumes like any).
    ``structured_phase``: for ``pruning.structured``."""
    started = time.perf_counter()
    keras.utils.set_random_seed(recipe.seed)
    tf.config.experimental.enable_op_determinism()
    precision(recipe)
    scope, strategy = placement(recipe, device)
    with scope:
        stats = standardization(splits.x_train) if recipe.dataset.standardize else None
        baseline = None
        if transfer is not None and transfer.base is not None:
            model = reuse.on_base(transfer.base, recipe, transfer.whole)
            if tuple(transfer.base.output_shape) == tuple(model.output_shape):  # else: another task's output layer
                baseline = _baseline(transfer.base, recipe, splits)
        else:
            model = builder.build_model(recipe, standardize=stats, reused=transfer.layers if transfer else None)
        splits = shaped_for_output(splits, model.output_shape)
        if structured_phase is not None:
            return _train_structured(
                model, recipe, splits, hooks, stats, strategy, structured_phase, end_step, pruned_layers, started
            )
        model, pruned_names, callbacks, measure = _prune_during_training(model, recipe, end_step, pruned_layers)
        initial_kernels = [k.numpy() for k in _kernels(model)]
        run = _fitting(model, recipe, splits, stats, _Progress(hooks, measure, None), callbacks, strategy)
        checksums = None
        if transfer and transfer.whole:
            checksums = {"base": reuse.checksums(_reused_in(model, transfer))}
            epochs_run = _fit_plain(run, recipe, resume)
            checksums["fine_tune"] = reuse.checksums(_reused_in(model, transfer))
        elif transfer:
            epochs_run, checksums = _fit_transfer(run, recipe, transfer)
        else:
            epochs_run = _fit_plain(run, recipe, resume)
        final = pruning.strip(model) if pruned_names else model
        before = None
        threshold = recipe.pruning.post_training_threshold if recipe.pruning else None
        if threshold is not None:  # the naive baseline: pruning after training, not during it
            before = _evaluate(final, recipe, splits, stats)
            pruned_names = pruned_layers if pruned_layers is not None else recipe.pruned_layer_names()
            pruning.threshold_after_training(final, pruned_names, threshold)
        test = _evaluate(final, recipe, splits, stats)
    return Outcome(
        model=final,
        test=test,
        epochs_run=epochs_run,
        stopped=run.progress.stopped,
        pruned_layers=pruned_names,
        seconds=time.perf_counter() - started,
        test_before_threshold=before,
        transfer={"checksums": checksums} if transfer else None,
        initial_kernels=initial_kernels,
        baseline=baseline,
    )


def _baseline(base, recipe: Recipe, splits: Splits) -> dict:
    """The uploaded model as it came, on the test split the job will report: evaluated before any training, so
    the cost of sparsity is ``result.test - result.baseline.test``. Its weights are not touched (evaluate only)."""
    return _evaluate(base, recipe, shaped_for_output(splits, base.output_shape))


def _reused_in(model, transfer: Transfer) -> list:
    names = set(transfer.choice.reused_layers)
    return [layer for layer in model.layers if getattr(layer, "layer", layer).name in names]


def _prune_during_training(model, recipe: Recipe, end_step: int | None, pruned_layers: list[str] | None):
    """(model, pruned layer names, callbacks, sparsity measure): the model wrapped for gradual pruning, or as is."""
    spec = recipe.pruning
    if not (spec and spec.during_training):
        return model, [], [], lambda: None
    names = pruned_layers if pruned_layers is not None else recipe.pruned_layer_names()
    model, pruned = pruning.apply(model, recipe, end_step, names)
    return model, pruned, pruning.callbacks(), _kernel_sparsity(pruning.wrapped_kernels(model))


def _train_structured(
    model,
    recipe: Recipe,
    splits: Splits,
    hooks: Hooks,
    stats,
    strategy,
    phase: StructuredPhase,
    end_step: int | None,
    pruned_layers: list[str] | None,
    started: float,
) -> Outcome:
    """Phase "structured": masks grow along the schedule while the model trains; then the shrink; then, with
    ``pruning.schedule`` (or m:n) too, phase "unstructured": TF-MOT prunes the shrunk model for the epochs left."""
    spec = recipe.pruning.structured if recipe.pruning else None
    if spec is None:
        raise ValueError("_train_structured is for a recipe with pruning.structured")
    masked, groups = structured.insert_masks(model, phase.layers)
    initial_kernels = [k.numpy() for k in _kernels(masked)]
    schedule = structured.MaskSchedule(groups, spec, phase.end_step)
    progress = _Progress(hooks, lambda: None, None)
    progress.phase = "structured"
    run = _fitting(masked, recipe, splits, stats, progress, [schedule], strategy)
    _compile(masked, recipe, steps=run.steps)
    epochs_run = len(masked.fit(epochs=phase.epochs, **run.fit).epoch)
    schedule.finish()
    shrunk = structured.shrink(masked, groups)
    report = structured.report(masked, shrunk, groups, splits.x_train[:256])
    log.info(
        "shrink: %s; %d → %d parameters; max |masked − shrunk| on %d training rows = %.2g",
        ", ".join(f"{name} {units} → {kept}" for name, (units, kept) in report.units.items()),
        report.params_before,
        report.params_after,
        min(256, len(splits.x_train)),
        report.max_difference,
    )
    final, pruned_names = shrunk, []
    if recipe.pruning and recipe.pruning.unstructured and progress.stopped is None and epochs_run == phase.epochs:
        names = pruned_layers if pruned_layers is not None else recipe.pruned_layer_names()
        wrapped, pruned_names = pruning.apply(shrunk, recipe, end_step, names)
        progress.measure_sparsity = _kernel_sparsity(pruning.wrapped_kernels(wrapped))
        progress.phase = "unstructured"
        run = _fitting(wrapped, recipe, splits, stats, progress, pruning.callbacks(), strategy)
        _compile(wrapped, recipe, steps=run.steps)
        epochs_run += len(wrapped.fit(epochs=recipe.training.epochs, initial_epoch=phase.epochs, **run.fit).epoch)
        final = pruning.strip(wrapped)
    return Outcome(
        model=final,
        test=_evaluate(final, recipe, splits, stats),
        epochs_run=epochs_run,
        stopped=progress.stopped,
        pruned_layers=pruned_names,
        seconds=time.perf_counter() - started,
        initial_kernels=initial_kernels,
        structured=report,
    )


@dataclass
class _Fitting:
    """What both fit paths share: the model, the arguments of every ``fit`` call and the progress callback."""

    model: Any  # a Keras model (TensorFlow is untyped here)
    fit: dict[str, Any]
    progress: _Progress
    steps: int = 1  # training steps per graph call (``steps_per_execution``)


def _fitting(model, recipe: Recipe, splits: Splits, stats, progress: _Progress, callbacks: list, strategy) -> _Fitting:
    y_train = _targets(recipe, splits.x_train, splits.y_train, stats)
    if recipe.training.diagnostics and strategy is None:  # mirrored variables can't be read off a replica
        progress.probe = Probe(model, splits.x_train, y_train, recipe.training.loss)
    batch = recipe.training.batch_size
    train_ds = to_dataset(splits.x_train, y_train, batch, shuffle_seed=recipe.seed)
    val_ds = None
    if splits.x_val is not None:
        val_ds = to_dataset(splits.x_val, _targets(recipe, splits.x_val, splits.y_val, stats), batch, None)
    fit = dict(x=train_ds, validation_data=val_ds, callbacks=[*callbacks, progress, *_callbacks(recipe)], verbose=0)
    return _Fitting(model, fit, progress, steps_per_execution(len(splits.x_train), recipe))


def _fit_plain(run: _Fitting, recipe: Recipe, resume: checkpoint.State | None) -> int:
    """One fit over all epochs, checkpointed, resumed after the checkpoint's epoch; the epochs run."""
    _compile(run.model, recipe, steps=run.steps)
    run.progress.checkpointable = True
    start = 0
    if resume is not None:
        checkpoint.restore(run.model, resume)
        start = resume.epoch
    return start + len(run.model.fit(epochs=recipe.training.epochs, initial_epoch=start, **run.fit).epoch)


def _fit_transfer(run: _Fitting, recipe: Recipe, transfer: Transfer) -> tuple[int, dict[str, dict[str, str]]]:
    """Phase 1 trains the head with the reused layers frozen; phase 2 thaws the chosen ones at the fine-tune
    rate. The epochs run, and the reused layers' checksums after each phase."""
    model, progress, epochs = run.model, run.progress, recipe.training.epochs
    if recipe.transfer is None:
        raise ValueError("_fit_transfer is for a recipe with a transfer")
    reused = {layer.name for layer in transfer.layers}
    wrapped = [layer for layer in model.layers if getattr(layer, "layer", layer).name in reused]
    checksums = {"base": reuse.checksums(wrapped)}
    frozen_epochs, epochs_run = min(recipe.transfer.freeze_epochs, epochs), 0
    if frozen_epochs:
        for layer in wrapped:
            layer.trainable = False
        _compile(model, recipe, steps=run.steps)  # a change of trainable takes effect only on compile
        progress.phase = "frozen"
        epochs_run = len(model.fit(epochs=frozen_epochs, **run.fit).epoch)
        checksums["frozen"] = reuse.checksums(wrapped)
    if epochs_run == frozen_epochs and progress.stopped is None and frozen_epochs < epochs:
        for layer in wrapped:
            layer.trainable = getattr(layer, "layer", layer).name in transfer.choice.unfreeze_layers
        _compile(model, recipe, transfer.choice.fine_tune_learning_rate, steps=run.steps)
        progress.phase = "fine_tune"
        epochs_run += len(model.fit(epochs=epochs, initial_epoch=frozen_epochs, **run.fit).epoch)
        checksums["fine_tune"] = reuse.checksums(wrapped)
    return epochs_run, checksums


def _kernels(model) -> list:
    return [k for k in (getattr(getattr(layer, "layer", layer), "kernel", None) for layer in model.layers) if k is not None]
