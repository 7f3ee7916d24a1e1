"""Recipe → a fresh, compiled-ready Keras model. Built anew for every job: TF-MOT wraps layer objects in place."""
from __future__ import annotations

from core.recipe import (
    SGD,
    ActivationLayer,
    Adagrad,
    Adam,
    BatchNormalizationLayer,
    DenseLayer,
    DropoutLayer,
    Recipe,
    RMSprop,
)
from worker.tf_env import keras

_INITIALIZERS = {
    "glorot_uniform": "GlorotUniform", "glorot_normal": "GlorotNormal", "he_uniform": "HeUniform",
    "he_normal": "HeNormal", "lecun_uniform": "LecunUniform", "lecun_normal": "LecunNormal", "zeros": "Zeros",
}


def initializer(name: str, seed: int):
    """Seeded from the recipe so the same recipe starts from the same weights."""
    config = {} if name == "zeros" else {"seed": seed}
    return keras.initializers.get({"class_name": _INITIALIZERS[name], "config": config})


def regularizer(reg):
    if reg is None or (reg.l1 == 0 and reg.l2 == 0):
        return None
    return keras.regularizers.L1L2(l1=reg.l1, l2=reg.l2)


def build_layer(spec, recipe: Recipe, index: int):
    if isinstance(spec, DenseLayer):
        return keras.layers.Dense(
            spec.units, activation=spec.activation, use_bias=spec.use_bias, name=spec.name,
            kernel_initializer=initializer(spec.kernel_initializer, recipe.seed + index),
            kernel_regularizer=regularizer(recipe.regularization_for(spec)),
        )
    if isinstance(spec, BatchNormalizationLayer):
        return keras.layers.BatchNormalization(
            momentum=spec.momentum, epsilon=spec.epsilon, center=spec.center, scale=spec.scale, name=spec.name
        )
    if isinstance(spec, ActivationLayer):
        return keras.layers.Activation(spec.activation, name=spec.name)
    if isinstance(spec, DropoutLayer):
        return keras.layers.Dropout(spec.rate, seed=recipe.seed + index, name=spec.name)
    raise TypeError(f"no builder for layer type {spec.type!r}")


def build_model(recipe: Recipe):
    layers = [keras.layers.InputLayer(input_shape=tuple(recipe.model.input_shape), name="input")]
    layers += [build_layer(spec, recipe, i) for i, spec in enumerate(recipe.model.layers)]
    return keras.Sequential(layers, name=recipe.name.replace(" ", "_")[:60] or "model")


def build_optimizer(recipe: Recipe, learning_rate: float | None = None):
    spec = recipe.training.optimizer
    common = {"learning_rate": learning_rate or spec.learning_rate, "clipvalue": spec.clipvalue,
              "clipnorm": spec.clipnorm, "global_clipnorm": spec.global_clipnorm}
    if isinstance(spec, SGD):
        return keras.optimizers.SGD(momentum=spec.momentum, nesterov=spec.nesterov, **common)
    if isinstance(spec, Adagrad):
        return keras.optimizers.Adagrad(**common)
    if isinstance(spec, RMSprop):
        return keras.optimizers.RMSprop(rho=spec.rho, momentum=spec.momentum, **common)
    if isinstance(spec, Adam):
        cls = {"adam": keras.optimizers.Adam, "adamax": keras.optimizers.Adamax, "nadam": keras.optimizers.Nadam}
        return cls[spec.type](beta_1=spec.beta_1, beta_2=spec.beta_2, epsilon=spec.epsilon, **common)
    raise TypeError(f"no optimizer {spec.type!r}")
