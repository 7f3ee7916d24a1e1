"""Measured inference: each runnable format of a job's model and of its untrained dense twin, timed here.

Unstructured sparsity makes no dense kernel faster (the zeros are still multiplied), so what a sparse model gains
at run time is measured, never assumed: per format, batch-1 latency (median and p90 of ``settings.inference_calls``
calls after ``WARMUP_CALLS`` untimed ones), batch-256 throughput, the file's size raw and gzipped, and the memory
that loading and running it took — with one thread and with all the worker's CPUs. The twin is the same
architecture, built the same way and measured the same way in the same run, so ``speedup`` is a ratio of two
numbers taken under the same load.

How each runtime gets its thread count:
- TFLite: ``tf.lite.Interpreter(num_threads=n)``, with the builtin kernels only (``BUILTIN_WITHOUT_DEFAULT_DELEGATES``,
  as the tests load sparse models): TF 2.21's default XNNPack delegate refuses the sparse int8 fully-connected op,
  and the builtin kernels are where TFLite's sparse paths are. Every format runs the same way, so they compare.
- Keras: TF's global intra-op pool is fixed once the runtime has started (the worker trained on it), so the model's
  compiled call — a ``tf.function`` of ``model(x, training=False)``, its variables frozen into constants — runs in a
  ``tf.compat.v1.Session`` with its own pools (``use_per_session_threads``) of 1 or ``os.cpu_count()`` threads. That
  is TF's own graph executor with an honest thread count, without ``model.predict``'s milliseconds per call.

Peak memory (Linux): the kernel's high-water mark of the worker's resident memory is reset by writing ``5`` to
``/proc/self/clear_refs``; the format is loaded from its file and run at batch 1 and 256 with each thread count;
``VmHWM`` minus ``VmRSS`` at the reset is its peak (a TFLite file is mapped, so its pages count). The heap's free
pages are first returned to the kernel (glibc ``malloc_trim``); memory the process still holds and reuses is not
counted, so this is a lower bound of what a fresh process would need (forking a child to measure in is not safe
once TensorFlow's threads run, and a fresh interpreter per format costs seconds of TensorFlow import). Elsewhere
(no ``clear_refs``) it is the rise of ``ru_maxrss``, 0 when an earlier peak was higher.
"""

from __future__ import annotations

import ctypes
import gzip
import os
import platform
import resource
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import get_args

import numpy as np

from core.recipe import ExportSpec, Recipe, TFLiteOptions
from core.results import FormatInference, InferenceFormat, InferenceReport, Latency, RunMeasure
from core.settings import Settings
from worker.tf_env import keras, tf

FORMATS: tuple[InferenceFormat, ...] = get_args(InferenceFormat)
#: TFLite converter optimizations per format (Optimize.DEFAULT alone is dynamic-range int8).
TFLITE_OPTIMIZATIONS: dict[str, tuple[str, ...]] = {
    "tflite_float": (),
    "tflite_sparse": ("EXPERIMENTAL_SPARSITY",),
    "tflite_sparse_int8": ("EXPERIMENTAL_SPARSITY", "DEFAULT"),
}
WARMUP_CALLS = 20
THROUGHPUT_BATCH = 256
#: A batch-256 figure is the median of at least this many calls over at least this much time.
THROUGHPUT_MIN_CALLS, THROUGHPUT_MIN_S = 3, 0.05

Call = Callable[[np.ndarray], object]


def measure(
    model,
    twin,
    sample_x: np.ndarray,
    settings: Settings,
    exported: dict[str, bytes] | None = None,
    on_format: Callable[[str], None] | None = None,
) -> InferenceReport:
    """``model``: the stripped exported Keras model; ``twin``: the same architecture, untrained and dense
    (``dense_twin``). ``sample_x``: a few inputs (tiled to 256). ``exported``: files the export already made, by
    inference format (``reusable_exports``), so nothing is converted twice (the twin's files of those formats are made
    the same way, so sizes compare). ``on_format`` is told what is measured."""
    threads = thread_counts()
    x1, x256 = _batches(sample_x)
    calls = settings.inference_calls
    tell = on_format or (lambda what: None)
    exported = exported or {}
    tell("conversion")
    files = {"model": _files(model, exported), "dense twin": _files(twin, _as_exported(twin, set(exported)))}
    measured: dict[str, dict[str, FormatInference]] = {"model": {}, "dense twin": {}}
    for fmt in FORMATS:  # model and twin one after the other per format: a shared machine's drift hits both alike
        for side in measured:
            tell(f"{side} {fmt}")
            measured[side][fmt] = _measure_format(fmt, files[side][fmt], x1, x256, threads, calls)
    ours, theirs = measured["model"], measured["dense twin"]
    speedup = {
        fmt: round(theirs[fmt].single_thread.batch1.median_ms / ours[fmt].single_thread.batch1.median_ms, 4) for fmt in ours
    }
    return InferenceReport(cpu=cpu_name(), cpu_count=os.cpu_count() or 1, model=ours, dense_twin=theirs, speedup=speedup)


