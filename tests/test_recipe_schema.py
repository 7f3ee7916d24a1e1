"""The recipe schema and the arithmetic the API does without TensorFlow."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from core.datasets import BUILTIN
from core.layers import nul_errors
from core.recipe import ConstantSparsity, PolynomialDecay, Recipe
from core.settings import ROOT
from core.splits import split_sizes
from core.steps import resolve_end_step, steps_per_epoch
from tests.support import small_recipe

CONTRACT = json.loads((ROOT / "examples" / "recipes" / "contract-digits.json").read_text())


def test_the_contract_recipe_validates_and_counts_its_parameters():
    recipe = Recipe.model_validate(CONTRACT)
    # 64·300 (no bias) + BN 4·300 + 300·10 + 10
    assert recipe.model.param_count() == 19200 + 1200 + 3010
    assert recipe.model.output_shape == (10,)
    assert [layer.name for layer in recipe.model.layers] == ["dense_0", "batch_normalization_1", "activation_2", "dense_3"]
    assert recipe.pruned_layer_names() == ["dense_0", "dense_3"]


def test_parameter_count_matches_keras():
    from worker.builder import build_model

    for data in (
        CONTRACT,
        small_recipe(),
        small_recipe(
            **{
                "model.layers": [
                    {"type": "dense", "units": 8, "use_bias": False},
                    {"type": "batch_normalization", "center": False},
                    {"type": "dropout", "rate": 0.2},
                    {"type": "dense", "units": 3, "activation": "softmax"},
                ]
            }
        ),
    ):
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


@pytest.mark.parametrize(
    "schedule, total, words",
    [
        ({"frequency": 100}, 40, "first mask update"),
        ({"end_step": 50, "frequency": 10}, 40, "past the run"),
        ({"end_step": 33, "frequency": 10}, 40, "never a mask update"),
        ({"begin_step": 30, "end_step": 30, "frequency": 5}, 40, "must be after begin_step"),
    ],
)
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
        Recipe.model_validate(
            small_recipe(**{"training.optimizer": {"type": "sgd", "clipnorm": 1.0, "global_clipnorm": 1.0}})
        )


def test_duplicate_layer_names_are_refused():
    with pytest.raises(Exception, match="used twice"):
        Recipe.model_validate(
            small_recipe(
                **{"model.layers": [{"type": "dense", "units": 3, "name": "a"}, {"type": "dense", "units": 3, "name": "a"}]}
            )
        )


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"model.layers": [{"type": "dense", "units": "300"}]}, "units"),
        ({"model.layers": [{"type": "dense", "units": True}]}, "units"),
        ({"model.layers": [{"type": "dense", "units": 3.0}]}, "units"),
        ({"model.layers": [{"type": "dense", "units": 3, "use_bias": 1}]}, "use_bias"),
        ({"pruning.schedule.final_sparsity": "0.8"}, "final_sparsity"),
        ({"training.batch_size": "16"}, "batch_size"),
        ({"training.diagnostics": "false"}, "diagnostics"),
        ({"dataset.classes": [0, "1"]}, "classes"),
        ({"dataset.relabel": {"0": 1.0}}, "relabel"),
    ],
)
def test_wrong_types_are_refused_not_coerced(overrides, field):
    with pytest.raises(ValidationError, match=field):
        Recipe.model_validate(small_recipe(**overrides))


def test_an_integer_stands_where_a_float_belongs_and_arrays_where_tuples_do():
    recipe = Recipe.model_validate(
        small_recipe(
            **{
                "training.optimizer": {"type": "sgd", "learning_rate": 1, "momentum": 0},
                "regularization": {"l1_l2": [0, 1]},
                "pruning": {"sparsity_m_by_n": [2, 4], "layers": ["dense_0"]},
                "dataset.name": "digits",
                "dataset.reshape": [8, 8, 1],
                "model.input_shape": [8, 8, 1],
                "model.layers": [
                    {"type": "conv2d", "filters": 2, "kernel_size": [3, 3], "strides": [1, 1]},
                    {"type": "max_pooling2d", "pool_size": [2, 2]},
                    {"type": "flatten"},
                    {"type": "dense", "units": 10, "activation": "softmax"},
                ],
            }
        )
    )
    assert recipe.training.optimizer.learning_rate == 1.0 and isinstance(recipe.training.optimizer.learning_rate, float)
    assert recipe.regularization.l2 == 1.0 and recipe.pruning.sparsity_m_by_n == (2, 4)
    assert recipe.model.layers[0].kernel_size == (3, 3)


def test_the_worker_revalidates_what_the_api_stored():
    """The API stores ``model_dump(mode="json")`` (tuples become arrays) and the worker validates it again, strictly;
    Python-mode dumps (tuples, model instances) validate too."""
    raw = small_recipe(
        **{
            "pruning": {"sparsity_m_by_n": [2, 4]},
            "regularization": {"l1_l2": [0.1, 0]},
            "model.layers": [
                {"type": "dense", "units": 8, "activation": {"type": "leaky_relu"}},
                {"type": "dense", "units": 3, "activation": "softmax"},
            ],
        }
    )
    recipe = Recipe.model_validate(raw)
    assert Recipe.model_validate(json.loads(json.dumps(recipe.model_dump(mode="json")))) == recipe
    assert Recipe.model_validate(recipe.model_dump()) == recipe
    assert Recipe.model_validate(recipe.model_dump(mode="json")).decoder_layers() == []


@pytest.mark.parametrize(
    "where", [("name",), ("description",), ("model", "layers", 0, "name"), ("pruning", "layers"), ("dataset", "relabel")]
)
def test_nul_in_any_text_is_refused_at_its_field(where):
    values = {"pruning": {"layers": ["dense_0\x00"]}, "dataset": {"relabel": {"\x00": 0}}}
    raw = small_recipe()
    target = raw
    for part in where[:-1]:
        target = target[part]
    target[where[-1]] = values.get(where[0], {}).get(where[-1], "x\x00") if where[0] in values else "x\x00"
    with pytest.raises(ValidationError) as caught:
        Recipe.model_validate(raw)
    assert all(error["type"] == "nul_character" for error in caught.value.errors())
    assert tuple(caught.value.errors()[0]["loc"][: len(where)]) == where


def test_the_nul_check_walks_any_depth_without_recursion():
    deep = "\x00"
    for _ in range(20_000):  # twenty times Python's recursion limit
        deep = [deep]
    errors = nul_errors({"a": deep})
    assert len(errors) == 1 and len(errors[0]["loc"]) == 20_001
