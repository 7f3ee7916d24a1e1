"""Model files to upload: tiny real models saved by tf_keras as ``.keras`` and ``.h5``, and hostile ones — a
``Lambda`` whose code would leave a file behind if it ever ran, custom classes and objects, zip bombs, files that
lie about what they are. Built with TensorFlow in the test process; the service's API never imports it.
"""

from __future__ import annotations

import io
import json
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from tests.hostile_uploads import Entry, zip_archive


@dataclass(frozen=True)
class Built:
    path: Path
    params: int
    input_shape: list[int]
    output_shape: list[int]
    layers: list[tuple[str, str]]  # (name, class) as Keras lists them, a nested model's as outer/inner


def _keras():
    from worker.tf_env import keras

    return keras


def _layers(model, prefix: str = "") -> list[tuple[str, str]]:
    keras = _keras()
    out: list[tuple[str, str]] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out += _layers(layer, f"{prefix}{layer.name}/")
        else:
            out.append((f"{prefix}{layer.name}", type(layer).__name__))
    return out


def save(model, path: Path) -> Built:
    model.save(path)
    return Built(path, model.count_params(), list(model.input_shape[1:]), list(model.output_shape[1:]), _layers(model))


def mlp():
    k = _keras()
    return k.Sequential(
        [
            k.Input((20,)),
            k.layers.Dense(16, activation="relu"),
            k.layers.Dropout(0.1),
            k.layers.Dense(3, activation="softmax"),
        ]
    )


def residual_cnn():
    """Functional: a residual Add and a Concatenate branch."""
    k = _keras()
    inputs = k.Input((8, 8, 1))
    a = k.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_a")(inputs)
    b = k.layers.Conv2D(4, 3, padding="same", name="conv_b")(a)
    added = k.layers.Add(name="residual")([a, b])
    side = k.layers.Conv2D(2, 1, name="conv_side")(a)
    joined = k.layers.Concatenate(name="join")([added, side])
    pooled = k.layers.GlobalAveragePooling2D()(joined)
    outputs = k.layers.Dense(3, activation="softmax", kernel_regularizer=k.regularizers.L2(1e-4))(pooled)
    return k.Model(inputs, outputs)


def batch_norm():
    k = _keras()
    return k.Sequential(
        [
            k.Input((10,)),
            k.layers.Dense(8, use_bias=False),
            k.layers.BatchNormalization(),
            k.layers.Activation("relu"),
            k.layers.Dense(2, activation="softmax"),
        ]
    )


def separable():
    k = _keras()
    return k.Sequential(
        [
            k.Input((8, 8, 3)),
            k.layers.DepthwiseConv2D(3, name="depthwise"),
            k.layers.SeparableConv2D(4, 3, name="separable"),
            k.layers.Flatten(),
            k.layers.Dense(2, name="head"),
        ]
    )


def nested():
    k = _keras()
    inner = k.Sequential([k.Input((20,)), k.layers.Dense(8, activation="relu", name="inner_dense")], name="base")
    return k.Sequential([k.Input((20,)), inner, k.layers.Dense(2, name="head")])


def with_lambda(sentinel: Path):
    """Its Lambda's code touches ``sentinel``: the file exists only if something ran it."""
    k = _keras()
    touch = eval(f"lambda x: (__import__('pathlib').Path({str(sentinel)!r}).touch(), x)[1]")  # noqa: S307
    return k.Sequential([k.Input((4,)), k.layers.Dense(4), k.layers.Lambda(touch, name="sneaky"), k.layers.Dense(2)])


def with_custom_layer():
    k = _keras()

    @k.saving.register_keras_serializable(package="evil")
    class Doubler(k.layers.Layer):
        def call(self, x):
            return 2 * x

    return k.Sequential([k.Input((4,)), k.layers.Dense(4), Doubler(name="doubler"), k.layers.Dense(2)])


def with_custom_activation():
    k = _keras()

    @k.saving.register_keras_serializable(package="evil")
    def cube(x):
        return x * x * x

    return k.Sequential([k.Input((4,)), k.layers.Dense(4, activation=cube, name="cubed"), k.layers.Dense(2)])


def with_custom_initializer():
    k = _keras()

    @k.saving.register_keras_serializable(package="evil")
    class Sevens(k.initializers.Initializer):
        def __call__(self, shape, dtype=None):
            return 7 * k.backend.ones(shape, dtype=dtype)

    return k.Sequential([k.Input((4,)), k.layers.Dense(4, kernel_initializer=Sevens(), name="sevens"), k.layers.Dense(2)])


# --------------------------------------------------------------------------- archives rewritten by hand


def members(keras_file: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(keras_file) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def rezip(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()


def with_config(keras_file: Path, edit) -> bytes:
    """The same .keras with its config.json passed through ``edit`` (a function of the parsed config)."""
    files = members(keras_file)
    config = json.loads(files["config.json"])
    edit(config)
    files["config.json"] = json.dumps(config).encode()
    return rezip(files)


def config_bomb(keras_file: Path, unpacked: int = 64 * 1024 * 1024) -> bytes:
    """config.json deflates from ``unpacked`` bytes of spaces to a few tens of KB: declared, and true."""
    files = members(keras_file)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("metadata.json", files["metadata.json"])
        archive.writestr("model.weights.h5", files["model.weights.h5"])
        with archive.open("config.json", "w") as member:
            block = b" " * (1024 * 1024)
            for _ in range(unpacked // len(block)):
                member.write(block)
    return out.getvalue()


def lying_config(keras_file: Path) -> bytes:
    """config.json declares 1,000 bytes but inflates to 64 MiB: zipfile stops at 1,000 and fails its CRC."""
    files = members(keras_file)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = compressor.compress(b"{" * (64 * 1024 * 1024)) + compressor.flush()
    return zip_archive(
        [
            Entry(
                "metadata.json",
                files["metadata.json"],
                len(files["metadata.json"]),
                zlib.crc32(files["metadata.json"]),
                method=0,
            ),
            Entry(
                "model.weights.h5",
                files["model.weights.h5"],
                len(files["model.weights.h5"]),
                zlib.crc32(files["model.weights.h5"]),
                method=0,
            ),
            Entry("config.json", bomb, 1000, 0),
        ]
    )


def weights_bomb(keras_file: Path) -> bytes:
    """model.weights.h5 declares 8 GiB unpacked."""
    files = members(keras_file)
    meta, config = files["metadata.json"], files["config.json"]
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = compressor.compress(b"\0" * 1024) + compressor.flush()
    return zip_archive(
        [
            Entry("metadata.json", meta, len(meta), zlib.crc32(meta), method=0),
            Entry("config.json", config, len(config), zlib.crc32(config), method=0),
            Entry("model.weights.h5", data, 8 * 1024**3, 0),
        ]
    )
