"""The shrink on its own (no service): a masked model and the smaller model rebuilt from it predict the same.

Real tf_keras models with random weights and batch-normalization statistics far from their defaults, so a
removed unit that a BN would have turned into a constant (β − γ·μ/√(σ²+ε)) shows up as a difference."""

from __future__ import annotations

import numpy as np
import pytest

from core.recipe import StructuredPruning

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def keras():
    from worker.tf_env import keras

    return keras


def _scramble_batch_norms(model, rng) -> None:
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            n = int(layer.gamma.shape[0])
            layer.set_weights(
                # γ, β, moving mean, moving variance: a zero input comes out as β − γ·μ/√(σ²+ε) > 0, past a ReLU
                [rng.uniform(0.5, 2, n), rng.uniform(0.2, 1.5, n), rng.normal(-1, 0.5, n), rng.uniform(0.5, 2, n)]
            )


def _masked_and_shrunk(model, names, rng, share=0.5):
    from worker import structured

    _scramble_batch_norms(model, rng)
    masked, groups = structured.insert_masks(model, names)
    for group in groups:
        group.remove(int(group.units * share), "l1")
    return masked, groups, structured.shrink(masked, groups)


def _assert_same_predictions(masked, shrunk, x):
    difference = np.max(np.abs(masked.predict(x, verbose=0) - shrunk.predict(x, verbose=0)))
    assert difference <= TOLERANCE, difference


def _naive_difference(model, groups, x, masked):
    """What zeroing only the kernel columns and biases (no mask at the consumer) would predict: it must differ,
    or this test could not catch a shrink that forgets what comes after the pruned layer."""
    for group in groups:
        group.mask.mask.assign(np.ones(group.units, np.float32))  # the kernels were zeroed by remove()
    naive = model.predict(x, verbose=0)
    return np.max(np.abs(naive - masked))


def _stock_only(shrunk):
    from worker.structured import ChannelMask

    return not any(isinstance(layer, ChannelMask) for layer in shrunk.layers)


