"""The digits models in plain TensorFlow, for a hand-written ``tf.GradientTape`` training loop (NHWC).

Two styles, both ``tf.Module`` subclasses built from ``spec.MODELS`` with ``trainable_variables`` (float32
``tf.Variable``s, canonical order) and ``__call__(x, training)`` (``(B, 28, 28, 1)`` float32 -> ``(B, 10)``
float32 logits), so the same loop drives either:

- ``lowlevel``: the variables themselves, keyed canonically (``conv1/kernel``), and a forward written with
  ``tf.nn.conv2d`` / ``max_pool2d`` / ``matmul``; dropout only when ``training`` is true, with masks from a
  seeded ``tf.random.Generator`` (stateless dropout, so a ``tf.function`` replays no hidden state).
- ``keras_layers``: the tutorial 001 style "TensorFlow with Keras layers and a GradientTape loop": the very
  layers of ``keras_models.make_layers`` called directly, without ``keras.Model`` / ``fit``. It needs Keras on
  the TensorFlow backend (its layers then compute with TensorFlow ops); building it under another backend
  raises ``ValueError``.

Initialisation is Keras' default in both (glorot-uniform kernels, zero biases). ``lowlevel`` draws its seed
from TensorFlow's global seed, which ``keras.utils.set_random_seed`` sets, so a seeded run is reproducible.

``precision="bf16"`` is implemented in both, as in Keras' ``mixed_bfloat16``: the hidden layers compute in
bfloat16 (their float32 variables are cast on read, so gradients reach them in float32), and the output layer
computes in float32 from a float32 copy of its input, so the logits and the loss are float32.

The models output logits; :func:`loss` applies the softmax (``sparse_softmax_cross_entropy_with_logits``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from thread_bench.config import PREDICT_BATCH_SIZE
from thread_bench.workloads.digits import keras_models, spec
from thread_bench.workloads.digits.config import DigitsModelConfig

FRAMEWORK = "tensorflow"
#: Upper bound of the seeds drawn for a ``lowlevel`` model (NumPy's and TensorFlow's generators accept them).
_SEED_BOUND = 2**31 - 1


class DigitsModule(tf.Module):
    """What both styles share: the forward walk over the spec and the bf16 casts; a subclass runs one layer."""

    def __init__(self, model_name: str, implementation: str, compute_dtype: str) -> None:
        super().__init__(name=f"digits_{model_name}_{implementation}")
        self.model_name = spec.model_spec(model_name).name
        self.implementation = implementation
        self.compute_dtype = compute_dtype

    def canonical_variables(self) -> dict[str, tf.Variable]:
        """The float32 variables by canonical key, in forward order."""
        raise NotImplementedError

    @property
    def trainable_variables(self) -> tuple[tf.Variable, ...]:
        """In canonical order (``tf.Module``'s own would be sorted by attribute name)."""
        return tuple(self.canonical_variables().values())

    def __call__(self, x: Any, training: bool = False) -> tf.Tensor:
        """Logits ``(B, 10)`` float32 of ``(B, 28, 28, 1)`` images; ``training`` switches dropout on."""
        model = spec.model_spec(self.model_name)
        x = tf.cast(x, self.compute_dtype)
        for layer in model.hidden:
            x = self.apply_layer(layer, x, training)
        return self.apply_layer(model.output, tf.cast(x, tf.float32), training)

    def apply_layer(self, layer: spec.LayerSpec, x: tf.Tensor, training: bool) -> tf.Tensor:
        """One layer's output; computes in ``x``'s dtype."""
        raise NotImplementedError


class LowLevelDigits(DigitsModule):
    """``tf.Variable``s and ``tf.nn`` ops only."""

    def __init__(self, model_name: str, compute_dtype: str, seed: int) -> None:
        super().__init__(model_name, "lowlevel", compute_dtype)
        self.parameters = {
            key: tf.Variable(value, name=key) for key, value in spec.random_weights(model_name, seed).items()
        }
        self.dropout_generator = tf.random.Generator.from_seed(seed)

    def canonical_variables(self) -> dict[str, tf.Variable]:
        return {key: self.parameters[key] for key in spec.weight_shapes(self.model_name)}

    def apply_layer(self, layer: spec.LayerSpec, x: tf.Tensor, training: bool) -> tf.Tensor:
        if isinstance(layer, spec.Pool):
            return tf.nn.max_pool2d(x, layer.size, layer.size, "VALID")
        if isinstance(layer, spec.Flatten):
            return tf.reshape(x, (-1, int(np.prod(x.shape[1:]))))  # NHWC order, as Keras; static H, W, C
        if isinstance(layer, spec.Dropout):
            if not training or layer.rate == 0.0:
                return x
            seed = self.dropout_generator.make_seeds(1)[:, 0]
            return tf.nn.experimental.stateless_dropout(x, layer.rate, seed=seed)
        kernel, bias = (
            tf.cast(self.parameters[spec.weight_key(layer.name, kind)], x.dtype) for kind in ("kernel", "bias")
        )
        if isinstance(layer, spec.Conv):
            x = tf.nn.conv2d(x, kernel, strides=1, padding="VALID") + bias
        else:
            x = tf.matmul(x, kernel) + bias
        return tf.nn.relu(x) if layer.activation == "relu" else x


class KerasLayersDigits(DigitsModule):
    """Keras layers (TensorFlow backend) called directly; their variables are ``tf.Variable``s underneath."""

    def __init__(self, model_name: str, compute_dtype: str) -> None:
        backend = keras.backend.backend()
        if backend != "tensorflow":
            raise ValueError(
                f"implementation 'keras_layers' needs Keras on the TensorFlow backend, but KERAS_BACKEND is {backend}"
            )
        super().__init__(model_name, "keras_layers", compute_dtype)
        self.keras_layers = keras_models.make_layers(model_name, compute_dtype)
        self._by_name = {layer.name: layer for layer in self.keras_layers}
        self(tf.zeros((1, *spec.INPUT_SHAPE)))  # builds the layers (creates their variables)

    def canonical_variables(self) -> dict[str, tf.Variable]:
        variables = keras_models.layer_variables(self._by_name, self.model_name)
        return {key: variable.value for key, variable in variables.items()}

    def apply_layer(self, layer: spec.LayerSpec, x: tf.Tensor, training: bool) -> tf.Tensor:
        return self._by_name[layer.name](x, training=training)


def build_model(config: DigitsModelConfig, precision: str = "fp32", implementation: str | None = None) -> DigitsModule:
    """``config.model`` as a ``tf.Module`` in the ``lowlevel`` or ``keras_layers`` style (``implementation``
    overrides the config's)."""
    style = spec.resolve_implementation(FRAMEWORK, config, implementation)
    compute_dtype = spec.compute_dtype(precision)
    if style == "keras_layers":
        return KerasLayersDigits(config.model, compute_dtype)
    seed = int(tf.random.uniform((), maxval=_SEED_BOUND, dtype=tf.int64))  # follows tf.random.set_seed
    return LowLevelDigits(config.model, compute_dtype, seed)


def count_parameters(model: DigitsModule) -> int:
    return sum(int(np.prod(variable.shape)) for variable in model.trainable_variables)


def loss(predictions: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """Batch-mean cross-entropy of ``(B, 10)`` logits against ``(B, 1)`` float32 class ids."""
    class_ids = tf.cast(tf.reshape(targets, (-1,)), tf.int32)
    logits = tf.cast(predictions, tf.float32)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=class_ids, logits=logits))


