"""The one-off script a user would write instead of the service: the contract's digits recipe by hand.

tf_keras + TF-MOT, same split, same network, same pruning; saves h5 and .keras. ``python -m bench.plain_script``.
"""
import os
import sys
import tempfile
import time

started = time.perf_counter()
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras as keras  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

imported = time.perf_counter()
epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 30
keras.utils.set_random_seed(42)
data = load_digits()
x, y = data.data.astype("float32"), data.target
order = np.random.default_rng(42).permutation(len(x))
x, y = x[order], y[order]
x_train, y_train, x_val, y_val, x_test, y_test = x[:1293], y[:1293], x[1293:1437], y[1293:1437], x[1437:], y[1437:]

l1 = keras.regularizers.L1L2(l1=1e-5)
model = keras.Sequential([
    keras.layers.InputLayer(input_shape=(64,)),
    keras.layers.Dense(300, kernel_initializer="he_normal", use_bias=False, kernel_regularizer=l1),
    keras.layers.BatchNormalization(momentum=0.99),
    keras.layers.Activation("elu"),
    keras.layers.Dense(10, activation="softmax", kernel_regularizer=l1),
])
steps = -(-len(x_train) // 32) * epochs
end_step = (steps // 20) * 20
schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, 0.8, 0, end_step, frequency=20)
pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
pruned.compile(keras.optimizers.Nadam(learning_rate=0.001, clipnorm=1.0), "sparse_categorical_crossentropy",
               ["accuracy"])
pruned.fit(x_train, y_train, batch_size=32, epochs=epochs, validation_data=(x_val, y_val), verbose=0,
           callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
final = tfmot.sparsity.keras.strip_pruning(pruned)
final.compile("sgd", "sparse_categorical_crossentropy", ["accuracy"])
loss, accuracy = final.evaluate(x_test, y_test, verbose=0)
with tempfile.TemporaryDirectory() as tmp:
    final.save(f"{tmp}/model.h5", include_optimizer=False)
    final.save(f"{tmp}/model.keras")
end = time.perf_counter()
print(f"accuracy={accuracy:.4f} after_imports={end - imported:.3f} wall={end - started:.3f}")
