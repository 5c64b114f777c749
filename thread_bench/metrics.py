"""The reference definitions of the loss and the error metrics, in NumPy (docs/DESIGN.md §4).

Every number the project reports about a prediction comes from here: training's rescoring and mean-predictor
baseline, the evaluation of a model on the test split, the FFT counter's baseline. The frameworks' own losses
(the thread-density workload's ``torch_models.loss`` and ``keras_models.loss``) compute the same quantity on
tensors; ``tests/unit/test_metrics.py`` holds them to these.

Both functions take array-likes of the same number of elements in any shape (``(N,)``, ``(N, 1)``, a list):
they are flattened first, so a ``(N, 1)`` prediction never broadcasts against ``(N,)`` labels into an
``(N, N)`` matrix. The arithmetic is float64 whatever the inputs' dtype, so that float32 predictions of two
frameworks are scored alike.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def normalized_mae(predictions: ArrayLike, targets: ArrayLike) -> float:
    """The loss: ``mean(|predictions - targets| / targets)``, the mean relative error.

    ``targets`` are thread densities in threads/cm, always > 0 (the preparation counts at least two threads).

    Raises:
        ValueError: the two hold different numbers of values, or none.
    """
    flat_predictions, flat_targets = _flat_pair(predictions, targets)
    return float(np.mean(np.abs(flat_predictions - flat_targets) / flat_targets))


def mean_absolute_error(predictions: ArrayLike, targets: ArrayLike) -> float:
    """``mean(|predictions - targets|)``, in the targets' unit (threads/cm).

    Raises:
        ValueError: the two hold different numbers of values, or none.
    """
    flat_predictions, flat_targets = _flat_pair(predictions, targets)
    return float(np.mean(np.abs(flat_predictions - flat_targets)))


def _flat_pair(predictions: ArrayLike, targets: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    flat_predictions = np.asarray(predictions, dtype=np.float64).reshape(-1)
    flat_targets = np.asarray(targets, dtype=np.float64).reshape(-1)
    if flat_predictions.shape != flat_targets.shape:
        raise ValueError(
            f"predictions and targets must hold the same number of values, got {flat_predictions.size} "
            f"predictions and {flat_targets.size} targets"
        )
    if flat_targets.size == 0:
        raise ValueError("predictions and targets are empty: the mean of no errors is undefined")
    return flat_predictions, flat_targets


# ------------------------------------------------------------------------------------------ classification


def cross_entropy(logits: ArrayLike, labels: ArrayLike) -> float:
    """The classification loss: the mean over samples of ``-log softmax(logits)[label]``.

    Args:
        logits: ``(N, C)`` raw scores (the models output logits; the softmax lives here and in the losses).
        labels: ``N`` class ids in ``[0, C)`` (any integer or float dtype holding integers, any shape).
    """
    scores, classes = _logits_and_labels(logits, labels)
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-np.mean(log_softmax[np.arange(len(classes)), classes]))


def accuracy(logits: ArrayLike, labels: ArrayLike) -> float:
    """The share of samples whose largest logit is their class."""
    scores, classes = _logits_and_labels(logits, labels)
    return float(np.mean(scores.argmax(axis=1) == classes))


def confusion_matrix(logits: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """``(C, C)`` int64 counts: row = true class, column = predicted class (largest logit)."""
    scores, classes = _logits_and_labels(logits, labels)
    n_classes = scores.shape[1]
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (classes, scores.argmax(axis=1)), 1)
    return matrix


def per_class_accuracy(matrix: np.ndarray) -> np.ndarray:
    """Each class's accuracy (recall) from a confusion matrix; NaN for a class with no samples."""
    totals = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(matrix) / np.maximum(totals, 1), np.nan)


def _logits_and_labels(logits: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(logits, dtype=np.float64)
    values = np.asarray(labels).reshape(-1)
    if scores.ndim != 2 or scores.shape[0] != values.size:
        raise ValueError(f"expected logits of shape (N, C) for {values.size} labels, got {scores.shape}")
    if values.size == 0:
        raise ValueError("logits and labels are empty: the mean over no samples is undefined")
    classes = values.astype(np.int64)
    if not np.array_equal(classes, values) or classes.min() < 0 or classes.max() >= scores.shape[1]:
        raise ValueError(
            f"labels must be class ids in [0, {scores.shape[1]}), got values in [{values.min()}, {values.max()}]"
        )
    return scores, classes