def predict(model: DigitsModule, images: np.ndarray, batch_size: int = PREDICT_BATCH_SIZE) -> np.ndarray:
    """float32 logits ``(N, 10)`` for ``(N, 28, 28)`` images (uint8, or float in [0, 1]); no dropout."""
    x = spec.model_input(images, batch_size)
    return spec.predict_batches(lambda batch: model(batch[..., np.newaxis], training=False).numpy(), x, batch_size)


def get_weights(model: DigitsModule) -> dict[str, np.ndarray]:
    """Canonical weights (copies; TensorFlow's NHWC layouts are the canonical ones)."""
    return {key: np.array(variable.numpy()) for key, variable in model.canonical_variables().items()}


def set_weights(model: DigitsModule, weights: Mapping[str, np.ndarray]) -> None:
    """Load canonical weights; a missing, unexpected or mis-shaped key raises before anything is written."""
    checked = spec.check_weights(model.model_name, weights)
    for key, variable in model.canonical_variables().items():
        variable.assign(checked[key])


def loss_and_gradients(
    model: DigitsModule, images: np.ndarray, targets: np.ndarray, training: bool = False
) -> tuple[float, dict[str, np.ndarray]]:
    """The batch-mean loss and its gradients (canonical keys and layout): one GradientTape step's pieces.

    Args:
        training: ``False`` (default) makes dropout the identity, so frameworks can be compared on one batch.
    """
    x, y = spec.training_batch(images, targets)
    variables = model.canonical_variables()
    with tf.GradientTape() as tape:
        value = loss(model(tf.constant(x[..., np.newaxis]), training=training), tf.constant(y))
    gradients = tape.gradient(value, list(variables.values()))
    return float(value), {key: np.asarray(g) for key, g in zip(variables, gradients, strict=True)}
