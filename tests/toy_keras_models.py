"""The toy workload's model in Keras 3 (``tests/integration/test_registration.py``): a plug-in's models module, outside
``thread_bench``, implementing :class:`thread_bench.workloads.Models`.

The twin of ``toy_torch_models``: one 3x3 convolution ('same', ReLU), 2x2 max-pooling, a Dense output of one
value. ``precision="bf16"`` gives the hidden layers the ``mixed_bfloat16`` policy; the output layer, hence the
predictions and the loss, stays float32. Every layer pins ``channels_last``.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import layers

from thread_bench.config import PREDICT_BATCH_SIZE
from thread_bench.models import inputs

_DATA_FORMAT = "channels_last"


def build_model(config: Any, precision: str = "fp32", implementation: str | None = None) -> keras.Model:
    """One style (``functional``; ``implementation`` is checked by the workload record)."""
    compute_dtype = inputs.compute_dtype(precision)
    inputs.check_compute_dtype(compute_dtype)
    policy = "mixed_bfloat16" if compute_dtype == "bfloat16" else "float32"
    image = keras.Input(shape=(config.input_size, config.input_size, inputs.INPUT_CHANNELS), name="image")
    x = layers.Conv2D(
        config.filters, 3, padding="same", activation="relu", data_format=_DATA_FORMAT, name="conv", dtype=policy
    )(image)
    x = layers.MaxPooling2D(2, data_format=_DATA_FORMAT, name="pool", dtype=policy)(x)
    x = layers.Flatten(data_format=_DATA_FORMAT, name="flatten", dtype=policy)(x)
    output = layers.Dense(1, name="output", dtype="float32")(x)
    return keras.Model(image, output, name="toy_functional")


def count_parameters(model: keras.Model) -> int:
    return int(sum(np.prod(variable.shape) for variable in model.trainable_weights))


def loss(predictions: Any, targets: Any) -> Any:
    """Per-sample squared error, ``(B,)`` for ``(B, 1)`` inputs (Keras averages over the batch itself)."""
    return keras.ops.mean(keras.ops.square(keras.ops.cast(predictions, "float32") - targets), axis=-1)


def predict(model: keras.Model, images: np.ndarray, batch_size: int = PREDICT_BATCH_SIZE) -> np.ndarray:
    """Stripe frequencies, float32 ``(N,)``, for ``(N, S, S)`` images, in inference mode."""
    x = inputs.as_model_input(np.asarray(images), images.shape[1])
    if len(x) == 0:
        return np.zeros((0,), np.float32)
    return np.asarray(model.predict(x[..., np.newaxis], batch_size=batch_size, verbose=0), np.float32).reshape(-1)