def dense_twin(model, recipe: Recipe):
    """The job's architecture untrained and unpruned: built by the recipe's builder (with the same standardization
    layer, whose statistics are constants), or, for a transfer job whose layers come from a base, cloned from the
    stripped model (``clone_model`` gives fresh weights)."""
    from worker import builder, export

    if recipe.transfer is not None:
        return keras.models.clone_model(export.portable(model))
    standardize = None
    try:
        layer = model.get_layer("standardize")
    except ValueError:
        layer = None
    if layer is not None:
        config = layer.get_config()
        standardize = (np.asarray(config["mean"], dtype="float32"), np.asarray(config["variance"], dtype="float32"))
    return builder.build_model(recipe, standardize=standardize)


def reusable_exports(files: dict[str, Path], spec: ExportSpec) -> dict[str, bytes]:
    """The export's files that are one of the measured formats (its ``.keras``; its ``.tflite`` when its options are
    exactly those of one of the TFLite formats), so they are measured as stored rather than converted again."""
    out: dict[str, bytes] = {}
    if "keras" in files:
        out["keras"] = files["keras"].read_bytes()
    if "tflite" in files:
        options = spec.tflite_options
        match = {(False, False): "tflite_float", (True, False): "tflite_sparse", (True, True): "tflite_sparse_int8"}
        fmt = match.get((bool(options.sparsity), bool(options.dynamic_range_int8)))
        if fmt is not None:
            out[fmt] = files["tflite"].read_bytes()
    return out


def _as_exported(twin, formats: set[str]) -> dict[str, bytes]:
    """The twin's files of the formats the model's come from its export, made the export's way: ``from_keras_model``
    stores signatures that the quicker conversion here does not (about 1 KiB, all of a tiny model's difference)."""
    from worker import export

    twin = export.portable(twin)
    out = {"keras": _keras_bytes(twin)} if "keras" in formats else {}
    for fmt in formats & set(TFLITE_OPTIMIZATIONS):
        names = TFLITE_OPTIMIZATIONS[fmt]
        options = TFLiteOptions(sparsity="EXPERIMENTAL_SPARSITY" in names, dynamic_range_int8="DEFAULT" in names)
        out[fmt] = export.tflite_bytes(twin, options)
    return out


