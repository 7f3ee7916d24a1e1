"""The training code on its own (no Flask, no Celery): real TensorFlow and TF-MOT on small data."""

from __future__ import annotations

import numpy as np
import pytest

from core.recipe import Recipe
from tests.support import Recorder, small_recipe


@pytest.fixture(scope="module")
def iris():
    from core.uploads import Arrays
    from worker.data import _builtin

    arrays: Arrays = _builtin("iris")
    return arrays


def train(data, arrays, hooks=None):
    from core.datasets import BUILTIN
    from core.plan import plan_for
    from worker import data as data_mod
    from worker.training import train as run

    recipe = Recipe.model_validate(data)
    splits = data_mod.split(arrays, recipe.dataset, recipe.seed)
    end_step = plan_for(recipe, BUILTIN[recipe.dataset.name]).pruning_end_step
    return run(recipe, splits, hooks or Recorder(), end_step=end_step), recipe


def test_pruning_reaches_the_final_sparsity_and_is_stripped(iris):
    from worker.export import sparsity_report

    outcome, _ = train(small_recipe(**{"pruning.schedule.final_sparsity": 0.75}), iris)
    report = sparsity_report(outcome.model, outcome.pruned_layers)
    assert report["sparsity"]["overall"] == pytest.approx(0.75, abs=0.01)
    assert all("prune_low_magnitude" not in layer.name for layer in outcome.model.layers)
    assert report["params"]["nonzero"] < report["params"]["total"]


def test_only_named_layers_are_pruned_and_the_rest_reported_dense(iris):
    from worker.export import sparsity_report

    outcome, _ = train(small_recipe(**{"pruning.layers": ["dense_0"]}), iris)
    report = sparsity_report(outcome.model, outcome.pruned_layers)["sparsity"]
    by_name = {layer["name"]: layer for layer in report["layers"]}
    assert by_name["dense_0"]["sparsity"] == pytest.approx(0.5, abs=0.02)
    assert by_name["dense_1"]["sparsity"] < 0.2
    assert report["left_dense"] == ["dense_1"]


def test_sparsity_grows_epoch_by_epoch_as_the_schedule_says(iris):
    recorder = Recorder()
    train(small_recipe(**{"training.epochs": 6}), iris, recorder)
    values = [metrics["sparsity"] for metrics in recorder.epochs]
    assert values == sorted(values) and values[0] < values[-1]
    assert values[-1] == pytest.approx(0.5, abs=0.02)


def test_same_recipe_and_seed_give_the_same_history(iris):
    first, second = Recorder(), Recorder()
    train(small_recipe(), iris, first)
    train(small_recipe(), iris, second)
    strip = lambda rec: [{k: v for k, v in m.items() if k != "seconds"} for m in rec.epochs]  # noqa: E731
    assert strip(first) == strip(second)


def test_stop_request_ends_training_at_a_batch_boundary(iris):
    recorder = Recorder(stop_after=2)
    outcome, _ = train(small_recipe(**{"training.epochs": 50}), iris, recorder)
    assert outcome.stopped == "cancelled" and len(recorder.epochs) == 2


class _CountingChecks(Recorder):
    """Counts how often training asked whether to stop: once per call into the graph."""

    def __init__(self):
        super().__init__()
        self.checks = 0

    def stop_reason(self):
        self.checks += 1
        return None


