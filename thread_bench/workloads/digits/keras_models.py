"""The digits models in Keras 3: ``functional`` (``keras.Model(inputs, outputs)``) and ``sequential``
(``keras.Sequential``), both built from ``spec.MODELS`` with the same layer names.

Works on every Keras backend (tensorflow, jax, torch). Every layer pins ``data_format="channels_last"``, so a
``keras.json`` saying ``channels_first`` cannot change the flatten order that the canonical weights assume.
Initialisers are Keras' defaults (glorot-uniform kernels, zero biases), the distribution the other frameworks copy.

``precision="bf16"`` gives every layer but the output the ``mixed_bfloat16`` policy (bfloat16 compute, float32
weights), as RegVGG does; the output layer, hence the logits and the loss, stays float32.

The models output logits; :func:`loss` applies the softmax (``from_logits=True``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
from keras import layers

from thread_bench.config import PREDICT_BATCH_SIZE
from thread_bench.workloads.digits import spec
from thread_bench.workloads.digits.config import N_CLASSES, DigitsModelConfig

FRAMEWORK = "keras"
_DATA_FORMAT = "channels_last"


def make_layers(model_name: str, compute_dtype: str = "float32") -> list[layers.Layer]:
    """The Keras layers of ``model_name``, in forward order, unbuilt; also used by ``tensorflow_models``.

    Args:
        compute_dtype: ``bfloat16`` gives the hidden layers the ``mixed_bfloat16`` policy.
    """
    policy = "mixed_bfloat16" if compute_dtype == "bfloat16" else "float32"
    model = spec.model_spec(model_name)
    return [_make_layer(layer, "float32" if layer is model.output else policy) for layer in model.layers]


def _make_layer(layer: spec.LayerSpec, policy: str) -> layers.Layer:
    if isinstance(layer, spec.Conv):
        return layers.Conv2D(
            layer.filters,
            layer.kernel,
            padding="valid",
            activation=layer.activation,
            data_format=_DATA_FORMAT,
            kernel_initializer="glorot_uniform",
            bias_initializer="zeros",
            name=layer.name,
            dtype=policy,
        )
    if isinstance(layer, spec.Pool):
        return layers.MaxPooling2D(layer.size, data_format=_DATA_FORMAT, name=layer.name, dtype=policy)
    if isinstance(layer, spec.Flatten):
        return layers.Flatten(data_format=_DATA_FORMAT, name=layer.name, dtype=policy)
    if isinstance(layer, spec.Dropout):
        return layers.Dropout(layer.rate, name=layer.name, dtype=policy)
    return layers.Dense(
        layer.units,
        activation=layer.activation,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        name=layer.name,
        dtype=policy,
    )


def build_model(config: DigitsModelConfig, precision: str = "fp32", implementation: str | None = None) -> keras.Model:
    """``config.model`` as a Keras model: input ``(N, 28, 28, 1)`` float32 in [0, 1], output ``(N, 10)`` float32
    logits.

    Args:
        implementation: overrides ``config.implementation`` (``functional``, ``sequential`` or ``default``).
    """
    style = spec.resolve_implementation(FRAMEWORK, config, implementation)
    model_layers = make_layers(config.model, spec.compute_dtype(precision))
    inputs = keras.Input(shape=spec.INPUT_SHAPE, name=spec.INPUT_NAME)
    name = f"digits_{config.model}_{style}"
    if style == "sequential":
        return keras.Sequential([inputs, *model_layers], name=name)
    x = inputs
    for layer in model_layers:
        x = layer(x)
    return keras.Model(inputs, x, name=name)


def model_name_of(model: keras.Model) -> str:
    """The spec name a model was built from: its name is ``digits_<model>_<style>`` (kept by saving)."""
    parts = str(model.name).split("_")
    if len(parts) != 3 or parts[0] != "digits" or parts[1] not in spec.MODELS:
        raise ValueError(f"Keras model {model.name!r} was not built by digits.keras_models.build_model")
    return parts[1]


def count_parameters(model: keras.Model) -> int:
    return int(sum(np.prod(variable.shape) for variable in model.trainable_weights))


def loss(predictions: Any, targets: Any) -> Any:
    """Per-sample cross-entropy, shape ``(B,)`` (Keras averages it itself, weighting samples when asked).

    The argument order is every digits module's, ``(predictions, targets)``; Keras calls a loss as
    ``(y_true, y_pred)``, so ``model.compile`` needs ``loss=lambda y_true, y_pred: loss(y_pred, y_true)``.

    Args:
        predictions: ``(B, 10)`` logits.
        targets: ``(B, 1)`` float32 class ids (the shared training loop stores labels as float32).
    """
    class_ids = keras.ops.cast(keras.ops.reshape(targets, (-1,)), "int32")
    logits = keras.ops.cast(predictions, "float32")
    return keras.losses.sparse_categorical_crossentropy(class_ids, logits, from_logits=True)


def predict(model: keras.Model, images: np.ndarray, batch_size: int = PREDICT_BATCH_SIZE) -> np.ndarray:
    """float32 logits ``(N, 10)`` for ``(N, 28, 28)`` images (uint8, or float in [0, 1]); inference mode (no
    dropout)."""
    x = spec.model_input(images, batch_size)
    if len(x) == 0:
        return np.zeros((0, N_CLASSES), dtype=np.float32)
    return np.asarray(model.predict(x[..., np.newaxis], batch_size=batch_size, verbose=0), dtype=np.float32)


def layers_by_name(model: keras.Model) -> dict[str, layers.Layer]:
    return {layer.name: layer for layer in model.layers}


def layer_variables(named_layers: Mapping[str, layers.Layer], model_name: str) -> dict[str, Any]:
    """The Keras variables of ``model_name``'s weights in canonical order and keys (``conv1/kernel``).

    Keras' own layouts are the canonical ones, so no conversion is needed; also used by ``tensorflow_models``.
    """
    variables = {}
    for layer in spec.weighted_layers(model_name):
        by_kind = {variable.name: variable for variable in named_layers[layer.name].weights}
        for kind in spec.WEIGHT_KINDS:
            variables[spec.weight_key(layer.name, kind)] = by_kind[kind]
    return variables


def get_weights(model: keras.Model) -> dict[str, np.ndarray]:
    """Canonical weights (copies)."""
    variables = layer_variables(layers_by_name(model), model_name_of(model))
    return {key: np.array(keras.ops.convert_to_numpy(variable)) for key, variable in variables.items()}


def set_weights(model: keras.Model, weights: Mapping[str, np.ndarray]) -> None:
    """Load canonical weights; a missing, unexpected or mis-shaped key raises before anything is written."""
    model_name = model_name_of(model)
    checked = spec.check_weights(model_name, weights)
    for key, variable in layer_variables(layers_by_name(model), model_name).items():
        variable.assign(checked[key])


def loss_and_gradients(
    model: keras.Model, images: np.ndarray, targets: np.ndarray, training: bool = False
) -> tuple[float, dict[str, np.ndarray]]:
    """The batch-mean loss and its gradients (canonical keys and layout), without changing the model.

    ``stateless_call`` keeps the model untouched; only the differentiation is backend-specific.

    Args:
        training: ``False`` (default) makes dropout the identity, so frameworks can be compared on one batch.
    """
    images, y = spec.training_batch(images, targets)
    x = images[..., np.newaxis]
    trainable = model.trainable_variables
    non_trainable = [variable.value for variable in model.non_trainable_variables]

    def loss_of(values: list[Any]) -> Any:
        predictions, _ = model.stateless_call(values, non_trainable, x, training=training)
        return keras.ops.mean(loss(predictions, y))

    value, gradients = _differentiate(loss_of, [variable.value for variable in trainable])
    index = {id(variable): i for i, variable in enumerate(trainable)}
    variables = layer_variables(layers_by_name(model), model_name_of(model))
    return value, {key: gradients[index[id(variable)]] for key, variable in variables.items()}


def _differentiate(loss_of: Any, values: list[Any]) -> tuple[float, list[np.ndarray]]:
    """``loss_of(values)`` and its gradients with respect to ``values``, with the active backend's autodiff."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tensors = [tf.convert_to_tensor(value) for value in values]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            result = loss_of(tensors)
        return float(result), [np.asarray(g) for g in tape.gradient(result, tensors)]
    if backend == "jax":
        import jax

        # One compiled function: eager JAX would compile every op separately (twice as slow here).
        result, gradients = jax.jit(jax.value_and_grad(loss_of))(values)
        return float(result), [np.asarray(g) for g in gradients]
    if backend == "torch":
        leaves = [value.detach().clone().requires_grad_(True) for value in values]
        result = loss_of(leaves)
        result.backward()
        return float(result.detach()), [leaf.grad.detach().cpu().numpy() for leaf in leaves]
    raise ValueError(f"unsupported Keras backend {backend!r} (expected tensorflow, jax or torch)")
