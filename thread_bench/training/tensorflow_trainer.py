"""Plain TensorFlow side of the protocol: a hand-written ``tf.GradientTape`` loop (no ``keras.Model.fit``).

The twin of :mod:`thread_bench.training.torch_trainer` and :mod:`thread_bench.training.keras_trainer` (same
public names, same :class:`TrainResult`), for the workloads that have models written as ``tf.Module``s (the
digits workload's ``lowlevel`` and ``keras_layers`` styles). The training step is a ``tf.function``; the
optimizer is Keras' Adam (the same update rule and epsilon convention as a Keras run) applied to the module's
variables. Import this module only after ``KERAS_BACKEND=tensorflow`` is set (the entry point does it): the
``keras_layers`` style calls Keras layers, which must compute with TensorFlow.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from thread_bench import backends, tracking
from thread_bench.config import TrainConfig
from thread_bench.measure import environment_info
from thread_bench.models import inputs, pyfunc
from thread_bench.training.common import (
    ArraySplit,
    BatchSampler,
    BatchSource,
    EpochCallback,
    EpochMeter,
    ExplicitLoop,
    TrainingData,
    TrainResult,
    configure_backend,
    device_label,
    in_order,
    index_array,
    input_pipeline_on,
    pinned_requirements,
    run_epochs,
)
from thread_bench.training.options import TensorflowOptions
from thread_bench.workloads import Models

FRAMEWORK = "tensorflow"
#: The backend that does the work (meters, sync, precision): TensorFlow itself.
BACKEND = "tensorflow"

Batch = tuple[tf.Tensor, tf.Tensor]


def configure(options: TensorflowOptions, train: TrainConfig) -> dict[str, Any]:
    """Process-wide settings, before any model exists; returns the knob params to log.

    Raises:
        ValueError: a setting this machine cannot honour (bf16 on a GPU without it), or Keras on another backend.
    """
    if keras.backend.backend() != BACKEND:
        raise RuntimeError(
            f"Keras is running on {keras.backend.backend()!r}; plain TensorFlow needs it on tensorflow "
            "(python -m thread_bench.tensorflow_train sets KERAS_BACKEND before the first import)"
        )
    return configure_backend(BACKEND, train)


def versions() -> dict[str, str]:
    return {**backends.get(BACKEND).versions(), "keras": keras.__version__}


def backend() -> str:
    return BACKEND


def environment() -> dict[str, Any]:
    return environment_info(BACKEND)


def seed(seed: int) -> None:
    """Python's, NumPy's and TensorFlow's global generators (the low-level style draws its seeds from the last)."""
    keras.utils.set_random_seed(seed)


def build_model(models: Models, config: Any, precision: str = "fp32", implementation: str | None = None) -> Any:
    return models.build_model(config, precision, implementation)


def compile_model(
    model: Any, models: Models, config: Any, train: TrainConfig, options: TensorflowOptions
) -> dict[str, Any]:
    """Nothing to compile ahead (the steps are ``tf.function``s traced in :func:`fit`); returns the knobs: XLA
    or not, and the dtypes the model computes and outputs in (read back from one blank image)."""
    side = int(config.input_size)
    output = model(tf.zeros((1, side, side, inputs.INPUT_CHANNELS)), training=False)
    return {
        tracking.PARAM_JIT_COMPILE: options.jit_compile,
        tracking.PARAM_COMPUTE_DTYPE: str(getattr(model, "compute_dtype", output.dtype.name)),
        tracking.PARAM_OUTPUT_DTYPE: output.dtype.name,
    }


def input_pipeline(config: TrainConfig, data: TrainingData) -> str:
    """``config.input_pipeline`` resolved for this machine: ``device``, ``host`` or ``staged``."""
    return input_pipeline_on(BACKEND, config, data)


