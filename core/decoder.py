"""An autoencoder's default decoder: its dense encoder mirrored, ending in a linear layer of the input's
size (and a reshape back to the input's shape). Plain recipe layers, so shapes, parameter counts and the
Keras model all come from the same list."""

from __future__ import annotations

import math

from core.layers import DenseLayer, KernelLayer, Layer, ReshapeLayer


def mirrored_decoder(encoder: list[Layer], input_shape: list[int]) -> list[Layer] | None:
    """None when the encoder has kernel layers other than dense ones: only a dense stack can be mirrored."""
    dense = [layer for layer in encoder if isinstance(layer, DenseLayer)]
    if len(dense) != len([layer for layer in encoder if isinstance(layer, KernelLayer)]):
        return None
    mirrored: list[Layer] = [
        DenseLayer(
            type="dense",
            units=layer.units,
            activation=layer.activation,
            kernel_initializer=layer.kernel_initializer,
            name=f"decoder_dense_{i}",
        )
        for i, layer in enumerate(reversed(dense[:-1]))
    ]
    mirrored.append(DenseLayer(type="dense", units=math.prod(input_shape), name="decoder_output"))
    if len(input_shape) > 1:
        mirrored.append(ReshapeLayer(type="reshape", target_shape=list(input_shape), name="decoder_reshape"))
    return mirrored
