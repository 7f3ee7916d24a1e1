"""The one place TensorFlow is imported, with Keras 2 (tf_keras) selected first.

TF-MOT 0.8 does not work with Keras 3, and ``TF_USE_LEGACY_KERAS`` is read at import time.
Importing creates no GPU context, so a Celery prefork parent may do it before forking.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["tf", "keras", "tfmot"]
