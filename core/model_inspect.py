"""What an uploaded Keras model is allowed to be, checked on its JSON config before anything deserializes it.

Loading a Keras model deserializes its config: a ``Lambda`` layer carries marshalled Python bytecode (which the
legacy ``.h5`` loader runs: it has no safe mode), and a custom class or object names code to import. So the
config is walked here first, as plain JSON, by the API (``.keras``: its ``config.json``, read from the zip with
every size checked before it is read) and by the worker (``.h5``: its ``model_config`` attribute, read with
h5py), and only a model made of stock layers in ``ALLOWED_LAYERS``, with stock activations and stock
initializers, regularizers and constraints, is ever loaded. Pure Python: no TensorFlow, no h5py.

``ModelInspection`` is what the worker measured once it loaded the model (the contract with the pruning jobs).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from typing import IO, Any

from pydantic import BaseModel, Field

from core.errors import ModelError, ModelRefused, ModelTooLarge

#: Stock Keras layers without code of their own to run. TF-MOT prunes the Dense, Conv and Embedding ones (the
#: worker asks its registry per layer); the rest stay dense. Not allowed: ``Lambda`` (arbitrary code), the
#: ``TFOpLambda`` layers a functional model gets for raw ``tf.*`` calls, recurrent and attention layers, text and
#: image preprocessing layers with vocabularies or assets, and anything custom.
ALLOWED_LAYERS = frozenset(
    {
        "InputLayer",
        "Dense",
        "Conv1D",
        "Conv2D",
        "Conv3D",
        "DepthwiseConv2D",
        "SeparableConv2D",
        "Conv2DTranspose",
        "MaxPooling1D",
        "MaxPooling2D",
        "AveragePooling1D",
        "AveragePooling2D",
        "GlobalAveragePooling1D",
        "GlobalAveragePooling2D",
        "GlobalMaxPooling1D",
        "GlobalMaxPooling2D",
        "Flatten",
        "Reshape",
        "Permute",
        "Dropout",
        "SpatialDropout1D",
        "SpatialDropout2D",
        "GaussianNoise",
        "GaussianDropout",
        "AlphaDropout",
        "BatchNormalization",
        "LayerNormalization",
        "Activation",
        "ReLU",
        "LeakyReLU",
        "PReLU",
        "ELU",
        "Softmax",
        "Add",
        "Subtract",
        "Multiply",
        "Average",
        "Maximum",
        "Minimum",
        "Concatenate",
        "ZeroPadding1D",
        "ZeroPadding2D",
        "Cropping1D",
        "Cropping2D",
        "UpSampling1D",
        "UpSampling2D",
        "Embedding",
        "Rescaling",
        "Normalization",
    }
)
#: A model inside a model (a pretrained base in a Sequential): walked as its own config, to this depth.
CONTAINERS = frozenset({"Sequential", "Functional", "Model"})
MAX_NESTED_MODELS = 3
#: Activation names Keras ships (``keras.activations``); a string naming anything else would be a custom one.
ACTIVATIONS = frozenset(
    {
        "linear",
        "relu",
        "relu6",
        "leaky_relu",
        "elu",
        "selu",
        "gelu",
        "sigmoid",
        "hard_sigmoid",
        "softmax",
        "log_softmax",
        "softplus",
        "softsign",
        "swish",
        "silu",
        "hard_silu",
        "hard_swish",
        "mish",
        "tanh",
        "exponential",
    }
)
ACTIVATION_KEYS = frozenset({"activation", "recurrent_activation"})
#: Objects a stock layer's config holds as ``{"class_name": …, "config": …}``: initializers, regularizers,
#: constraints, dtype policies, and the markers Keras 3 writes for tuples and a functional model's tensors.
ALLOWED_OBJECTS = frozenset(
    {
        "Zeros",
        "Ones",
        "Constant",
        "RandomNormal",
        "RandomUniform",
        "TruncatedNormal",
        "VarianceScaling",
        "GlorotNormal",
        "GlorotUniform",
        "HeNormal",
        "HeUniform",
        "LecunNormal",
        "LecunUniform",
        "Orthogonal",
        "Identity",
        "L1",
        "L2",
        "L1L2",
        "OrthogonalRegularizer",
        "MaxNorm",
        "MinMaxNorm",
        "NonNeg",
        "UnitNorm",
        "RadialConstraint",
        "Policy",
        "DTypePolicy",
        "FloatDTypePolicy",
        "__tuple__",
        "__numpy__",
        "__keras_tensor__",
    }
)
#: Keys that hold what a model is made of; ``compile_config`` (optimizer, loss, metrics) is not among them:
#: the worker loads with ``compile=False``, so it is never deserialized.
SKIPPED_KEYS = frozenset({"compile_config"})
#: Keys whose presence means code travels in the config (a lambda's bytecode, a function's source).
CODE_KEYS = frozenset({"function", "function_type", "output_shape_type", "code"})

#: A config.json of a large stock model is a few hundred KB; past these it is refused before it is read.
MAX_CONFIG_BYTES = 8 * 1024 * 1024
MAX_METADATA_BYTES = 64 * 1024
MAX_LAYERS = 10_000
#: Nesting of the JSON itself; a real model's config is under 20 deep.
MAX_JSON_DEPTH = 100
KERAS_MEMBERS = frozenset({"config.json", "metadata.json", "model.weights.h5"})
#: The first bytes of every HDF5 file (at offset 0, or after a user block of 512, 1024, 2048, … bytes).
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class InspectedLayer(BaseModel):
    """One layer as loaded; a nested model's layers are listed in its place, named ``outer/inner``."""

    name: str
    class_name: str
    params: int = Field(description="Its weights' count (trainable and not), as Keras counts them.")
    prunable: bool = Field(description="TF-MOT's prune registry has weights to prune in it; the rest stay dense.")
    output_shape: list[int | None] = Field(description="Without the batch axis; null for a size known only at run time.")


