"""Stripped model → files in every asked format, and what a user reads about them (sizes, sparsity)."""

from __future__ import annotations

import gzip
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from core.recipe import ExportSpec, TFLiteOptions
from worker.tf_env import keras, tf

FILENAMES = {"h5": "model.h5", "keras": "model.keras", "savedmodel": "savedmodel.zip", "tflite": "model.tflite"}


def portable(model):
    """The model with only stock Keras layers: an RReLU becomes the LeakyReLU it is at inference."""
    from worker.builder import RReLU

    if not any(isinstance(layer, RReLU) for layer in model.layers):
        return model

    def swap(layer):
        if isinstance(layer, RReLU):
            return keras.layers.LeakyReLU(alpha=layer.inference_alpha, name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    clone = keras.models.clone_model(model, clone_function=swap)
    clone.set_weights(model.get_weights())
    return clone


def tflite_bytes(model, options: TFLiteOptions) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    optimizations = []
    if options.sparsity:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    if options.dynamic_range_int8:
        optimizations.append(tf.lite.Optimize.DEFAULT)
    converter.optimizations = optimizations
    return converter.convert()


def strip_and_export(model, spec: ExportSpec, directory: Path) -> dict[str, Path]:
    """``model`` is already stripped of pruning wrappers; each file loads with stock tf_keras / tf.lite."""
    model = portable(model)
    out: dict[str, Path] = {}
    for fmt in spec.formats:
        path = directory / FILENAMES[fmt]
        if fmt == "h5":
            with warnings.catch_warnings():  # "HDF5 is legacy": h5 is still what most stock tools read
                warnings.simplefilter("ignore", UserWarning)
                model.save(path, include_optimizer=False, save_format="h5")
        elif fmt == "keras":
            model.save(path)  # the native format has no include_optimizer; the stripped model has none worth keeping
        elif fmt == "savedmodel":
            with tempfile.TemporaryDirectory(dir=directory) as tmp:
                model.save(Path(tmp) / "savedmodel", include_optimizer=False, save_format="tf")
                shutil.make_archive(str(path.with_suffix("")), "zip", tmp, "savedmodel")
        elif fmt == "tflite":
            path.write_bytes(tflite_bytes(model, spec.tflite_options))
        out[fmt] = path
    return out


def sizes(files: dict[str, Path]) -> dict[str, dict[str, int]]:
    """Raw and gzipped: zeros only shrink a file once it is compressed."""
    return {
        fmt: {"bytes": path.stat().st_size, "gzip_bytes": len(gzip.compress(path.read_bytes(), compresslevel=9))}
        for fmt, path in files.items()
    }


def sparsity_report(model, pruned: list[str]) -> dict:
    """Read back from the stripped weights, so it is what the exported files hold."""
    layers, zeros, total = [], 0, 0
    params_total = params_nonzero = 0
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        count = sum(int(w.size) for w in weights)
        nonzero = sum(int(np.count_nonzero(w)) for w in weights)
        params_total += count
        params_nonzero += nonzero
        kernel = getattr(layer, "kernel", getattr(layer, "pointwise_kernel", getattr(layer, "depthwise_kernel", None)))
        entry = {"name": layer.name, "params": count, "nonzero": nonzero, "pruned": layer.name in pruned}
        if kernel is not None:
            k = kernel.numpy()
            entry["sparsity"] = round(float(np.mean(k == 0)), 6)
            if layer.name in pruned or not pruned:
                zeros += int(np.sum(k == 0))
                total += int(k.size)
        layers.append(entry)
    return {
        "sparsity": {
            "overall": round(zeros / total, 6) if total else 0.0,
            "layers": layers,
            "pruned_layers": pruned,
            "left_dense": [entry["name"] for entry in layers if not entry["pruned"]],
        },
        "params": {"total": params_total, "nonzero": params_nonzero},
    }