def test_a_long_run_checks_for_a_stop_every_16_steps_and_trains_the_same_weights(iris, monkeypatch):
    from worker import training

    # iris: 108 training rows at batch 1 = 108 steps per epoch; 19 epochs = 2,052 steps, a "long" run
    long_run = small_recipe(**{"training.batch_size": 1, "training.epochs": 19})
    batched = _CountingChecks()
    outcome, _ = train(long_run, iris, batched)
    assert batched.checks == 19 * -(-108 // training.STEPS_PER_EXECUTION)
    monkeypatch.setattr(training, "BATCHED_FROM_STEPS", 10**9)  # one step per call, as before
    stepwise = _CountingChecks()
    again, _ = train(long_run, iris, stepwise)
    assert stepwise.checks == 19 * 108
    for a, b in zip(outcome.model.get_weights(), again.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_l1_regularisation_without_pruning_trains_and_reports_no_pruned_layer(iris):
    from worker.export import sparsity_report

    data = small_recipe(**{"regularization": {"l1": 0.01}})
    data.pop("pruning")
    outcome, _ = train(data, iris)
    report = sparsity_report(outcome.model, outcome.pruned_layers)
    assert report["sparsity"]["pruned_layers"] == []
    assert 0 <= outcome.test["accuracy"] <= 1


def test_exploding_learning_rate_fails_as_diverged(iris):
    from worker.training import Diverged

    data = small_recipe(
        **{
            "training.optimizer": {"type": "sgd", "learning_rate": 5.0},
            "model.layers": [{"type": "dense", "units": 64}, {"type": "dense", "units": 64}, {"type": "dense", "units": 1}],
            "training.loss": "mse",
            "training.metrics": [],
            "training.epochs": 20,
        }
    )
    data.pop("pruning")
    with pytest.raises(Diverged):
        train(data, iris)


def test_exported_h5_loads_with_stock_keras_and_predicts_like_the_trained_model(iris, tmp_path):
    from worker.export import strip_and_export
    from worker.tf_env import keras

    outcome, _ = train(small_recipe(), iris)
    from core.recipe import ExportSpec

    files = strip_and_export(outcome.model, ExportSpec(formats=["h5", "keras", "savedmodel", "tflite"]), tmp_path)
    x = iris.x[:10]
    expected = outcome.model.predict(x, verbose=0)
    for fmt in ("h5", "keras"):
        loaded = keras.models.load_model(files[fmt])
        np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    assert files["savedmodel"].stat().st_size > 0 and files["tflite"].read_bytes()[4:8] == b"TFL3"


def test_a_feature_constant_in_training_is_left_unscaled_not_blown_up():
    from worker.data import standardization

    x = np.zeros((20, 3), np.float32)
    x[:, 1] = np.arange(20)
    mean, var = standardization(x)
    assert var[0] == var[2] == 1.0 and var[1] == pytest.approx(np.arange(20).var())
    test_ink = (np.array([0.9, 5.0, 0.0], np.float32) - mean) / np.sqrt(var)
    assert np.abs(test_ink).max() < 10


class _HandingBack(Recorder):
    """The hooks of a worker told to stop (SIGTERM) after ``after`` epochs, during the next one."""

    def __init__(self, after: int, finish_epoch_within_s: float):
        super().__init__()
        self.after, self.finish_epoch_within_s = after, finish_epoch_within_s
        self.checkpointed: list[bool] = []

    def on_epoch(self, epoch, metrics, diagnostics=None, phase=None, state=None):
        super().on_epoch(epoch, metrics, diagnostics, phase, state)
        self.checkpointed.append(state is not None)

    def stop_reason(self):
        return "handed_back" if len(self.epochs) >= self.after else None


# the two ends of the budget, so the outcome does not depend on how fast this machine trains an epoch
@pytest.mark.parametrize("within_s, recorded", [(float("inf"), 4), (float("-inf"), 3)], ids=["finishes", "cuts"])
def test_a_hand_back_finishes_the_epoch_under_way_only_when_it_ends_soon_enough(iris, within_s, recorded):
    hooks = _HandingBack(after=3, finish_epoch_within_s=within_s)
    outcome, _ = train(small_recipe(**{"training.epochs": 50}), iris, hooks)
    assert outcome.stopped == "handed_back"
    assert len(hooks.epochs) == recorded  # the 4th finished and recorded, or cut at a batch and not recorded
    assert all(hooks.checkpointed)  # every recorded epoch could be checkpointed: the hand-back resumes after it
