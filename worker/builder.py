"""Recipe → a fresh Keras model. Built anew for every job: TF-MOT wraps layer objects in place."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from core import layers as L
from core.recipe import (
    SGD,
    Adagrad,
    Adam,
    AdamW,
    ExponentialDecay,
    PiecewiseConstant,
    Recipe,
    RMSprop,
)
from worker.tf_env import keras, tf

_INITIALIZERS = {
    "glorot_uniform": "GlorotUniform",
    "glorot_normal": "GlorotNormal",
    "he_uniform": "HeUniform",
    "he_normal": "HeNormal",
    "lecun_uniform": "LecunUniform",
    "lecun_normal": "LecunNormal",
    "zeros": "Zeros",
}


class RReLU(keras.layers.Layer):
    """Randomized leaky ReLU (Xu et al. 2015): slope ~ U(lower, upper) per element in training, the mean at inference.

    Keras has no such layer; the exporter swaps it for a stock ``LeakyReLU`` with the inference slope.
    """

    def __init__(self, lower: float = 1 / 8, upper: float = 1 / 3, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.lower, self.upper, self.seed = lower, upper, seed
        self._rng = (
            tf.random.Generator.from_seed(seed) if seed is not None else tf.random.Generator.from_non_deterministic_state()
        )

    def call(self, inputs, training=None):
        if training:
            slope = self._rng.uniform(tf.shape(inputs), self.lower, self.upper, dtype=inputs.dtype)
        else:
            slope = tf.constant((self.lower + self.upper) / 2, dtype=inputs.dtype)
        return tf.where(inputs >= 0, inputs, inputs * slope)

    def get_config(self):
        return {**super().get_config(), "lower": self.lower, "upper": self.upper, "seed": self.seed}

    @property
    def inference_alpha(self) -> float:
        return (self.lower + self.upper) / 2


def initializer(spec: L.Initializer, seed: int):
    """Seeded from the recipe so the same recipe starts from the same weights."""
    if isinstance(spec, L.VarianceScaling):
        return keras.initializers.VarianceScaling(
            scale=spec.scale, mode=spec.mode, distribution=spec.distribution, seed=seed
        )
    if isinstance(spec, L.RandomNormal):
        return keras.initializers.RandomNormal(mean=spec.mean, stddev=spec.stddev, seed=seed)
    config = {} if spec == "zeros" else {"seed": seed}
    return keras.initializers.get({"class_name": _INITIALIZERS[spec], "config": config})


def regularizer(reg: L.Regularization | None):
    if reg is None or (reg.l1 == 0 and reg.l2 == 0):
        return None
    return keras.regularizers.L1L2(l1=reg.l1, l2=reg.l2)


def _leaky_alpha(activation: L.Activation) -> float | None:
    """leaky_relu has no activation string in tf_keras: it becomes a LeakyReLU layer (α ``LEAKY_RELU_ALPHA``
    unless the recipe gives one)."""
    if L.activation_name(activation) != "leaky_relu":
        return None
    return activation.alpha if isinstance(activation, L.LeakyReLUActivation) else L.LEAKY_RELU_ALPHA


def build_layers(spec, recipe: Recipe, index: int) -> list:
    seed = recipe.seed + index
    if isinstance(spec, L.KernelLayer):
        alpha = _leaky_alpha(spec.activation)
        extra = [] if alpha is None else [keras.layers.LeakyReLU(alpha=alpha, name=f"{spec.name}_leaky_relu")]
        common = dict(
            activation="linear" if alpha is not None else spec.activation,
            use_bias=spec.use_bias,
            name=spec.name,
            kernel_initializer=initializer(spec.kernel_initializer, seed),
            kernel_regularizer=regularizer(recipe.regularization_for(spec)),
            kernel_constraint=(
                keras.constraints.MaxNorm(spec.kernel_constraint.max_value, axis=spec.kernel_constraint.axis)
                if spec.kernel_constraint
                else None
            ),
        )
        if isinstance(spec, L.DenseLayer):
            return [keras.layers.Dense(spec.units, **common), *extra]
        if isinstance(spec, L.Conv2DLayer):
            return [
                keras.layers.Conv2D(spec.filters, spec.kernel_size, strides=spec.strides, padding=spec.padding, **common),
                *extra,
            ]
    if isinstance(spec, L.BatchNormalizationLayer):
        return [
            keras.layers.BatchNormalization(
                axis=spec.axis,
                momentum=spec.momentum,
                epsilon=spec.epsilon,
                center=spec.center,
                scale=spec.scale,
                name=spec.name,
            )
        ]
    if isinstance(spec, L.ActivationLayer):
        alpha = _leaky_alpha(spec.activation)
        if alpha is not None:
            return [keras.layers.LeakyReLU(alpha=alpha, name=spec.name)]
        return [keras.layers.Activation(spec.activation, name=spec.name)]
    simple: dict[type[L.LayerBase], Callable[[], Any]] = {
        L.MaxPooling2DLayer: lambda: keras.layers.MaxPooling2D(
            spec.pool_size, strides=spec.strides, padding=spec.padding, name=spec.name
        ),
        L.GlobalAveragePooling2DLayer: lambda: keras.layers.GlobalAveragePooling2D(name=spec.name),
        L.FlattenLayer: lambda: keras.layers.Flatten(name=spec.name),
        L.ReshapeLayer: lambda: keras.layers.Reshape(tuple(spec.target_shape), name=spec.name),
        L.LeakyReLULayer: lambda: keras.layers.LeakyReLU(alpha=spec.alpha, name=spec.name),
        L.PReLULayer: lambda: keras.layers.PReLU(name=spec.name),
        L.RReLULayer: lambda: RReLU(spec.lower, spec.upper, seed=seed, name=spec.name),
        L.ELULayer: lambda: keras.layers.ELU(alpha=spec.alpha, name=spec.name),
        L.DropoutLayer: lambda: keras.layers.Dropout(spec.rate, seed=seed, name=spec.name),
        L.AlphaDropoutLayer: lambda: keras.layers.AlphaDropout(spec.rate, seed=seed, name=spec.name),
    }
    return [simple[type(spec)]()]


def build_model(recipe: Recipe, standardize: tuple[np.ndarray, np.ndarray] | None = None, reused: list | None = None):
    """``standardize`` = (mean, variance) of the training inputs: a Normalization layer inside the model,
    so an exported model takes raw inputs. ``reused``: layers (with weights) of a transfer base, under the head."""
    layers = [keras.layers.InputLayer(input_shape=recipe.model.start, name="input")]
    if reused is not None:
        layers += reused
    elif standardize is not None:
        mean, variance = standardize
        layers.append(keras.layers.Normalization(axis=-1, mean=mean, variance=variance, name="standardize"))
    specs = recipe.all_layers()
    for i, spec in enumerate(specs):
        layers += build_layers(spec, recipe, i)
    if keras.mixed_precision.global_policy().name == "mixed_float16":
        # TF's mixed-precision guide: the model's outputs (and so its loss) stay float32
        layers.append(keras.layers.Activation("linear", dtype="float32", name="float32_output"))
    return keras.Sequential(layers, name="".join(c if c.isalnum() else "_" for c in recipe.name)[:60] or "model")


def learning_rate(recipe: Recipe, base: float | None = None):
    lr = base or recipe.training.optimizer.learning_rate
    schedule = recipe.training.learning_rate_schedule
    if isinstance(schedule, ExponentialDecay):
        return keras.optimizers.schedules.ExponentialDecay(
            lr, schedule.decay_steps, schedule.decay_rate, staircase=schedule.staircase
        )
    if isinstance(schedule, PiecewiseConstant):
        return keras.optimizers.schedules.PiecewiseConstantDecay(schedule.boundaries, schedule.values)
    return lr


def build_optimizer(recipe: Recipe, base_learning_rate: float | None = None):
    spec = recipe.training.optimizer
    common = {
        "learning_rate": learning_rate(recipe, base_learning_rate),
        "clipvalue": spec.clipvalue,
        "clipnorm": spec.clipnorm,
        "global_clipnorm": spec.global_clipnorm,
    }
    if isinstance(spec, SGD):
        return keras.optimizers.SGD(momentum=spec.momentum, nesterov=spec.nesterov, **common)
    if isinstance(spec, Adagrad):
        return keras.optimizers.Adagrad(**common)
    if isinstance(spec, RMSprop):
        return keras.optimizers.RMSprop(rho=spec.rho, momentum=spec.momentum, **common)
    if isinstance(spec, AdamW):
        return keras.optimizers.AdamW(
            weight_decay=spec.weight_decay,
            beta_1=spec.beta_1,
            beta_2=spec.beta_2,
            epsilon=spec.epsilon,
            amsgrad=spec.amsgrad,
            **common,
        )
    if isinstance(spec, Adam):
        if spec.type == "adam":
            return keras.optimizers.Adam(
                beta_1=spec.beta_1, beta_2=spec.beta_2, epsilon=spec.epsilon, amsgrad=spec.amsgrad, **common
            )
        cls = {"adamax": keras.optimizers.Adamax, "nadam": keras.optimizers.Nadam}[spec.type]
        return cls(beta_1=spec.beta_1, beta_2=spec.beta_2, epsilon=spec.epsilon, **common)
    raise TypeError(f"no optimizer {spec.type!r}")


def current_learning_rate(optimizer) -> float:
    lr = optimizer.learning_rate
    if callable(lr) and not hasattr(lr, "numpy"):
        lr = lr(optimizer.iterations)
    return float(keras.backend.get_value(lr))