class ModelInspection(BaseModel):
    """What the worker measured on the loaded model: one input, one output, shapes without the batch axis."""

    input_shape: list[int]
    output_shape: list[int]
    layers: list[InspectedLayer]
    params: int = Field(description="model.count_params(): the layers' params add up to it.")
    functional: bool = Field(description="A functional model (a Sequential's is false).")


# --------------------------------------------------------------------------- the config walk


def _keras_module(module: object) -> bool:
    return module is None or (
        isinstance(module, str) and (module in ("keras", "tf_keras") or module.startswith(("keras.", "tf_keras.")))
    )


def _stock_name(entry: dict[str, Any]) -> bool:
    """Stock objects are registered under their class name (or not at all); a custom one as ``package>Name``."""
    registered = entry.get("registered_name")
    return registered is None or registered == entry.get("class_name")


class _Walk:
    """One config's walk: counts layers, keeps the path for ``loc``, and refuses on the first thing not allowed."""

    def __init__(self) -> None:
        self.layers: list[tuple[str, str]] = []

    def model(self, entry: object, depth: int, path: list[str | int], prefix: str = "") -> None:
        if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str):
            raise ModelError(f"{'.'.join(map(str, path)) or 'the config'} is not a Keras model's config")
        class_name = entry["class_name"]
        config = entry.get("config")
        name = str(config.get("name", "")) if isinstance(config, dict) else ""
        if class_name not in CONTAINERS:
            raise ModelRefused(name or "(model)", class_name, "is not a Sequential or functional model", path)
        if not _keras_module(entry.get("module")) or not _stock_name(entry):
            raise ModelRefused(
                name or "(model)", class_name, "is a custom model class (subclassed models run their own code)", path
            )
        if depth > MAX_NESTED_MODELS:
            raise ModelRefused(name, class_name, f"models nested more than {MAX_NESTED_MODELS} deep are not loaded", path)
        layers = config if isinstance(config, list) else config.get("layers") if isinstance(config, dict) else None
        if not isinstance(layers, list):
            raise ModelError(f"{'.'.join(map(str, [*path, 'config']))}: a model's config lists its layers")
        where: list[str | int] = [*path, "config"] if isinstance(config, list) else [*path, "config", "layers"]
        for index, layer in enumerate(layers):
            self.layer(layer, depth, [*where, index], prefix)
        if isinstance(config, dict):
            self.values({k: v for k, v in config.items() if k != "layers"}, name, class_name, [*path, "config"], 0)
        self.values({k: v for k, v in entry.items() if k not in ("config", "class_name")}, name, class_name, path, 0)

    def layer(self, entry: object, depth: int, path: list[str | int], prefix: str) -> None:
        if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str):
            raise ModelError(f"{'.'.join(map(str, path))}: a layer is an object with a class_name")
        class_name: str = entry["class_name"]
        config = entry.get("config")
        raw_name = entry.get("name") or (config.get("name") if isinstance(config, dict) else None) or f"#{path[-1]}"
        name = f"{prefix}{raw_name}"
        if class_name in CONTAINERS:
            self.model(entry, depth + 1, path, prefix=f"{name}/")
            return
        if class_name == "Lambda":
            raise ModelRefused(name, class_name, "Lambda layers carry Python code, which this service never runs", path)
        if not _keras_module(entry.get("module")) or not _stock_name(entry):
            raise ModelRefused(
                name,
                class_name,
                f"is a custom class (module {str(entry.get('module'))[:80]!r}, registered as "
                f"{str(entry.get('registered_name'))[:80]!r}); only stock Keras layers are loaded",
                path,
            )
        if class_name not in ALLOWED_LAYERS:
            raise ModelRefused(
                name, class_name, "is not one of the stock layers this service loads (see GET /v1/models docs)", path
            )
        self.layers.append((name, class_name))
        if len(self.layers) > MAX_LAYERS:
            raise ModelRefused(name, class_name, f"a model may have at most {MAX_LAYERS:,} layers", path)
        self.values(entry, name, class_name, path, 0, top=True)

    def values(
        self, value: object, layer: str, class_name: str, path: list[str | int], depth: int, top: bool = False
    ) -> None:
        """Every value under a layer: objects must be stock, strings under an activation key stock names, and no
        key may carry code."""
        if depth > MAX_JSON_DEPTH:
            raise ModelRefused(layer, class_name, f"its config is nested over {MAX_JSON_DEPTH} deep", path)
        if isinstance(value, list):
            for index, item in enumerate(value):
                self.values(item, layer, class_name, [*path, index], depth + 1)
            return
        if not isinstance(value, dict):
            return
        if not top and "class_name" in value:
            self.stock_object(value, layer, class_name, path)
        for key, item in value.items():
            if key in CODE_KEYS:
                raise ModelRefused(layer, class_name, f"its config carries code ({key!r})", [*path, key])
            if key in SKIPPED_KEYS:
                continue
            if key in ACTIVATION_KEYS:
                self.activation(item, layer, class_name, [*path, key])
            self.values(item, layer, class_name, [*path, key], depth + 1)

    def stock_object(self, entry: dict[str, Any], layer: str, class_name: str, path: list[str | int]) -> None:
        kind = entry.get("class_name")
        if not isinstance(kind, str):
            raise ModelRefused(layer, class_name, "its config holds an object without a class name", path)
        if kind == "function":  # Keras 3 writes a stock function as {"module": "keras.activations", "config": "relu"}
            if _keras_module(entry.get("module")) and entry.get("config") in ACTIVATIONS:
                return
            raise ModelRefused(
                layer,
                class_name,
                f"uses the custom function {str(entry.get('config'))[:80]!r} (only stock activations)",
                path,
            )
        if not _keras_module(entry.get("module")) or not _stock_name(entry):
            raise ModelRefused(
                layer,
                class_name,
                f"uses the custom object {kind[:80]!r} (module {str(entry.get('module'))[:80]!r}, registered as "
                f"{str(entry.get('registered_name'))[:80]!r})",
                path,
            )
        if kind not in ALLOWED_OBJECTS:
            raise ModelRefused(
                layer, class_name, f"uses {kind[:80]!r}, not a stock initializer, regularizer or constraint", path
            )

    def activation(self, value: object, layer: str, class_name: str, path: list[str | int]) -> None:
        if value is None or isinstance(value, dict):  # an object is checked as one by ``values``
            return
        if not isinstance(value, str) or value not in ACTIVATIONS:
            raise ModelRefused(layer, class_name, f"uses the activation {str(value)[:80]!r}, not a stock Keras one", path)


