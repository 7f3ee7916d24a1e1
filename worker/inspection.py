"""An uploaded model's inspection, in a job's forked child: its config checked, then loaded safely, then measured.

Nothing in the file is deserialized before ``core.model_inspect.check_config`` passed on its JSON config: for an
``.h5`` that config is the ``model_config`` attribute, read here with h5py (a legacy ``.h5`` has no safe mode, so
that check is what keeps a ``Lambda``'s bytecode from running); for a ``.keras`` the API checked it already, and
it is checked again here before ``load_model(..., safe_mode=True)``. The child runs under the worker's memory
guard like any job: a file that makes it blow up or crash is rejected by the parent (``worker.memory_guard``),
never retried into the same crash.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from core import model_inspect, model_store
from core.db import Database
from core.errors import ModelError, ModelTooLarge, TrainerError
from core.model_inspect import MAX_CONFIG_BYTES, InspectedLayer, ModelInspection
from core.settings import Settings
from worker.runner import worker_name

log = logging.getLogger(__name__)
#: A loader's message from a hostile file can be long; the reason keeps its start.
MAX_MESSAGE = 500


def h5_config(path: Path) -> object:
    """The ``model_config`` attribute as parsed JSON; its size is checked before it is read where the file says
    it (a fixed-length string), and after otherwise (bounded by the file, which is bounded by the upload)."""
    import h5py  # type: ignore[import-untyped]
    import numpy as np

    try:
        with h5py.File(path, "r") as f:
            if "model_config" not in f.attrs:
                raise ModelError(
                    "the .h5 file has no model_config: it holds weights only (save_weights) or is not a Keras model; "
                    "save the whole model (model.save('m.h5') or, better, model.save('m.keras'))"
                )
            attr = f.attrs.get_id("model_config")
            if attr.shape not in ((), None, (1,)):
                raise ModelError(f"the .h5 file's model_config is an array of shape {attr.shape}, not a JSON string")
            if h5py.check_string_dtype(attr.dtype) is None and attr.dtype.kind not in "SU":
                raise ModelError(f"the .h5 file's model_config is {attr.dtype}, not a JSON string")
            if attr.dtype.itemsize > MAX_CONFIG_BYTES:
                raise ModelTooLarge(
                    f"the .h5 file's model_config declares {attr.dtype.itemsize:,} bytes; at most {MAX_CONFIG_BYTES:,}"
                )
            raw = f.attrs["model_config"]
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise ModelError(f"not a readable HDF5 Keras model: {str(exc)[:MAX_MESSAGE]}") from None
    if isinstance(raw, np.ndarray):
        raw = raw.reshape(-1)[0]
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="strict")
    if not isinstance(raw, str):
        raise ModelError("the .h5 file's model_config is not a JSON string")
    if len(raw) > MAX_CONFIG_BYTES:
        raise ModelTooLarge(f"the .h5 file's model_config is {len(raw):,} characters; at most {MAX_CONFIG_BYTES:,}")
    return model_inspect.parse_config(raw, "the .h5 file's model_config")


def _output_shape(layer) -> list[int | None]:
    try:
        shape = layer.output_shape
    except (AttributeError, RuntimeError):  # a layer called more than once has one per call
        return []
    if isinstance(shape, list):
        shape = shape[0] if shape else ()
    return [None if d is None else int(d) for d in tuple(shape)[1:]]


def _prunable(layer) -> bool:
    """TF-MOT's registry supports it and names weights to prune (it supports Flatten or DepthwiseConv2D only to
    leave them as they are)."""
    from tensorflow_model_optimization.python.core.sparsity.keras.prunable_layer import PrunableLayer
    from tensorflow_model_optimization.python.core.sparsity.keras.prune_registry import PruneRegistry

    if isinstance(layer, PrunableLayer):
        return True
    if not PruneRegistry.supports(layer):
        return False
    return bool(PruneRegistry._LAYERS_WEIGHTS_MAP.get(layer.__class__, []))


def _layers(model, keras, prefix: str = "") -> list[InspectedLayer]:
    """A nested model's layers in its place, named ``outer/inner``, so the params add up to the model's."""
    out: list[InspectedLayer] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out += _layers(layer, keras, f"{prefix}{layer.name}/")
            continue
        out.append(
            InspectedLayer(
                name=f"{prefix}{layer.name}",
                class_name=type(layer).__name__,
                params=int(layer.count_params()),
                prunable=_prunable(layer),
                output_shape=_output_shape(layer),
            )
        )
    return out


def _shape(shape, what: str) -> list[int]:
    if isinstance(shape, list):
        raise ModelError(f"the model has {len(shape)} {what}s; one input and one output are supported")
    dims = list(shape)[1:]
    if any(d is None for d in dims):
        raise ModelError(
            f"the model's {what} shape {[None, *dims]} has a size known only at run time; "
            "every size but the batch's must be fixed"
        )
    return [int(d) for d in dims]


def measure(path: Path, fmt: str) -> ModelInspection:
    """Check the config, then (only then) load the model and measure it."""
    from worker.tf_env import keras

    if fmt == "h5":
        model_inspect.check_config(h5_config(path))
    else:
        with path.open("rb") as f:
            model_inspect.check_keras_archive(f, max_unpacked_bytes=4 * path.stat().st_size + 2**20)
    try:
        model = keras.models.load_model(path, compile=False, safe_mode=True)
    except TrainerError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the loader says about a bad file is the reason
        raise ModelError(f"Keras could not load it: {type(exc).__name__}: {str(exc)[:MAX_MESSAGE]}") from None
    if not isinstance(model, keras.Model):
        raise ModelError(f"the file loads as a {type(model).__name__}, not a Keras model")
    layers = _layers(model, keras)
    return ModelInspection(
        input_shape=_shape(model.input_shape, "input"),
        output_shape=_shape(model.output_shape, "output"),
        layers=layers,
        params=int(model.count_params()),
        functional=not isinstance(model, keras.Sequential),
    )


def inspect_model(db: Database, settings: Settings, model_id: str) -> str | None:
    """The task's body: claim the inspection (a duplicate message finds nothing to do), measure, record the
    verdict. Returns the status it recorded."""
    with db.session() as session:
        attempt = model_store.claim_inspection(session, model_id, worker_name(), settings)
        model = model_store.get_any(session, model_id) if attempt is not None else None
        data = model_store.read_bytes(session, model_id) if model is not None else None
    if attempt is None or model is None or data is None:
        return None
    reason: str | None = None
    result: ModelInspection | None = None
    with tempfile.TemporaryDirectory(prefix="inspect-") as tmp:
        path = Path(tmp, f"model.{model.format}")
        with path.open("wb") as f:
            f.write(data)
        del data
        try:
            result = measure(path, model.format)
        except TrainerError as exc:
            reason = exc.detail
        except Exception as exc:  # noqa: BLE001 - a hostile file must end in a verdict, not a crashed task
            log.exception("inspecting model %s failed", model_id)
            reason = f"it could not be inspected: {type(exc).__name__}: {str(exc)[:MAX_MESSAGE]}"
    with db.session() as session:
        if result is not None:
            done = model_store.finish_inspection(session, model_id, attempt, result)
            status = model_store.READY
        else:
            done = model_store.reject(session, model_id, reason or "it could not be inspected", attempt)
            status = model_store.REJECTED
    log.info("model %s: %s%s", model_id, status if done else "no longer mine", f" ({reason})" if reason else "")
    return status if done else None


def inspect_bytes(data: bytes, fmt: str) -> ModelInspection:
    """``measure`` on bytes (tests and tools)."""
    with tempfile.TemporaryDirectory(prefix="inspect-") as tmp:
        path = Path(tmp, f"model.{fmt}")
        path.write_bytes(data)
        return measure(path, fmt)
