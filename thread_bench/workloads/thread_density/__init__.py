"""The thread-density workload: RegVGG regresses the vertical thread density (threads/cm) of a canvas X-ray
sub-patch. The suite's original task and the default workload.

Its data (``thread_bench.data``) and its network (``thread_bench.models``) predate the workload layer and stay
where they are; this folder is what the training, the study and the analysis see of it: the record, the
models per framework and the scores.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from thread_bench import tracking
from thread_bench.metrics import mean_absolute_error, normalized_mae
from thread_bench.workloads import Scores, Workload
from thread_bench.workloads.thread_density.config import PROFILES, DataConfig, ModelConfig


def prepare_dataset(config: DataConfig, root: str | Path | None, workers: int | None = None) -> Any:
    # Imported here: preparation pulls in OpenCV and the corpus generator, which most commands never need.
    from thread_bench.workloads.thread_density.prepare import ensure_prepared

    return ensure_prepared(config, root, workers=workers)


def mean_predictor_baseline(train_labels: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """What predicting the training mean for every sample scores: (normalised MAE, MAE in threads/cm). A model
    that has learned anything beats it clearly."""
    constant = np.full(len(labels), float(np.mean(train_labels)))
    return normalized_mae(constant, labels), mean_absolute_error(constant, labels)


def score(outputs: np.ndarray, labels: np.ndarray, train_labels: np.ndarray) -> Scores:
    """Validation scores of predicted densities (``(N,)`` threads/cm), next to the mean-predictor baseline."""
    baseline_loss, baseline_mae = mean_predictor_baseline(train_labels, labels)
    return Scores(
        loss=normalized_mae(outputs, labels),
        metrics={
            tracking.VAL_MAE_THREADS_PER_CM: mean_absolute_error(outputs, labels),
            tracking.BASELINE_VAL_LOSS: baseline_loss,
            tracking.BASELINE_VAL_MAE_THREADS_PER_CM: baseline_mae,
        },
    )


def evaluate(outputs: np.ndarray, labels: np.ndarray) -> Scores:
    """Test scores of predicted densities: the loss and the mean absolute error in threads/cm."""
    return Scores(
        loss=normalized_mae(outputs, labels),
        metrics={tracking.TEST_MAE_THREADS_PER_CM: mean_absolute_error(outputs, labels)},
    )


def prediction_columns(split: Any, outputs: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "patch_index": np.asarray(split.patch_index),
        "label_threads_per_cm": np.asarray(split.labels),
        "prediction_threads_per_cm": np.asarray(outputs).reshape(-1),
    }


def summary(metrics: Mapping[str, float]) -> str:
    return (
        f"val MAE {metrics[tracking.VAL_MAE_THREADS_PER_CM]:.2f} threads/cm; predicting the training mean: "
        f"{metrics[tracking.BASELINE_VAL_LOSS]:.4f} ({metrics[tracking.BASELINE_VAL_MAE_THREADS_PER_CM]:.2f} "
        "threads/cm)"
    )


WORKLOAD = Workload(
    name="thread_density",
    description="canvas thread density (threads/cm) from X-ray sub-patches: RegVGG regression",
    experiment=tracking.DEFAULT_EXPERIMENT,
    data_config=DataConfig,
    model_config=ModelConfig,
    profiles=PROFILES,
    models={
        "keras": "thread_bench.workloads.thread_density.keras_models",
        "torch": "thread_bench.workloads.thread_density.torch_models",
    },
    prepare=prepare_dataset,
    score=score,
    evaluate=evaluate,
    prediction_columns=prediction_columns,
    report_rows=(("Test MAE of the best model", "threads/cm", tracking.TEST_MAE_THREADS_PER_CM),),
    loss_name="normalised MAE",
    counting_baseline=True,
    summary=summary,
    builtin_source="synthetic",
    source_directory="a corpus directory",
    implementations=lambda framework, config: {"keras": ("functional",), "torch": ("module",)}[framework],
)
