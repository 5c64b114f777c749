"""The NumPy reference definitions of the loss and the error, and the frameworks' losses held to them."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch

from thread_bench.metrics import (
    accuracy,
    confusion_matrix,
    cross_entropy,
    mean_absolute_error,
    normalized_mae,
    per_class_accuracy,
)
from thread_bench.workloads.thread_density import keras_models, torch_models

#: float32 tensors against the float64 reference: a relative error of ~1e-7 per value, well inside 1e-6.
RTOL = 1e-6


def random_batch(seed: int, size: int = 257) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and targets ``(B, 1)`` float32 in the range of thread densities (targets > 0)."""
    rng = np.random.default_rng(seed)
    targets = rng.uniform(6.0, 23.0, (size, 1)).astype(np.float32)
    predictions = (targets + rng.normal(0.0, 3.0, (size, 1))).astype(np.float32)
    return predictions, targets


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_torch_loss_is_the_reference(seed: int) -> None:
    predictions, targets = random_batch(seed)

    loss = torch_models.loss(torch.from_numpy(predictions), torch.from_numpy(targets))

    assert float(loss) == pytest.approx(normalized_mae(predictions, targets), rel=RTOL)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_keras_loss_is_the_reference(seed: int) -> None:
    predictions, targets = random_batch(seed)

    # The per-sample losses that fit averages (Keras itself calls the loss as (targets, predictions)).
    per_sample = keras_models.loss(keras.ops.convert_to_tensor(predictions), keras.ops.convert_to_tensor(targets))
    loss = float(keras.ops.convert_to_numpy(keras.ops.mean(per_sample)))

    assert keras.ops.shape(per_sample) == (len(targets),)
    assert loss == pytest.approx(normalized_mae(predictions, targets), rel=RTOL)


def test_reference_values() -> None:
    predictions, targets = np.array([11.0, 18.0]), np.array([10.0, 20.0])

    assert normalized_mae(predictions, targets) == pytest.approx(0.1)
    assert mean_absolute_error(predictions, targets) == pytest.approx(1.5)
    assert normalized_mae(targets, targets) == 0.0 == mean_absolute_error(targets, targets)


def test_reference_is_shape_robust_and_float64() -> None:
    predictions, targets = random_batch(3, size=5)

    # (N, 1) against (N,) is compared value by value, never broadcast into an (N, N) matrix.
    assert normalized_mae(predictions, targets.reshape(-1)) == normalized_mae(predictions, targets)
    assert mean_absolute_error(predictions.tolist(), targets.reshape(-1)) == mean_absolute_error(predictions, targets)
    # float64 arithmetic: the result does not depend on the inputs' precision beyond their values.
    as_float64 = normalized_mae(predictions.astype(np.float64), targets.astype(np.float64))
    assert normalized_mae(predictions, targets) == as_float64
    assert isinstance(normalized_mae(predictions, targets), float)


def test_reference_properties() -> None:
    predictions, targets = random_batch(4)
    scale = 3.5

    # The normalised error is scale-free; the absolute one scales with the unit; both are symmetric in sign.
    assert normalized_mae(scale * predictions, scale * targets) == pytest.approx(normalized_mae(predictions, targets))
    assert mean_absolute_error(scale * predictions, scale * targets) == pytest.approx(
        scale * mean_absolute_error(predictions, targets)
    )
    assert mean_absolute_error(predictions, targets) == pytest.approx(mean_absolute_error(targets, predictions))
    assert normalized_mae(predictions, targets) > 0.0
    # A prediction off by a fraction f of every target scores f.
    assert normalized_mae(1.25 * targets, targets) == pytest.approx(0.25)


def test_reference_refuses_mismatched_or_empty_inputs() -> None:
    with pytest.raises(ValueError, match="same number of values, got 3 predictions and 2 targets"):
        normalized_mae(np.ones(3), np.ones(2))
    with pytest.raises(ValueError, match="empty"):
        mean_absolute_error([], [])


# ------------------------------------------------------------------------------------------ classification


def test_cross_entropy_accuracy_and_confusion_by_hand() -> None:
    logits = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.5, 0.4, 0.1]]))
    labels = np.array([0, 2, 1])

    assert cross_entropy(logits, labels) == pytest.approx(-(np.log(0.7) + np.log(0.8) + np.log(0.4)) / 3)
    assert accuracy(logits, labels) == pytest.approx(2 / 3)
    matrix = confusion_matrix(logits, labels)
    assert matrix.tolist() == [[1, 0, 0], [1, 0, 0], [0, 0, 1]]
    assert per_class_accuracy(matrix).tolist() == [1.0, 0.0, 1.0]


def test_cross_entropy_is_stable_for_large_logits_and_takes_float_labels() -> None:
    logits = np.array([[1000.0, 0.0], [0.0, 1000.0]])

    assert cross_entropy(logits, np.array([0.0, 1.0], dtype=np.float32)) == pytest.approx(0.0, abs=1e-12)
    assert np.isfinite(cross_entropy(logits, np.array([1, 0])))


@pytest.mark.parametrize("labels", [np.array([0, 3]), np.array([0, -1]), np.array([0.5, 1.0]), np.array([0])])
def test_classification_metrics_refuse_labels_that_are_not_classes(labels: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"labels must be class ids|expected logits"):
        accuracy(np.zeros((2, 3)), labels)
