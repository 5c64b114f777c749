"""The reference definitions of the loss and the error metrics, in NumPy (docs/DESIGN.md §4).

Every number the project reports about a prediction comes from here: training's rescoring and mean-predictor
baseline, the evaluation of a model on the test split, the FFT counter's baseline. The frameworks' own
losses (``thread_bench.training.torch_trainer.normalized_mae``, ``thread_bench.training.keras_trainer
.normalized_mae``) compute the same quantity on tensors; ``tests/test_metrics.py`` holds them to these.

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