def test_a_dense_stack_shrinks_to_fewer_units_and_predicts_what_the_masked_model_predicts(keras, tmp_path):
    rng = np.random.default_rng(1)
    model = keras.Sequential(
        [
            keras.layers.InputLayer(input_shape=(20,)),
            keras.layers.Dense(16, activation="sigmoid", name="a"),  # sigmoid(0) = 0.5: a zeroed unit is not silent
            keras.layers.Dense(12, name="b"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Activation("relu", name="relu"),
            keras.layers.Dropout(0.3, name="drop"),
            keras.layers.Dense(5, activation="softmax", name="out"),
        ]
    )
    x = rng.normal(size=(64, 20)).astype(np.float32)
    masked, groups, shrunk = _masked_and_shrunk(model, ["a", "b"], rng)
    _assert_same_predictions(masked, shrunk, x)
    assert [shrunk.get_layer(n).units for n in ("a", "b", "out")] == [8, 6, 5]
    assert shrunk.get_layer("bn").gamma.shape == (6,)
    assert shrunk.count_params() == (20 * 8 + 8) + (8 * 6 + 6) + 4 * 6 + (6 * 5 + 5)
    assert _stock_only(shrunk)
    masked_out = masked.predict(x, verbose=0)
    assert _naive_difference(model, groups, x, masked_out) > 1e-3
    path = tmp_path / "shrunk.keras"
    shrunk.save(path)
    loaded = keras.models.load_model(path)  # no custom objects
    np.testing.assert_allclose(loaded.predict(x, verbose=0), shrunk.predict(x, verbose=0), atol=1e-6)


def test_a_conv_stack_with_batch_norm_pooling_and_flatten_predicts_the_same_after_the_shrink(keras):
    rng = np.random.default_rng(2)
    model = keras.Sequential(
        [
            keras.layers.InputLayer(input_shape=(10, 10, 3)),
            keras.layers.Conv2D(8, 3, padding="same", name="c1"),
            keras.layers.BatchNormalization(name="bn1"),
            keras.layers.Activation("relu", name="r1"),
            keras.layers.MaxPooling2D(2, name="p1"),
            keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="c2"),  # zero padding meets c1's channels
            keras.layers.BatchNormalization(name="bn2"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(7, activation="relu", name="d"),
            keras.layers.Dense(4, activation="softmax", name="out"),
        ]
    )
    x = rng.normal(size=(32, 10, 10, 3)).astype(np.float32)
    masked, groups, shrunk = _masked_and_shrunk(model, ["c1", "c2", "d"], rng)
    _assert_same_predictions(masked, shrunk, x)
    assert [shrunk.get_layer("c1").filters, shrunk.get_layer("c2").filters, shrunk.get_layer("d").units] == [4, 3, 4]
    assert shrunk.get_layer("d").kernel.shape == (5 * 5 * 3, 4)  # the flattened rows of the kept channels
    assert _naive_difference(model, groups, x, masked.predict(x, verbose=0)) > 1e-3
    assert _stock_only(shrunk)


def test_a_conv_stack_with_global_average_pooling_predicts_the_same_after_the_shrink(keras):
    rng = np.random.default_rng(3)
    model = keras.Sequential(
        [
            keras.layers.InputLayer(input_shape=(8, 8, 2)),
            keras.layers.Conv2D(6, 3, activation="elu", name="c1"),
            keras.layers.Conv2D(5, 3, padding="same", name="c2"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Activation("relu", name="r"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(3, name="out"),
        ]
    )
    x = rng.normal(size=(32, 8, 8, 2)).astype(np.float32)
    masked, groups, shrunk = _masked_and_shrunk(model, ["c1", "c2"], rng, share=0.4)
    _assert_same_predictions(masked, shrunk, x)
    assert [shrunk.get_layer("c1").filters, shrunk.get_layer("c2").filters] == [4, 3]
    assert shrunk.get_layer("out").kernel.shape == (3, 3)
    assert _naive_difference(model, groups, x, masked.predict(x, verbose=0)) > 1e-3


def test_units_are_ranked_by_the_norm_of_their_incoming_weights(keras):
    from worker import structured

    model = keras.Sequential(
        [keras.layers.InputLayer(input_shape=(3,)), keras.layers.Dense(4, name="a"), keras.layers.Dense(2, name="out")]
    )
    # column norms: L1 = 3, 1.5, 2.5, 4; L2 = 3, 1.5, 1.5·√(25/9)… the L2 ranking differs from the L1 one
    kernel = np.array([[3, 0.5, 1, 4], [0, 0.5, 1, 0], [0, 0.5, 0.5, 0]], np.float32)
    model.get_layer("a").set_weights([kernel, np.zeros(4, np.float32)])
    _, groups = structured.insert_masks(model, ["a"])
    groups[0].remove(2, "l1")
    assert groups[0].kept().tolist() == [0, 3]
    _, groups = structured.insert_masks(model, ["a"])
    groups[0].remove(1, "l2")  # L2: 3, 0.866, 1.5, 4
    assert groups[0].kept().tolist() == [0, 2, 3]


def test_the_share_of_units_follows_the_polynomial_schedule_and_only_changes_at_mask_updates():
    from worker.structured import fraction_at

    spec = StructuredPruning(final_fraction=0.5, begin_step=10, frequency=10, power=3)
    assert fraction_at(spec, 50, 5) == 0.0
    assert fraction_at(spec, 50, 10) == 0.0
    assert fraction_at(spec, 50, 29) == fraction_at(spec, 50, 20) == pytest.approx(0.5 * (1 - 0.75**3))
    assert fraction_at(spec, 50, 50) == fraction_at(spec, 50, 900) == 0.5


def test_a_model_that_joins_branches_is_refused_naming_the_layer(keras):
    from worker import structured

    inputs = keras.Input((4,))
    a = keras.layers.Dense(4, name="a")(inputs)
    b = keras.layers.Dense(4, name="b")(inputs)
    joined = keras.layers.Add(name="join")([a, b])
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(joined))
    with pytest.raises(structured.StructureError, match="'join'"):
        structured.insert_masks(model, ["a"])
