"""The one-off script a user would write instead of the service, by hand with tf_keras + TF-MOT.

``python -m bench.plain_script [epochs] [digits|fashion_mnist]``:
- ``digits`` (default, 30 epochs): the contract's digits recipe; saves h5 and .keras.
- ``fashion_mnist`` (10 epochs): the seed's MLP (Flatten [28, 28], Dense 300-100 ReLU, softmax 10, SGD 0.01,
  batch 32) pruned to 90 % with TF-MOT's polynomial decay (frequency 100), on the four IDX files of Debian's
  dataset-fashion-mnist read by hand; 5,000 of the 60,000 for validation, the t10k images for the test; the
  stripped model saved as h5.
Both split with the same seeded permutation as the service, so the two train on the same rows.
Prints one line: test accuracy, kernel sparsity, seconds after the imports, seconds in all.
"""

import os
import sys
import tempfile
import time

started = time.perf_counter()
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gzip  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras as keras  # noqa: E402

epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 30
dataset = sys.argv[2] if len(sys.argv) > 2 else "digits"
if dataset != "fashion_mnist":
    from sklearn.datasets import load_digits
imported = time.perf_counter()
keras.utils.set_random_seed(42)


def idx(path: str, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


if dataset == "fashion_mnist":
    root = os.environ.get("TRAINER_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")
    x = idx(f"{root}/train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    y = idx(f"{root}/train-labels-idx1-ubyte.gz", 8).astype("int64")
    x_test = idx(f"{root}/t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28).astype("float32") / 255
    y_test = idx(f"{root}/t10k-labels-idx1-ubyte.gz", 8).astype("int64")
    order = np.random.default_rng(42).permutation(len(x))
    x, y = x[order].astype("float32") / 255, y[order]
    x_train, y_train, x_val, y_val = x[:55000], y[:55000], x[55000:], y[55000:]
    model = keras.Sequential(
        [
            keras.layers.Flatten(input_shape=[28, 28]),
            keras.layers.Dense(300, activation="relu"),
            keras.layers.Dense(100, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    batch, final_sparsity, frequency = 32, 0.9, 100
    optimizer = keras.optimizers.SGD(learning_rate=0.01)
    formats = ["h5"]
else:
    data = load_digits()
    x, y = data.data.astype("float32"), data.target
    order = np.random.default_rng(42).permutation(len(x))
    x, y = x[order], y[order]
    x_train, y_train, x_val, y_val = x[:1293], y[:1293], x[1293:1437], y[1293:1437]
    x_test, y_test = x[1437:], y[1437:]
    l1 = keras.regularizers.L1L2(l1=1e-5)
    model = keras.Sequential(
        [
            keras.layers.InputLayer(input_shape=(64,)),
            keras.layers.Dense(300, kernel_initializer="he_normal", use_bias=False, kernel_regularizer=l1),
            keras.layers.BatchNormalization(momentum=0.99),
            keras.layers.Activation("elu"),
            keras.layers.Dense(10, activation="softmax", kernel_regularizer=l1),
        ]
    )
    batch, final_sparsity, frequency = 32, 0.8, 20
    optimizer = keras.optimizers.Nadam(learning_rate=0.001, clipnorm=1.0)
    formats = ["h5", "keras"]

steps = -(-len(x_train) // batch) * epochs
end_step = (steps // frequency) * frequency
schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, final_sparsity, 0, end_step, frequency=frequency)
pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
pruned.compile(optimizer, "sparse_categorical_crossentropy", ["accuracy"])
pruned.fit(
    x_train,
    y_train,
    batch_size=batch,
    epochs=epochs,
    validation_data=(x_val, y_val),
    verbose=0,
    callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
)
final = tfmot.sparsity.keras.strip_pruning(pruned)
final.compile("sgd", "sparse_categorical_crossentropy", ["accuracy"])
loss, accuracy = final.evaluate(x_test, y_test, verbose=0)
kernels = [layer.kernel.numpy() for layer in final.layers if hasattr(layer, "kernel")]
sparsity = sum(int(np.sum(k == 0)) for k in kernels) / sum(k.size for k in kernels)
with tempfile.TemporaryDirectory() as tmp:
    if "h5" in formats:
        final.save(f"{tmp}/model.h5", include_optimizer=False)
    if "keras" in formats:
        final.save(f"{tmp}/model.keras")
end = time.perf_counter()
print(f"accuracy={accuracy:.4f} sparsity={sparsity:.6f} after_imports={end - imported:.3f} wall={end - started:.3f}")
