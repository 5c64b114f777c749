"""The digits workload's three reference networks, each described once as data, and what all their builders share.

Every implementation (``keras_models``: functional, sequential; ``torch_models``: module; ``tensorflow_models``:
lowlevel, keras_layers) builds its network by walking :data:`MODELS`, so an architecture change is one edit here
and the parity tests prove that every style followed it.

- ``cnn3`` (tutorial 001, the Keras "mnist_convnet" example): two 3x3 convolutions (32, 64), 2x2 max-pooling after
  each, dropout 0.5, Dense 10; 34,826 parameters.
- ``cnn5`` (002): two 5x5 convolutions (32, 64) with 'valid' padding as in the PyTorch tutorial
  (28 -> 24 -> 12 -> 8 -> 4, flatten 1,024), Dense 64, Dense 10; 118,346 parameters.
- ``mlp`` (003): flatten 784, Dense 128, Dense 64, Dense 10; 109,386 parameters.

Every model outputs LOGITS, with no softmax layer: the softmax lives in the loss (``from_logits=True`` in Keras,
``F.cross_entropy`` in PyTorch, ``sparse_softmax_cross_entropy_with_logits`` in TensorFlow), which computes
log-softmax stably (a softmax layer followed by a log underflows for confident predictions), and makes "the same
logits" a comparison every framework can be held to.

Layer names are the contract between implementations: the Keras layer ``conv1`` is the PyTorch module ``conv1``
and the TensorFlow variables ``conv1/kernel``, ``conv1/bias``. Weights travel between them in one
framework-neutral CANONICAL layout: ``dict[str, np.ndarray]`` keyed ``"<layer>/kernel"`` and ``"<layer>/bias"``,
in Keras' layout (conv kernels HWIO, Dense kernels ``(in, out)``, and the Dense that follows the Flatten with
its rows in NHWC flatten order); each module converts to and from its own layout.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from thread_bench.config import PRECISIONS
from thread_bench.models import inputs as model_inputs
from thread_bench.workloads.digits.config import (
    DEFAULT_IMPLEMENTATION,
    IMAGE_SIZE,
    IMPLEMENTATIONS,
    MODEL_NAMES,
    N_CLASSES,
    DigitsModelConfig,
)

#: Grayscale images; every implementation takes ``(N, 28, 28)`` arrays and adds the channel axis itself.
INPUT_CHANNELS = 1
#: Input of the Keras-style models: NHWC without the batch axis.
INPUT_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, INPUT_CHANNELS)
INPUT_NAME = "image"
#: The two weights of every weighted layer, in Keras' order (``layer.weights``).
WEIGHT_KINDS = ("kernel", "bias")
#: Hidden-layer activations by name (``None``: linear, the output layer). One name for every framework.
ACTIVATIONS = ("relu", None)
#: Standard deviation of the random biases of :func:`random_weights` when asked for (``bias_std``): nonzero,
#: so that a transfer that forgets a bias (zero in every framework's init) cannot pass a parity test.
TEST_BIAS_STD = 0.1


@dataclass(frozen=True)
class Conv:
    """2-D convolution, stride 1, 'valid' padding, then ``activation``."""

    name: str
    filters: int
    kernel: int
    activation: str | None = "relu"


@dataclass(frozen=True)
class Pool:
    """Max-pooling ``size`` x ``size``, stride ``size``, 'valid' (floor rounding in every framework)."""

    name: str
    size: int


@dataclass(frozen=True)
class Flatten:
    """To ``(N, H * W * C)``; Keras and TensorFlow flatten NHWC, PyTorch NCHW (see ``post_flatten_dense``)."""

    name: str = "flatten"


@dataclass(frozen=True)
class Dropout:
    """Element-wise dropout (Keras ``Dropout`` = ``nn.Dropout`` = ``tf.nn.dropout``); identity at inference."""

    name: str
    rate: float


@dataclass(frozen=True)
class Dense:
    name: str
    units: int
    activation: str | None = None


LayerSpec = Conv | Pool | Flatten | Dropout | Dense
WeightedLayer = Conv | Dense


@dataclass(frozen=True)
class ModelSpec:
    name: str
    #: The reference tutorial it reproduces.
    tutorial: str
    layers: tuple[LayerSpec, ...]

    @property
    def output(self) -> Dense:
        """The linear output layer (logits): always the last layer, and always float32."""
        last = self.layers[-1]
        assert isinstance(last, Dense)
        return last

    @property
    def hidden(self) -> tuple[LayerSpec, ...]:
        """Every layer but the output: the layers that compute in bfloat16 under ``precision="bf16"``."""
        return self.layers[:-1]


MODELS: dict[str, ModelSpec] = {
    "cnn3": ModelSpec(
        "cnn3",
        "001: the Keras mnist_convnet example",
        (
            Conv("conv1", 32, 3),
            Pool("pool1", 2),
            Conv("conv2", 64, 3),
            Pool("pool2", 2),
            Flatten(),
            Dropout("dropout", 0.5),
            Dense("output", N_CLASSES),
        ),
    ),
    "cnn5": ModelSpec(
        "cnn5",
        "002: two 5x5 convolutions and Dense 64, 'valid' padding as in the PyTorch tutorial",
        (
            Conv("conv1", 32, 5),
            Pool("pool1", 2),
            Conv("conv2", 64, 5),
            Pool("pool2", 2),
            Flatten(),
            Dense("dense1", 64, "relu"),
            Dense("output", N_CLASSES),
        ),
    ),
    "mlp": ModelSpec(
        "mlp",
        "003: a 784-128-64-10 perceptron",
        (Flatten(), Dense("dense1", 128, "relu"), Dense("dense2", 64, "relu"), Dense("output", N_CLASSES)),
    ),
}


def _check_models() -> None:
    """The invariants every builder relies on, checked once at import."""
    assert tuple(MODELS) == MODEL_NAMES, "config.MODEL_NAMES and spec.MODELS disagree"
    for model in MODELS.values():
        names = [layer.name for layer in model.layers]
        assert len(set(names)) == len(names), f"{model.name}: duplicate layer names"
        assert model.output.units == N_CLASSES and model.output.activation is None, f"{model.name}: output layer"
        assert sum(isinstance(layer, Flatten) for layer in model.layers) == 1, f"{model.name}: one Flatten"
        for layer in model.layers:
            assert getattr(layer, "activation", None) in ACTIVATIONS, f"{model.name}.{layer.name}: activation"


_check_models()


def model_spec(model_name: str) -> ModelSpec:
    if model_name not in MODELS:
        raise ValueError(f"unknown digits model {model_name!r} (expected one of {list(MODELS)})")
    return MODELS[model_name]


# ---------------------------------------------------------------------------------------------------------
# Shapes, weights and parameter counts


def layer_input_shapes(model_name: str) -> dict[str, tuple[int, ...]]:
    """The shape (NHWC, no batch axis) of each layer's input, by layer name, and of the logits under ``"logits"``."""
    shape: tuple[int, ...] = INPUT_SHAPE
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in model_spec(model_name).layers:
        shapes[layer.name] = shape
        if isinstance(layer, Conv):
            height, width, _ = shape
            shape = (height - layer.kernel + 1, width - layer.kernel + 1, layer.filters)
        elif isinstance(layer, Pool):
            height, width, channels = shape
            shape = (height // layer.size, width // layer.size, channels)
        elif isinstance(layer, Flatten):
            shape = (int(np.prod(shape)),)
        elif isinstance(layer, Dense):
            shape = (layer.units,)
    shapes["logits"] = shape
    return shapes


def weighted_layers(model_name: str) -> tuple[WeightedLayer, ...]:
    return tuple(layer for layer in model_spec(model_name).layers if isinstance(layer, Conv | Dense))


def weight_key(layer_name: str, kind: str) -> str:
    """The canonical key of a layer's weight: ``conv1/kernel``."""
    return f"{layer_name}/{kind}"


def layer_of_key(key: str) -> str:
    return key.split("/")[0]


def weight_shapes(model_name: str) -> dict[str, tuple[int, ...]]:
    """Canonical (Keras-layout) shape of every weight, in forward order: conv HWIO, Dense ``(in, out)``."""
    inputs = layer_input_shapes(model_name)
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in weighted_layers(model_name):
        if isinstance(layer, Conv):
            kernel: tuple[int, ...] = (layer.kernel, layer.kernel, inputs[layer.name][-1], layer.filters)
            units = layer.filters
        else:
            kernel, units = (inputs[layer.name][0], layer.units), layer.units
        shapes[weight_key(layer.name, "kernel")] = kernel
        shapes[weight_key(layer.name, "bias")] = (units,)
    return shapes


def count_parameters_analytic(model_name: str) -> int:
    """Trainable parameters: kernels and biases (pooling, flatten and dropout have none)."""
    return sum(int(np.prod(shape)) for shape in weight_shapes(model_name).values())


def post_flatten_dense(model_name: str) -> tuple[str, tuple[int, int, int]]:
    """The Dense layer that consumes the flattened features, and the ``(H, W, C)`` map that was flattened.

    Its kernel rows are in NHWC order in the canonical layout; PyTorch flattens NCHW, so its columns are a
    permutation of them (:func:`hwc_rows_to_chw`). For ``mlp`` (C = 1) the permutation is the identity.
    """
    layers, inputs = model_spec(model_name).layers, layer_input_shapes(model_name)
    flatten_index = next(i for i, layer in enumerate(layers) if isinstance(layer, Flatten))
    dense = next(layer for layer in layers[flatten_index:] if isinstance(layer, Dense))
    height, width, channels = inputs[layers[flatten_index].name]
    return dense.name, (height, width, channels)


def hwc_rows_to_chw(kernel: np.ndarray, hwc: tuple[int, int, int]) -> np.ndarray:
    """Reorder the rows of a ``(H*W*C, out)`` kernel from NHWC flatten order to NCHW flatten order."""
    height, width, channels = hwc
    return kernel.reshape(height, width, channels, -1).transpose(2, 0, 1, 3).reshape(kernel.shape)


def chw_rows_to_hwc(kernel: np.ndarray, hwc: tuple[int, int, int]) -> np.ndarray:
    """The inverse of :func:`hwc_rows_to_chw`."""
    height, width, channels = hwc
    return kernel.reshape(channels, height, width, -1).transpose(1, 2, 0, 3).reshape(kernel.shape)


def check_weights(model_name: str, weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Validate canonical weights for ``model_name``; returns them as contiguous float32 arrays in forward order.

    Everything is checked before a module writes anything, so a bad dict leaves the model untouched.
    """
    expected = weight_shapes(model_name)
    unexpected = sorted(set(weights) - set(expected))
    if unexpected:
        raise ValueError(
            f"weights for model {model_name!r} have unexpected keys {unexpected} (expected {list(expected)})"
        )
    checked: dict[str, np.ndarray] = {}
    for key, shape in expected.items():
        if key not in weights:
            raise ValueError(f"weights for model {model_name!r} lack {key!r} (layer {layer_of_key(key)!r})")
        value = np.asarray(weights[key])
        if value.shape != shape:
            raise ValueError(
                f"weights for model {model_name!r}: {key!r} (layer {layer_of_key(key)!r}) has shape {value.shape}, "
                f"expected {shape}"
            )
        if not np.issubdtype(value.dtype, np.floating):
            raise ValueError(f"weights for model {model_name!r}: {key!r} has dtype {value.dtype}, expected float")
        checked[key] = np.ascontiguousarray(value, dtype=np.float32)
    return checked


def glorot_limit(shape: tuple[int, ...]) -> float:
    """Keras' ``glorot_uniform`` bound sqrt(6 / (fan_in + fan_out)) for a canonical kernel (HWIO or (in, out)).

    The receptive field multiplies both fans (as in Keras, and in ``nn.init.xavier_uniform_`` for OIHW), so
    every framework draws its initial kernels from the same distribution.
    """
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
    return float(np.sqrt(6.0 / (fan_in + fan_out)))


def random_weights(model_name: str, seed: int, bias_std: float = 0.0) -> dict[str, np.ndarray]:
    """Canonical weights drawn from Keras' default initialisers: glorot-uniform kernels, zero biases.

    Args:
        bias_std: draw the biases from normal(0, bias_std) instead (tests use :data:`TEST_BIAS_STD`).
    """
    rng = np.random.default_rng(seed)
    weights = {}
    for key, shape in weight_shapes(model_name).items():
        if key.endswith("/kernel"):
            limit = glorot_limit(shape)
            weights[key] = rng.uniform(-limit, limit, shape).astype(np.float32)
        else:
            weights[key] = rng.normal(0.0, bias_std, shape).astype(np.float32)
    return weights


# ---------------------------------------------------------------------------------------------------------
# Implementation styles and precision


def implementations(model_name: str, framework: str) -> tuple[str, ...]:
    """The styles ``model_name`` is implemented in under ``framework``: every style for ``cnn3`` (the tutorial that
    shows them all), the framework's first style for the others."""
    model_spec(model_name)
    if framework not in IMPLEMENTATIONS:
        raise ValueError(f"unknown framework {framework!r} for digits (expected one of {list(IMPLEMENTATIONS)})")
    styles = IMPLEMENTATIONS[framework]
    return styles if model_name == "cnn3" else styles[:1]


def resolve_implementation(framework: str, config: DigitsModelConfig, implementation: str | None = None) -> str:
    """The concrete style ``config.implementation`` means under ``framework`` (``default`` = the first).

    Args:
        implementation: overrides ``config.implementation`` (the ``implementation`` argument of the builders).
    """
    requested = config.implementation if implementation is None else implementation
    available = implementations(config.model, framework)
    if requested == DEFAULT_IMPLEMENTATION:
        return available[0]
    if requested not in IMPLEMENTATIONS[framework]:
        raise ValueError(
            f"implementation={requested!r} does not fit framework {framework} "
            f"(expected one of {list(IMPLEMENTATIONS[framework])})"
        )
    if requested not in available:
        raise ValueError(
            f"model {config.model!r} is implemented only as {list(available)} in framework {framework} "
            f"(implementation={requested!r} exists for cnn3 only)"
        )
    return requested


def compute_dtype(precision: str) -> str:
    """The hidden layers' arithmetic dtype: ``bfloat16`` under ``bf16``, else ``float32`` (``tf32`` is a global
    backend setting, not a model property). Weights and the output layer are float32 in every case."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    return model_inputs.compute_dtype(precision)


# ---------------------------------------------------------------------------------------------------------
# Inputs and batched inference


def model_input(images: np.ndarray, batch_size: int) -> np.ndarray:
    """Validate a batch of digits and return it as float32 in [0, 1], shape ``(N, 28, 28)``.

    uint8 pixels go through ``thread_bench.models.inputs.PIXEL_VALUES`` (bit-exact ``/ 255``), as for RegVGG.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return model_inputs.as_model_input(np.asarray(images), IMAGE_SIZE)


def predict_batches(forward: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch_size: int) -> np.ndarray:
    """Run ``forward`` (an ``(B, 28, 28)`` float32 batch -> ``(B, 10)`` logits) over ``x`` in batches."""
    outputs = [np.asarray(forward(x[start : start + batch_size])) for start in range(0, len(x), batch_size)]
    if not outputs:
        return np.zeros((0, N_CLASSES), dtype=np.float32)
    return np.concatenate(outputs).astype(np.float32, copy=False)


def training_batch(images: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A batch for ``loss_and_gradients``: images as :func:`model_input` returns them, and the class ids as the
    shared training loop stores them, float32 ``(N, 1)``, checked to be integers in [0, 10)."""
    x = model_input(images, batch_size=1)
    y = np.asarray(targets, dtype=np.float32).reshape(-1, 1)
    if len(y) != len(x):
        raise ValueError(f"got {len(y)} targets for {len(x)} images")
    if y.size and (np.any(y != np.round(y)) or y.min() < 0 or y.max() >= N_CLASSES):
        raise ValueError(f"targets must be class ids in [0, {N_CLASSES}), got range [{y.min()}, {y.max()}]")
    return x, y