class DeviceBatches(BatchSource):
    """One split as TensorFlow tensors, cut into batches by index arrays (see ``TrainConfig.input_pipeline``).

    ``device``: the uint8 images and the labels are placed once on TensorFlow's default device; each batch is
    gathered and converted there. ``host``: gathered and converted in NumPy (``ArraySplit.batch``), then
    handed to TensorFlow. ``staged``: one pre-made batch per size (measurement only). The values are
    ``ArraySplit.batch``'s, bit for bit: the conversion is a gather from ``inputs.PIXEL_VALUES``.
    """

    def __init__(self, split: ArraySplit, pipeline: str) -> None:
        super().__init__(split, pipeline)
        if pipeline == "device":
            self.images = tf.constant(split.images)
            self.labels = tf.constant(split.labels)
            self.pixel_values = tf.constant(inputs.PIXEL_VALUES)

    def _gather(self, indices: np.ndarray | slice) -> Batch:
        if self.pipeline != "device":
            images, labels = self.split.batch(indices)
            return tf.constant(images[..., np.newaxis]), tf.constant(labels)
        index = tf.constant(index_array(indices, len(self.split)))
        images = tf.gather(self.pixel_values, tf.cast(tf.gather(self.images, index), tf.int32))
        return images[..., tf.newaxis], tf.gather(self.labels, index)[:, tf.newaxis]


def fit(
    model: Any,
    data: TrainingData,
    config: TrainConfig,
    options: TensorflowOptions,
    *,
    models: Models,
    on_epoch_end: EpochCallback,
) -> TrainResult:
    """Train with Adam and early stopping on ``models.loss``; on return ``model`` holds the best-validation weights.

    ``config.input_pipeline`` must be resolved (:func:`input_pipeline`).
    """
    optimizer = keras.optimizers.Adam(learning_rate=config.learning_rate, epsilon=config.adam_epsilon)
    variables = list(model.trainable_variables)

    @tf.function(jit_compile=options.jit_compile, reduce_retracing=True)
    def train_step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = models.loss(model(x, training=True), y)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return loss

    @tf.function(jit_compile=options.jit_compile, reduce_retracing=True)
    def eval_step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        return models.loss(model(x, training=False), y)

    sampler = BatchSampler(len(data.train), config.batch_size, config.seed)
    train_inputs = DeviceBatches(data.train, config.input_pipeline)
    val_inputs = DeviceBatches(data.val, config.input_pipeline)
    val_order = in_order(len(data.val), config.batch_size)

    def train_epoch(epoch: int, learning_rate: float) -> float:
        optimizer.learning_rate.assign(learning_rate)
        return _mean_loss(train_step, train_inputs.batches(sampler.batches(epoch)))

    loop = ExplicitLoop(
        train_epoch=train_epoch,
        evaluate=lambda: _mean_loss(eval_step, val_inputs.batches(val_order)),
        snapshot=lambda: [variable.numpy() for variable in variables],
        restore=lambda values: _assign(variables, values),
    )
    return run_epochs(loop, config, len(data.train), EpochMeter.on(BACKEND), on_epoch_end)


def _assign(variables: list[Any], values: list[np.ndarray]) -> None:
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)


def _mean_loss(step: Any, batches: Iterable[Batch]) -> float:
    """The sample-weighted mean of ``step``'s batch losses (accumulated on the device, read once)."""
    total = tf.zeros((), tf.float64)
    count = 0
    for x, y in batches:
        total += tf.cast(step(x, y), tf.float64) * len(y)
        count += len(y)
    return float(total.numpy()) / count


def device() -> str:
    return device_label(BACKEND)


def load_model(uri: str) -> Any:
    """A model :func:`log_model` logged (a pyfunc over its weights; :mod:`thread_bench.models.pyfunc`)."""
    return pyfunc.load_model(uri)


def log_model(
    model: Any, models: Models, config: Any, precision: str, example_images: np.ndarray, product: pyfunc.Product
) -> str:
    """Log ``model`` as a pyfunc over its framework-neutral weights (``models.get_weights``), rebuilt by
    ``models.build_model`` at load time (:mod:`thread_bench.models.pyfunc`); returns its model URI.

    Args:
        example_images: a few prepared uint8 ``(N, S, S)`` images, for the input example.
        product: the workload's serving, its preprocessing and the best epoch (the model's step).
    """
    return pyfunc.log_model(
        model,
        models,
        config,
        precision,
        example_images,
        product,
        framework=FRAMEWORK,
        backend=BACKEND,
        weights_format=pyfunc.CANONICAL_NPZ,
        requirements=pinned_requirements(versions()),
    )
