"""Keras side of the protocol: ``model.fit()`` with callbacks, fed in the shared batch order.

The twin of :mod:`thread_bench.training.torch_trainer` (same public names, same :class:`TrainResult`). The
model, its loss and its prediction come from the workload's Keras models module (``models``), so nothing here
names a workload.
Import this module only after ``KERAS_BACKEND`` is set (the ``keras_train`` entry point does it): Keras
reads the variable once, at its first import.
"""

from __future__ import annotations

import importlib
from typing import Any

import keras
import numpy as np

from thread_bench import backends, tracking
from thread_bench.config import TrainConfig
from thread_bench.measure import environment_info
from thread_bench.models import inputs, pyfunc
from thread_bench.training.common import (
    ArraySplit,
    BatchSampler,
    EpochCallback,
    EpochMeter,
    EpochProtocol,
    TrainingData,
    TrainResult,
    configure_backend,
    device_label,
    in_order,
    index_array,
    input_pipeline_on,
    pinned_requirements,
    staged_batch,
)
from thread_bench.training.options import KerasOptions
from thread_bench.workloads import Models

FRAMEWORK = "keras"


def backend() -> str:
    return str(keras.backend.backend())


def configure(options: KerasOptions, train: TrainConfig) -> dict[str, Any]:
    """Process-wide settings, before any model exists; returns the knob params to log.

    The backend's settings (``common.configure_backend``) come first, before anything touches the GPU:
    TensorFlow's memory growth, for one, must be on before TensorFlow starts.

    Raises:
        ValueError: a setting this machine or backend cannot honour (bf16 on a GPU without it;
            ``input_pipeline=device`` on TensorFlow).
    """
    if backend() != options.backend:
        raise RuntimeError(
            f"Keras is running on {backend()!r} but backend={options.backend!r} was asked for: Keras picks its "
            "backend at its first import; start a fresh process (python -m thread_bench.keras_train)"
        )
    if options.backend == "tensorflow" and train.input_pipeline == "device":
        raise ValueError(
            "input_pipeline=device is not available for Keras on TensorFlow: Keras feeds a PyDataset through "
            "tf.data, which brings every batch to the host; use host (prefetched by tf.data) or auto"
        )
    return configure_backend(options.backend, train)


def versions() -> dict[str, str]:
    return {"keras": keras.__version__, **backends.get(backend()).versions()}


def environment() -> dict[str, Any]:
    return {**environment_info(backend()), "keras_version": keras.__version__}


def seed(seed: int) -> None:
    """Keras' own seeding: Python, NumPy and the backend's generators."""
    keras.utils.set_random_seed(seed)


def build_model(models: Models, config: Any, precision: str = "fp32", implementation: str | None = None) -> keras.Model:
    return models.build_model(config, precision, implementation)


