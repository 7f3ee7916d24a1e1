"""Gradient health per epoch, on a fixed probe batch: the seed's first lesson made visible.

Per layer: the mean |gradient| of the loss with respect to its kernel (vanishing gradients shrink it
layer by layer towards the input), and the fraction of its outputs sitting where the activation is
flat (sigmoid/tanh near their asymptotes, ReLU at 0, ELU/SELU near their negative floor).
"""

from __future__ import annotations

import numpy as np

from core.footprint import PROBE_ROWS as PROBE_SIZE  # admission counts the probe's rows: one number
from worker.tf_env import keras, tf

_SELU_FLOOR = 1.0507009873554805 * 1.6732632423543772


def _activation_of(layer) -> str | None:
    inner = getattr(layer, "layer", layer)  # through a pruning wrapper
    kind = type(inner).__name__
    if kind in ("LeakyReLU", "PReLU", "RReLU"):
        return None
    if kind == "ELU":
        return "elu"
    fn = getattr(inner, "activation", None)
    return getattr(fn, "__name__", None) if fn is not None else None


def saturation(activation: str, out: np.ndarray) -> float | None:
    if activation == "sigmoid":
        flat = (out < 0.05) | (out > 0.95)
    elif activation == "tanh":
        flat = np.abs(out) > 0.95
    elif activation == "relu":
        flat = out <= 0
    elif activation == "elu":
        flat = out < -0.95
    elif activation == "selu":
        flat = out < -0.95 * _SELU_FLOOR
    else:
        return None
    return round(float(np.mean(flat)), 6)


def display_name(layer) -> str:
    return getattr(layer, "layer", layer).name


def as_compiled(loss):
    """The loss as ``compile`` wraps it (a ``Loss`` with fit's shape reconciliation and batch-mean reduction),
    so the probe's gradients are those of the loss fit minimises, not of the bare function."""
    from tf_keras.src.losses import LossFunctionWrapper

    fn = keras.losses.get(loss)
    return fn if isinstance(fn, keras.losses.Loss) else LossFunctionWrapper(fn, name=getattr(fn, "__name__", None))


class Probe:
    def __init__(self, model, x: np.ndarray, y: np.ndarray, loss):
        self.model = model
        self.x, self.y = tf.constant(x[:PROBE_SIZE]), tf.constant(y[:PROBE_SIZE])
        self.layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
        self.loss = as_compiled(loss)
        self.graph = None
        if not isinstance(model, keras.Sequential):  # a functional model (an uploaded base) is no chain of layers
            self.graph = keras.Model(model.inputs, [layer.get_output_at(-1) for layer in self.layers])  # its last graph

    def _forward(self) -> list:
        """Layer by layer, eagerly: layers shared with a transfer base have more than one graph node. A functional
        model's layers are read off its graph instead (the last layer listed is its output)."""
        if self.graph is not None:
            return list(self.graph(self.x, training=False))
        outs, x = [], self.x
        for layer in self.layers:
            x = layer(x, training=False)
            outs.append(x)
        return outs

    def measure(self) -> list[dict]:
        kernels = [(layer, getattr(getattr(layer, "layer", layer), "kernel", None)) for layer in self.layers]
        variables = [k for _, k in kernels if k is not None]
        with tf.GradientTape() as tape:
            outs = self._forward()
            loss = tf.reduce_mean(self.loss(self.y, outs[-1]))
        grads = dict(zip([id(v) for v in variables], tape.gradient(loss, variables)))
        report = []
        for (layer, kernel), out in zip(kernels, outs):
            entry: dict = {"name": display_name(layer)}
            if kernel is not None and grads.get(id(kernel)) is not None:
                entry["mean_abs_grad"] = float(tf.reduce_mean(tf.abs(grads[id(kernel)])))
            activation = _activation_of(layer)
            if activation and activation != "softmax":
                value = saturation(activation, out.numpy())
                if value is not None:
                    entry["activation"], entry["saturation"] = activation, value
            if len(entry) > 1:
                report.append(entry)
        return report