def check_config(config: object) -> list[tuple[str, str]]:
    """Refuse (``ModelRefused``, naming the layer and its class) any model config that is not stock layers all the
    way down; returns the layers' (name, class) in order, a nested model's named ``outer/inner``."""
    walk = _Walk()
    walk.model(config, 0, [])
    if not walk.layers:
        raise ModelError("the model has no layers")
    return walk.layers


def parse_config(text: bytes | str, what: str) -> object:
    try:
        return json.loads(text)
    except RecursionError:
        raise ModelError(f"{what} is nested too deeply to be a model's config") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelError(f"{what} is not valid JSON: {str(exc)[:200]}") from None


# --------------------------------------------------------------------------- the files


def _mb(n: int) -> str:
    return f"{n:,} bytes ({n / 2**20:,.1f} MiB)"


_END_RECORD: Callable[[IO[bytes]], list[Any] | None] = zipfile._EndRecData  # type: ignore[attr-defined]
_ENTRIES_TOTAL: int = zipfile._ECD_ENTRIES_TOTAL  # type: ignore[attr-defined]


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    """At most ``limit`` bytes, whatever the entry claims: zipfile stops at the declared size and checks the CRC."""
    if info.file_size > limit:
        raise ModelTooLarge(f"{info.filename} declares {_mb(info.file_size)} unpacked; at most {_mb(limit)} is read")
    with archive.open(info) as member:
        data = member.read(limit + 1)
    if len(data) > limit:
        raise ModelTooLarge(f"{info.filename} unpacks past {_mb(limit)}")
    return data