def thread_counts() -> list[int]:
    """1, and every CPU when there is more than one (otherwise ``all_threads`` is absent)."""
    cpus = os.cpu_count() or 1
    return [1, cpus] if cpus > 1 else [1]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _batches(sample_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(sample_x, dtype="float32")
    reps = -(-THROUGHPUT_BATCH // len(x))
    return np.ascontiguousarray(x[:1]), np.ascontiguousarray(np.concatenate([x] * reps)[:THROUGHPUT_BATCH])


def _files(model, exported: dict[str, bytes]) -> dict[str, bytes]:
    """Every format's bytes: ``exported`` as given, the rest saved or converted here."""
    from worker import export

    model = export.portable(model)
    files = dict(exported)
    if "keras" not in files:
        files["keras"] = _keras_bytes(model)
    missing = [fmt for fmt in FORMATS if fmt not in files]
    if missing:
        files.update(_tflite_files(model, missing))
    return files


def _compiled_call(model):
    fn = tf.function(lambda x: model(x, training=False))
    return fn.get_concrete_function(tf.TensorSpec([None, *model.input_shape[1:]], tf.float32))


def _keras_bytes(model) -> bytes:
    with tempfile.TemporaryDirectory(prefix="inference-") as tmp:
        path = Path(tmp) / "model.keras"
        model.save(path)
        return path.read_bytes()


def _tflite_files(model, formats: list[InferenceFormat]) -> dict[str, bytes]:
    """``worker.export.tflite_bytes``'s conversion with each format's optimizations, from the compiled call's frozen
    graph (no model object given to the converter): ~0.1 s a conversion instead of ~0.5 s for ``from_keras_model``,
    which writes and reloads a SavedModel each time; the files differ only in their signature metadata."""
    concrete = _compiled_call(model)
    out: dict[str, bytes] = {}
    for fmt in formats:
        converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
        converter.optimizations = [getattr(tf.lite.Optimize, name) for name in TFLITE_OPTIMIZATIONS[fmt]]
        out[fmt] = converter.convert()
    return out


def _measure_format(fmt: InferenceFormat, content: bytes, x1, x256, threads: list[int], calls: int) -> FormatInference:
    measures: list[RunMeasure] = []
    with tempfile.TemporaryDirectory(prefix="inference-") as tmp:
        path = Path(tmp) / ("model.keras" if fmt == "keras" else f"{fmt}.tflite")
        path.write_bytes(content)
        with _peak_memory() as peak, _opened(fmt, path) as open_for:
            for n in threads:
                one, batch = open_for(n, 1), open_for(n, THROUGHPUT_BATCH)
                measures.append(
                    RunMeasure(threads=n, batch1=_latency(one, x1, calls), batch256_per_second=_throughput(batch, x256))
                )
    return FormatInference(
        format=fmt,
        bytes=len(content),
        gzip_bytes=len(gzip.compress(content, compresslevel=9)),
        peak_memory_bytes=peak(),
        single_thread=measures[0],
        all_threads=measures[1] if len(measures) > 1 else None,
    )


@contextmanager
def _opened(fmt: str, path: Path) -> Iterator[Callable[[int, int], Call]]:
    """``open_for(threads, batch)`` → a call running one batch of the file at ``path``, loaded as a user would
    (``load_model``; a TFLite interpreter maps the file); everything opened is dropped on exit."""
    if fmt == "keras":
        graph, feed, fetch = _frozen(keras.models.load_model(path, compile=False))
        sessions: dict[int, object] = {}

        def open_keras(threads: int, batch: int) -> Call:
            if threads not in sessions:
                config = tf.compat.v1.ConfigProto(
                    intra_op_parallelism_threads=threads, inter_op_parallelism_threads=threads, use_per_session_threads=True
                )
                sessions[threads] = tf.compat.v1.Session(graph=graph, config=config)
            session = sessions[threads]
            return lambda x: session.run(fetch, {feed: x})  # type: ignore[attr-defined]

        try:
            yield open_keras
        finally:
            for session in sessions.values():
                session.close()  # type: ignore[attr-defined]
        return
    held: list = []

    def open_tflite(threads: int, batch: int) -> Call:
        with warnings.catch_warnings():  # "tf.lite.Interpreter is deprecated" (for LiteRT's): same kernels
            warnings.simplefilter("ignore", UserWarning)
            interpreter = tf.lite.Interpreter(
                model_path=str(path),
                num_threads=threads,
                experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
            )
        inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        if batch != 1:
            interpreter.resize_tensor_input(inp["index"], [batch, *inp["shape"][1:]])
        interpreter.allocate_tensors()
        held.append(interpreter)

        def run(x):
            interpreter.set_tensor(inp["index"], x)
            interpreter.invoke()
            return interpreter.get_tensor(out["index"])

        return run

    try:
        yield open_tflite
    finally:
        held.clear()


def _frozen(model):
    """The compiled call's graph with its variables as constants: what a session runs, and its feed and fetch."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(_compiled_call(model))
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(frozen.graph.as_graph_def(), name="")
    return graph, graph.get_tensor_by_name(frozen.inputs[0].name), graph.get_tensor_by_name(frozen.outputs[0].name)


def _latency(call: Call, x: np.ndarray, calls: int) -> Latency:
    for _ in range(WARMUP_CALLS):
        call(x)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call(x)
        times.append(time.perf_counter() - start)
    return Latency(
        median_ms=round(statistics.median(times) * 1000, 5),
        p90_ms=round(float(np.percentile(times, 90)) * 1000, 5),
        calls=calls,
    )


def _throughput(call: Call, x: np.ndarray) -> float:
    """Samples per second of the median call (a shared machine's hiccups move a mean, not a median)."""
    call(x)  # warm-up: the first call allocates
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < THROUGHPUT_MIN_CALLS or time.perf_counter() - started < THROUGHPUT_MIN_S:
        start = time.perf_counter()
        call(x)
        times.append(time.perf_counter() - start)
    return round(len(x) / statistics.median(times), 1)


def _trim_heap() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the figure stays a lower bound
        pass


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


@contextmanager
def _peak_memory() -> Iterator[Callable[[], int]]:
    """Yields a function giving, after the block, how far resident memory rose within it (module docstring).

    glibc's ``malloc_trim`` first hands the heap's free pages back to the kernel, so what the block allocates
    needs pages that count again (without it a model loaded after training can show 0: it reuses the heap that
    training freed)."""
    _trim_heap()
    try:
        Path("/proc/self/clear_refs").write_text("5")
        base = _status_kib("VmRSS")
    except OSError:
        base = None
    rusage_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {"bytes": 0}
    yield lambda: result["bytes"]
    if base is not None:
        result["bytes"] = max(0, ((_status_kib("VmHWM") or base) - base) * 1024)
    else:
        result["bytes"] = max(0, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rusage_before) * 1024)