def compile_model(
    model: keras.Model, models: Models, config: Any, train: TrainConfig, options: KerasOptions
) -> dict[str, Any]:
    """``model.compile`` with Adam (same epsilon as PyTorch) and the workload's loss; returns the resolved knobs."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=train.learning_rate, epsilon=train.adam_epsilon),
        loss=WorkloadLoss(models.__name__),
        jit_compile=options.jit_compile_setting,
    )
    # "auto" is resolved by Keras (False for TensorFlow on a CPU); log what it chose.
    hidden_dtype, output_dtype = _compute_dtypes(model)
    return {
        tracking.PARAM_JIT_COMPILE: bool(model.jit_compile),
        tracking.PARAM_COMPUTE_DTYPE: hidden_dtype,
        tracking.PARAM_OUTPUT_DTYPE: output_dtype,
    }


@keras.saving.register_keras_serializable(package="thread_bench", name="WorkloadLoss")
class WorkloadLoss(keras.losses.Loss):
    """A workload's per-sample loss (``models.loss(predictions, targets)``) as a Keras loss, named by its models
    module so that a compiled model can be copied (``clone_model``) and saved: Keras serialises the loss by name
    and recreates it from :meth:`get_config`. Keras averages the per-sample values over the batch."""

    def __init__(self, models: str, **kwargs: Any) -> None:
        super().__init__(name=_loss_name(models), **{k: v for k, v in kwargs.items() if k != "name"})
        self.models = models
        self._loss = importlib.import_module(models).loss

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return self._loss(y_pred, y_true)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "models": self.models}


def _loss_name(models: str) -> str:
    """The loss's name: the package of its models module, the workload's (``digits`` for
    ``thread_bench.workloads.digits.keras_models``), or the module itself when it is in no package (a plug-in's
    models in a single top-level module)."""
    package, _, module = models.rpartition(".")
    return package.rpartition(".")[2] or module


def _compute_dtypes(model: keras.Model) -> tuple[str, str]:
    """(the first weighted layer's compute dtype, the output layer's), read back from the built model."""
    weighted = [layer for layer in model.layers if layer.weights]
    return str(weighted[0].dtype_policy.compute_dtype), str(weighted[-1].compute_dtype)


def input_pipeline(config: TrainConfig, data: TrainingData) -> str:
    """``config.input_pipeline`` resolved for this machine: ``device``, ``host`` or ``staged``.

    On TensorFlow ``auto`` means ``host``: Keras wraps a PyDataset in ``tf.data.Dataset.from_generator``, which
    converts every batch to NumPy, so device-resident batches would make a round trip through the host;
    ``tf.data`` prefetches the host batches on a thread of its own instead.
    """
    if backend() == "tensorflow":
        return "host" if config.input_pipeline == "auto" else config.input_pipeline
    return input_pipeline_on(backend(), config, data)


class _Batches(keras.utils.PyDataset):
    """Batch ``i`` of the current epoch in the shared :class:`BatchSampler` order (or in file order).

    With ``device`` (JAX and torch backends) the uint8 images and the labels are uploaded once and each batch
    is gathered and converted on the device; with ``host`` it is gathered and converted in NumPy; ``staged``
    returns one pre-made batch per size (measurement only). The values are ``ArraySplit.batch``'s, bit for
    bit (see ``inputs.PIXEL_VALUES``).
    """

    def __init__(self, split: ArraySplit, batch_size: int, pipeline: str, sampler: BatchSampler | None = None):
        super().__init__(workers=1, use_multiprocessing=False)
        self.split = split
        self.sampler = sampler
        self.pipeline = pipeline
        self.order = in_order(len(split), batch_size)
        if pipeline == "device":
            self.images = keras.ops.convert_to_tensor(split.images)
            self.labels = keras.ops.convert_to_tensor(split.labels)
            self.pixel_values = keras.ops.convert_to_tensor(inputs.PIXEL_VALUES)
        self._staged: dict[int, tuple[Any, Any]] = {}
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        # The epoch is set by a callback at on_epoch_begin, before Keras asks for the epoch's first batch,
        # so the order never depends on when Keras calls PyDataset.on_epoch_end or how far it prefetches.
        self.epoch = epoch
        self._batches: list[np.ndarray] | list[slice] = (
            self.sampler.batches(epoch) if self.sampler is not None else self.order
        )

    def __len__(self) -> int:
        return len(self._batches)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        return self.batch(self._batches[index])

    def batch(self, indices: np.ndarray | slice) -> tuple[Any, Any]:
        """Images ``(B, S, S, 1)`` float32 in [0, 1] and labels ``(B, 1)``."""
        if self.pipeline == "staged":
            return staged_batch(self._staged, indices, len(self.split), self._gather)
        return self._gather(indices)

    def _gather(self, indices: np.ndarray | slice) -> tuple[Any, Any]:
        if self.pipeline != "device":
            images, labels = self.split.batch(indices)
            return images[..., np.newaxis], labels
        index = keras.ops.convert_to_tensor(index_array(indices, len(self.split)))
        images = keras.ops.take(self.pixel_values, keras.ops.take(self.images, index, axis=0))
        labels = keras.ops.take(self.labels, index, axis=0)
        return keras.ops.expand_dims(images, -1), keras.ops.expand_dims(labels, -1)


class _SetEpoch(keras.callbacks.Callback):
    def __init__(self, batches: _Batches) -> None:
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.batches.set_epoch(epoch)


class _FollowProtocol(keras.callbacks.Callback):
    """``fit``'s hooks driving the shared :class:`EpochProtocol`, with the calls ``common.run_epochs`` makes
    around an explicit loop: the scheduled learning rate and the meters at the start of an epoch (last of the
    callbacks), the validation that ``fit`` runs between ``on_test_begin`` and ``on_test_end``, the epoch's
    record and the stopping decision at its end, the best weights restored when training ends."""

    def __init__(self, protocol: EpochProtocol) -> None:
        super().__init__()
        self.protocol = protocol

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.model.optimizer.learning_rate = self.protocol.learning_rate(epoch)
        self.protocol.begin_epoch()

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.protocol.begin_validation()

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        self.protocol.end_validation()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        if self.protocol.end_epoch(epoch, float(logs["loss"]), float(logs["val_loss"])):
            self.model.stop_training = True

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.protocol.restore_best()


def fit(
    model: keras.Model,
    data: TrainingData,
    config: TrainConfig,
    options: KerasOptions,
    *,
    models: Models,
    on_epoch_end: EpochCallback,
) -> TrainResult:
    """Train a compiled model with ``fit``; on return ``model`` holds the best-validation weights.

    ``models`` is not used: the loss was given to ``compile`` (:func:`compile_model`); it is a parameter for
    the twins' sake.

    ``config.input_pipeline`` must be resolved (:func:`input_pipeline`).
    """
    sampler = BatchSampler(len(data.train), config.batch_size, config.seed)
    train_batches = _Batches(data.train, config.batch_size, config.input_pipeline, sampler)
    val_batches = _Batches(data.val, config.batch_size, config.input_pipeline)
    protocol = EpochProtocol(config, EpochMeter.on(options.backend), on_epoch_end, model.get_weights, model.set_weights)
    with protocol.measuring():
        # shuffle=False: the order is the sampler's; Keras' own shuffle would permute the batches again.
        model.fit(
            train_batches,
            validation_data=val_batches,
            epochs=config.epochs,
            shuffle=False,
            callbacks=[_SetEpoch(train_batches), _FollowProtocol(protocol)],
            verbose=0,
        )
    return protocol.result(len(data.train))


def device() -> str:
    """Keras places a model where its backend does (the first GPU when there is one)."""
    return device_label(backend())


def load_model(uri: str) -> keras.Model:
    """A logged model: a pyfunc over its weights (:mod:`thread_bench.models.pyfunc`), or, logged before version 2
    of the suite, MLflow's Keras flavor, loaded uncompiled (prediction needs no loss or optimizer, and not
    compiling spares resolving the training's custom loss function by name)."""
    import mlflow.keras

    if pyfunc.is_pyfunc(uri):
        return pyfunc.load_model(uri)
    return mlflow.keras.load_model(uri, load_model_kwargs={"compile": False})


def log_model(
    model: keras.Model, models: Models, config: Any, precision: str, example_images: np.ndarray, product: pyfunc.Product
) -> str:
    """Log ``model`` as a pyfunc over its weights (``get_weights``), rebuilt by ``models.build_model`` at load
    time on the backend it was trained on (:mod:`thread_bench.models.pyfunc`): no optimizer, no loss, nothing a
    fresh process cannot find. Returns its model URI.

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
        backend=backend(),
        weights_format=pyfunc.KERAS_WEIGHTS,
        requirements=pinned_requirements(versions()),
    )
