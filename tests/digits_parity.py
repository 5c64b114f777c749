"""Parity machinery for the digits models, and a script that checks cnn3 under the active Keras backend.

``KERAS_BACKEND=jax python tests/digits_parity.py`` builds cnn3 in both Keras styles and in PyTorch from one set
of canonical weights, compares their logits with a float64 NumPy forward of the spec, compares one batch's loss
and gradients with PyTorch's, and prints the largest deviations as JSON; ``test_digits_models`` runs it in a
subprocess because Keras fixes its backend when it is first imported.

Tolerances are constants here, each with what was achieved on the 2-core dev machine.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from thread_bench.workloads.digits import spec
from thread_bench.workloads.digits.config import IMPLEMENTATIONS, DigitsModelConfig
from thread_bench.workloads.thread_density.spec import PIXEL_VALUES

#: Logits of every implementation against the float64 NumPy forward (and so against each other), as
#: max |difference| / max |reference logit|. Achieved over seeds 0-4, all three models and all their styles,
#: Keras on TensorFlow: 8.6e-7 (PyTorch 7.8e-7); Keras on JAX 5.3e-7, Keras on torch 1.4e-6 (seed 0, cnn3):
#: float32 rounding of sums of up to 1,600 products, accumulated in different orders.
LOGITS_RTOL = 1e-5
#: One batch's mean loss, relative to PyTorch's. Achieved: 1.1e-7 (seeds 0-4; 0 under the JAX and torch
#: backends, seed 0).
LOSS_RTOL = 1e-6
#: Gradients of one batch, per tensor max |g - g_torch| / max |g_torch|. Achieved: 1.0e-6 (seeds 0-4, all
#: models and styles; 8.4e-7 under JAX, 8.1e-7 under the torch backend).
GRADIENT_RTOL = 1e-5
#: The loss against a float64 NumPy cross-entropy of the float64 logits (absolute; losses are about 2.3).
#: Achieved: 1.9e-7 (seeds 0-4).
REFERENCE_LOSS_ATOL = 1e-6
#: ``precision="bf16"``: logits against the same model's float32 logits (relative as above). Achieved over
#: seeds 0-2: 2.2e-3 .. 4.7e-3 (Keras styles and PyTorch, identical to 3 digits), 3.2e-3 .. 6.5e-3 (TensorFlow
#: styles, which run eagerly and round the convolution to bfloat16 before adding the bias, where a fused
#: kernel rounds once): bfloat16 keeps 8 bits of mantissa. The lower bound proves the model did compute in
#: bfloat16 (a float32 run under a bf16 label would give ~1e-6).
BF16_MAX_DEVIATION = 0.05
BF16_MIN_DEVIATION = 1e-4

BATCH = 8


def framework_module(framework: str) -> ModuleType:
    """``keras_models``, ``torch_models`` or ``tensorflow_models``, imported on demand (TensorFlow's import
    costs seconds, and a JAX or torch subprocess does not need it)."""
    names = {"keras": "keras_models", "torch": "torch_models", "tensorflow": "tensorflow_models"}
    return importlib.import_module(f"thread_bench.workloads.digits.{names[framework]}")


def implemented(model_name: str, frameworks: tuple[str, ...] = tuple(IMPLEMENTATIONS)) -> list[tuple[str, str]]:
    """Every ``(framework, style)`` the model exists in, reference (Keras functional) first."""
    return [(f, style) for f in frameworks for style in spec.implementations(model_name, f)]


def build(framework: str, style: str, model_name: str, weights: dict[str, np.ndarray], precision: str = "fp32") -> Any:
    module = framework_module(framework)
    model = module.build_model(DigitsModelConfig(model=model_name), precision, style)
    module.set_weights(model, weights)
    return model


def batch(seed: int, n: int = BATCH) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (so the PIXEL_VALUES path is exercised) and float32 ``(n, 1)`` class ids."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, spec.IMAGE_SIZE, spec.IMAGE_SIZE), dtype=np.uint8)
    return images, rng.integers(0, spec.N_CLASSES, (n, 1)).astype(np.float32)


def weights_for(model_name: str, seed: int) -> dict[str, np.ndarray]:
    """Glorot kernels and random (nonzero) biases: a forgotten bias cannot pass."""
    return spec.random_weights(model_name, seed, bias_std=spec.TEST_BIAS_STD)


# ---------------------------------------------------------------------------------------------------------
# NumPy float64 references: the spec executed literally


def reference_logits(model_name: str, weights: dict[str, np.ndarray], images: np.ndarray) -> np.ndarray:
    """The float64 logits of ``model_name`` (inference: dropout is the identity) on uint8 images."""
    x = PIXEL_VALUES[images].astype(np.float64)[..., np.newaxis]  # NHWC
    for layer in spec.model_spec(model_name).layers:
        if isinstance(layer, spec.Conv):
            windows = sliding_window_view(x, (layer.kernel, layer.kernel), axis=(1, 2))  # (N, H', W', C, kh, kw)
            x = np.einsum("nhwcij,ijco->nhwo", windows, _weight(weights, layer.name, "kernel"), optimize=True)
            x = _activate(x + _weight(weights, layer.name, "bias"), layer.activation)
        elif isinstance(layer, spec.Pool):
            n, height, width, channels = x.shape
            s = layer.size
            x = x[:, : height // s * s, : width // s * s].reshape(n, height // s, s, width // s, s, channels)
            x = x.max(axis=(2, 4))
        elif isinstance(layer, spec.Flatten):
            x = x.reshape(len(x), -1)
        elif isinstance(layer, spec.Dense):
            x = x @ _weight(weights, layer.name, "kernel") + _weight(weights, layer.name, "bias")
            x = _activate(x, layer.activation)
    return x


def _weight(weights: dict[str, np.ndarray], layer_name: str, kind: str) -> np.ndarray:
    return weights[spec.weight_key(layer_name, kind)].astype(np.float64)


def _activate(x: np.ndarray, activation: str | None) -> np.ndarray:
    return np.maximum(x, 0.0) if activation == "relu" else x


def reference_cross_entropy(logits: np.ndarray, targets: np.ndarray) -> float:
    """mean over the batch of -log softmax(logits)[target], in float64."""
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_softmax[np.arange(len(logits)), targets.reshape(-1).astype(int)].mean())


def relative_deviation(got: np.ndarray, expected: np.ndarray) -> float:
    """max |got - expected| / max |expected|."""
    return float(np.abs(np.asarray(got, np.float64) - expected).max() / np.abs(expected).max())


def gradient_deviation(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> float:
    """The worst per-tensor :func:`relative_deviation`; the key sets must be equal."""
    assert set(got) == set(expected), (sorted(got), sorted(expected))
    return max(relative_deviation(got[key], expected[key]) for key in expected)


# ---------------------------------------------------------------------------------------------------------
# Checks (raise AssertionError with a message); used by the tests and by the script below


def check_logits(model_name: str, frameworks: tuple[str, ...], seed: int = 0, batch_size: int = 3) -> dict[str, float]:
    """Every implementation's logits against the float64 reference; returns the deviations by style.

    Args:
        batch_size: of ``predict``; the default 3 splits the 8 images into batches with a short last one.
    """
    weights, (images, _) = weights_for(model_name, seed), batch(seed)
    expected = reference_logits(model_name, weights, images)
    deviations = {}
    for framework, style in implemented(model_name, frameworks):
        model = build(framework, style, model_name, weights)
        logits = framework_module(framework).predict(model, images, batch_size)
        assert logits.dtype == np.float32 and logits.shape == expected.shape, (style, logits.dtype, logits.shape)
        deviations[f"{framework}/{style}"] = relative_deviation(logits, expected)
    assert max(deviations.values()) <= LOGITS_RTOL, f"{model_name}: {deviations}"
    return deviations


def check_step(model_name: str, frameworks: tuple[str, ...], seed: int = 0) -> dict[str, dict[str, float]]:
    """One batch's loss and gradients (dropout off) in every implementation against PyTorch's."""
    weights, (images, targets) = weights_for(model_name, seed), batch(seed)
    torch_models = framework_module("torch")
    loss_torch, gradients_torch = torch_models.loss_and_gradients(
        build("torch", "module", model_name, weights), images, targets
    )
    reference_loss = reference_cross_entropy(reference_logits(model_name, weights, images), targets)
    assert abs(loss_torch - reference_loss) <= REFERENCE_LOSS_ATOL, (loss_torch, reference_loss)
    result: dict[str, dict[str, float]] = {}
    for framework, style in implemented(model_name, frameworks):
        model = build(framework, style, model_name, weights)
        loss_value, gradients = framework_module(framework).loss_and_gradients(model, images, targets)
        assert max(np.abs(g).max() for g in gradients.values()) > 0.0, f"{style}: all gradients are zero"
        result[f"{framework}/{style}"] = {
            "loss": abs(loss_value - loss_torch) / loss_torch,
            "gradients": gradient_deviation(gradients, gradients_torch),
        }
    assert max(r["loss"] for r in result.values()) <= LOSS_RTOL, f"{model_name}: {result}"
    assert max(r["gradients"] for r in result.values()) <= GRADIENT_RTOL, f"{model_name}: {result}"
    return result


def main() -> None:
    import keras

    frameworks = ("keras", "torch")
    report: dict[str, Any] = {
        "backend": keras.backend.backend(),
        # Equal batches: under JAX each batch shape costs one compilation of Keras' predict step.
        "logits": check_logits("cnn3", frameworks, batch_size=BATCH // 2),
        "step": check_step("cnn3", frameworks),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
