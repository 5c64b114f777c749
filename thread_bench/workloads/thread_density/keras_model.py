"""RegVGG as a Keras 3 functional model (NHWC), the twin of ``torch_model``.

Works on every Keras backend (tensorflow, jax, torch); the backend is whatever the user's environment
chose before ``keras`` was first imported. Every layer pins ``data_format="channels_last"`` so a
``keras.json`` that says ``channels_first`` cannot silently change the flatten order.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import layers

from thread_bench.config import PREDICT_BATCH_SIZE
from thread_bench.workloads.thread_density import spec
from thread_bench.workloads.thread_density.config import ModelConfig

_DATA_FORMAT = "channels_last"


def dtype_policy(compute_dtype: str) -> str:
    """The Keras dtype policy of the hidden layers: ``mixed_bfloat16`` (bfloat16 compute, float32 weights)
    or ``float32``. The output layer is always float32."""
    spec.check_compute_dtype(compute_dtype)
    return "mixed_bfloat16" if compute_dtype == "bfloat16" else "float32"


def inception_module(
    inputs: Any, filters: int, name: str, config: ModelConfig | None = None, policy: str = "float32"
) -> Any:
    """Three parallel Conv2D(k) -> BatchNorm -> ReLU branches, k = 3, 5, 7, concatenated on channels.

    Args:
        inputs: a symbolic NHWC tensor (``keras.Input`` or a layer output).
        filters: filters per branch; the output has ``3 * filters`` channels.
        name: prefix of the layer names, e.g. ``stage1_module2``.
        config: supplies the BatchNorm momentum and epsilon (defaults: ``ModelConfig()``).
        policy: the layers' dtype policy (see :func:`dtype_policy`).
    """
    config = config or ModelConfig()
    branches = []
    for kernel_size in spec.KERNEL_SIZES:
        x = layers.Conv2D(
            filters,
            kernel_size,
            padding="same",
            data_format=_DATA_FORMAT,
            kernel_initializer="he_normal",
            bias_initializer="zeros",
            name=spec.conv_name(name, kernel_size),
            dtype=policy,
        )(inputs)
        x = layers.BatchNormalization(
            axis=-1,
            momentum=config.batchnorm_momentum,
            epsilon=config.batchnorm_eps,
            name=spec.batchnorm_name(name, kernel_size),
            dtype=policy,
        )(x)
        branches.append(layers.ReLU(name=f"{name}_relu{kernel_size}", dtype=policy)(x))
    return layers.Concatenate(axis=-1, name=f"{name}_concat", dtype=policy)(branches)


def build_model(config: ModelConfig, compute_dtype: str = "float32") -> keras.Model:
    """The network of docs/DESIGN.md §3: input ``(H, W, 1)`` float32 in [0, 1], output ``(N, 1)`` float32.

    Args:
        compute_dtype: ``bfloat16`` gives every layer but the output the ``mixed_bfloat16`` policy (the twin
            of ``torch_model.RegVGG``'s autocast); the output layer, hence the loss, stays float32.
    """
    policy = dtype_policy(compute_dtype)
    inputs = keras.Input(shape=(config.input_size, config.input_size, spec.INPUT_CHANNELS), name=spec.INPUT_NAME)
    x = inputs
    for stage_number in range(1, len(spec.STAGE_MODULES) + 1):
        for module in (m for m in spec.modules(config) if m.stage == stage_number):
            x = inception_module(x, module.filters, module.name, config, policy)
        x = layers.MaxPooling2D(
            spec.POOL_SIZE, data_format=_DATA_FORMAT, name=spec.pool_name(stage_number), dtype=policy
        )(x)
        # Element-wise dropout (Keras `Dropout` <=> torch `nn.Dropout`), not channel-wise SpatialDropout2D.
        x = layers.Dropout(config.dropout, name=spec.dropout_name(stage_number), dtype=policy)(x)
    x = layers.Flatten(data_format=_DATA_FORMAT, name=spec.FLATTEN_NAME, dtype=policy)(x)
    for name, _, n_out in spec.dense_shapes(config):
        is_output = name == spec.DENSE_NAMES[-1]
        x = layers.Dense(
            n_out,
            activation=None if is_output else "relu",
            kernel_initializer="glorot_uniform",
            bias_initializer="zeros",
            name=name,
            dtype="float32" if is_output else policy,
        )(x)
    return keras.Model(inputs, x, name="regvgg")


def compute_dtype_of(model: keras.Model) -> tuple[str, str]:
    """(hidden layers' compute dtype, output layer's compute dtype), read back from the built model."""
    hidden = model.get_layer(spec.conv_name(spec.modules(ModelConfig())[0].name, spec.KERNEL_SIZES[0]))
    return str(hidden.dtype_policy.compute_dtype), str(model.get_layer(spec.DENSE_NAMES[-1]).compute_dtype)


def count_parameters(model: keras.Model) -> int:
    """Trainable parameters (BatchNorm moving statistics excluded)."""
    return int(sum(np.prod(variable.shape) for variable in model.trainable_weights))


def predict(model: keras.Model, images: np.ndarray, batch_size: int = PREDICT_BATCH_SIZE) -> np.ndarray:
    """Thread densities for ``(N, H, W)`` images (uint8, or float in [0, 1]); returns float32 ``(N,)``.

    Runs in inference mode (BatchNorm moving statistics, no dropout).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    input_size = int(model.inputs[0].shape[1])
    x = spec.as_model_input(images, input_size)[..., np.newaxis]
    if len(x) == 0:
        return np.zeros((0,), dtype=np.float32)
    outputs = model.predict(x, batch_size=batch_size, verbose=0)
    return np.asarray(outputs, dtype=np.float32).reshape(-1)
