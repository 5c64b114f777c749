"""RegVGG in Keras as the thread-density workload's models (:class:`thread_bench.workloads.Models`).

The twin of :mod:`thread_bench.workloads.thread_density.torch_models`.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from thread_bench.config import PREDICT_BATCH_SIZE
from thread_bench.workloads.thread_density import keras_model, spec
from thread_bench.workloads.thread_density.config import ModelConfig


def build_model(config: ModelConfig, precision: str = "fp32", implementation: str | None = None) -> keras.Model:
    """RegVGG has one implementation per framework (``implementation`` is checked by the workload record)."""
    return keras_model.build_model(config, spec.compute_dtype(precision))


def count_parameters(model: keras.Model) -> int:
    return keras_model.count_parameters(model)


def loss(predictions: Any, targets: Any) -> Any:
    """Per-sample ``|predictions - targets| / targets``, ``(B,)`` for ``(B, 1)`` inputs: Keras averages a loss
    over the batch itself (with any sample weights), so a Keras loss returns one value per sample."""
    return keras.ops.mean(keras.ops.abs(predictions - targets) / targets, axis=-1)


def predict(model: keras.Model, images: np.ndarray, batch_size: int = PREDICT_BATCH_SIZE) -> np.ndarray:
    """Thread densities (threads/cm, float32 ``(N,)``) for ``(N, S, S)`` images, in inference mode."""
    return keras_model.predict(model, images, batch_size=batch_size)