def check_keras_archive(stream: IO[bytes], max_unpacked_bytes: int) -> list[tuple[str, str]]:
    """A ``.keras`` file as data: a zip of ``config.json``, ``metadata.json`` and ``model.weights.h5`` and nothing
    else, each size read from the zip's directory and checked before a byte of it is inflated (a zip bomb is
    refused on its declared size; an entry that lies is stopped at its declared size by its CRC), the weights an
    HDF5 file, and the config walked by ``check_config``."""
    try:
        stream.seek(0)
        endrec = _END_RECORD(stream)
        if endrec is None:
            raise ModelError("not a .keras file: no zip end record (a truncated file, or not a zip)")
        if int(endrec[_ENTRIES_TOTAL]) > 2 * len(KERAS_MEMBERS):
            raise ModelError(
                f"a .keras file holds {len(KERAS_MEMBERS)} files; this zip lists {int(endrec[_ENTRIES_TOTAL]):,}"
            )
        stream.seek(0)
        with zipfile.ZipFile(stream) as archive:
            infos = {info.filename: info for info in archive.infolist()}
            extra = sorted(set(infos) - KERAS_MEMBERS)
            missing = sorted(KERAS_MEMBERS - set(infos))
            if extra:
                raise ModelError(
                    f"a .keras file holds only {sorted(KERAS_MEMBERS)}; this one also has {[n[:80] for n in extra[:5]]}"
                )
            if missing:
                raise ModelError(f"not a complete .keras file: {missing} missing (found {sorted(infos)})")
            unpacked = sum(info.file_size for info in infos.values())
            if unpacked > max_unpacked_bytes:
                raise ModelTooLarge(
                    f"the .keras file's members declare {_mb(unpacked)} unpacked; at most {_mb(max_unpacked_bytes)}"
                )
            parse_config(_read_member(archive, infos["metadata.json"], MAX_METADATA_BYTES), "metadata.json")
            with archive.open(infos["model.weights.h5"]) as weights:
                if weights.read(len(HDF5_SIGNATURE)) != HDF5_SIGNATURE:
                    raise ModelError("model.weights.h5 in the .keras file is not an HDF5 file")
            config = parse_config(_read_member(archive, infos["config.json"], MAX_CONFIG_BYTES), "config.json")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, NotImplementedError, RuntimeError) as exc:
        raise ModelError(f"not a readable .keras file: {str(exc)[:200]}") from None
    finally:
        stream.seek(0)
    return check_config(config)


def has_hdf5_signature(stream: IO[bytes]) -> bool:
    """The signature at offset 0 or at a user block's end (512 · 2ⁿ); bytes read: 8 per place looked."""
    size = stream.seek(0, io.SEEK_END)
    offset = 0
    try:
        while offset + len(HDF5_SIGNATURE) <= size:
            stream.seek(offset)
            if stream.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
                return True
            offset = 512 if offset == 0 else offset * 2
        return False
    finally:
        stream.seek(0)


def check_h5_file(stream: IO[bytes]) -> None:
    """What the API can check of an ``.h5`` without h5py: it is an HDF5 file. Its config is read by the worker."""
    if not has_hdf5_signature(stream):
        raise ModelError("not an HDF5 file (no HDF5 signature): a legacy Keras .h5 model is one")
