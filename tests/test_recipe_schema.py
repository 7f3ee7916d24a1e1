"""The recipe schema and the arithmetic the API does without TensorFlow."""
from __future__ import annotations

import json

import pytest

from core.datasets import BUILTIN
from core.recipe import (
    ConstantSparsity,
    PolynomialDecay,
    Recipe,
    resolve_end_step,
    split_sizes,
    steps_per_epoch,
)
from core.settings import ROOT
from tests.support import small_recipe

CONTRACT = json.loads((ROOT / "examples" / "recipes" / "contract-digits.json").read_text())


def test_the_contract_recipe_validates_and_counts_its_parameters():
    recipe = Recipe.model_validate(CONTRACT)
    # 64·300 (no bias) + BN 4·300 + 300·10 + 10
    assert recipe.model.param_count() == 19200 + 1200 + 3010
    assert recipe.model.output_shape == (10,)
    assert [layer.name for layer in recipe.model.layers] == ["dense_0", "batch_normalization_1", "activation_2",
                                                             "dense_3"]
    assert recipe.pruned_layer_names() == ["dense_0", "dense_3"]


def test_parameter_count_matches_keras():
    from worker.builder import build_model

    for data in (CONTRACT, small_recipe(), small_recipe(**{"model.layers": [
        {"type": "dense", "units": 8, "use_bias": False}, {"type": "batch_normalization", "center": False},
        {"type": "dropout", "rate": 0.2}, {"type": "dense", "units": 3, "activation": "softmax"}]})):
        recipe = Recipe.model_validate(data)
        assert build_model(recipe).count_params() == recipe.model.param_count()


def test_builtin_dataset_figures_match_scikit_learn():
    from sklearn import datasets

    for name, info in BUILTIN.items():
        if info.package:  # fashion_mnist: checked against its IDX files in test_fashion_mnist.py
            continue
        bunch = getattr(datasets, f"load_{name}")()
        assert bunch.data.shape == (info.n_samples, *info.feature_shape)
        assert len(set(bunch.target)) == info.n_classes


def test_split_sizes_add_up():
    for n in (2, 10, 150, 1797):
        train, val, test = split_sizes(n, 0.2, 0.1)
        assert train + val + test == n and test >= 1
    assert split_sizes(150, 0.2, 0.1) == (108, 12, 30)
    assert steps_per_epoch(108, 16) == 7


def test_auto_end_step_is_the_last_mask_update_of_the_run():
    schedule = PolynomialDecay(type="polynomial_decay", final_sparsity=0.8, frequency=20)
    assert resolve_end_step(schedule, 1230) == 1220  # 41 steps × 30 epochs; 1230 is not a multiple of 20
    assert resolve_end_step(schedule, 1240) == 1240
    assert resolve_end_step(ConstantSparsity(type="constant_sparsity", target_sparsity=0.5, frequency=10), 35) == 30


@pytest.mark.parametrize("schedule, total, words", [
    ({"frequency": 100}, 40, "first mask update"),
    ({"end_step": 50, "frequency": 10}, 40, "past the run"),
    ({"end_step": 33, "frequency": 10}, 40, "never a mask update"),
    ({"begin_step": 30, "end_step": 30, "frequency": 5}, 40, "must be after begin_step"),
])
def test_schedules_that_cannot_reach_their_target_are_refused(schedule, total, words):
    spec = PolynomialDecay(type="polynomial_decay", final_sparsity=0.5, **schedule)
    with pytest.raises(ValueError, match=words):
        resolve_end_step(spec, total)


def test_unknown_fields_are_refused_everywhere():
    data = small_recipe()
    data["model"]["layers"][0]["unit"] = 3
    with pytest.raises(Exception, match="unit"):
        Recipe.model_validate(data)


def test_clipnorm_and_global_clipnorm_are_exclusive():
    with pytest.raises(Exception, match="clipnorm"):
        Recipe.model_validate(small_recipe(**{"training.optimizer": {
            "type": "sgd", "clipnorm": 1.0, "global_clipnorm": 1.0}}))


def test_duplicate_layer_names_are_refused():
    with pytest.raises(Exception, match="used twice"):
        Recipe.model_validate(small_recipe(**{"model.layers": [
            {"type": "dense", "units": 3, "name": "a"}, {"type": "dense", "units": 3, "name": "a"}]}))
