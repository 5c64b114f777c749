"""The thread-density workload: RegVGG regresses the vertical thread density (threads/cm) of a canvas X-ray
sub-patch. The suite's original task and the default workload.

Its folder holds everything about it: settings and profiles (``config``), MLflow names (``keys``), the synthetic
canvas generator (``synthetic``), the raw-corpus reader (``corpus``), thread counting by crossing points and the
spectral counter (``counting``), preprocessing (``prepare``), RegVGG described once (``spec``), built in Keras and
PyTorch (``keras_model``, ``torch_model``) with weight transfer between them (``transfer``), the two as
:class:`thread_bench.workloads.Models` (``keras_models``, ``torch_models``), and the FFT baseline (``baseline``).
This module is the record the training, the study and the analysis see, with the scores.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from thread_bench import tracking
from thread_bench.metrics import mean_absolute_error, normalized_mae
from thread_bench.workloads import Baseline, HeldOut, Scores, Workload
from thread_bench.workloads.thread_density import keys
from thread_bench.workloads.thread_density.config import PROFILES, DataConfig, ModelConfig


def prepare_dataset(config: DataConfig, root: str | Path | None, workers: int | None = None) -> Any:
    # Imported here: preparation pulls in OpenCV and the corpus generator, which most commands never need.
    from thread_bench.workloads.thread_density.prepare import ensure_prepared

    return ensure_prepared(config, root, workers=workers)


def test_split_baseline(dataset: Any, config: DataConfig | None, root: str | Path | None) -> Baseline:
    """The FFT counter on the test split (:func:`.baseline.score_test_split`; imported when asked for, as it
    brings OpenCV)."""
    from thread_bench.workloads.thread_density.baseline import score_test_split

    return score_test_split(dataset, config, root)


def held_out_test(models: Mapping[str, str], out_dir: Path, others: Mapping[str, str]) -> HeldOut:
    """The models (group -> URI) and the FFT on windows of held-out styles (:mod:`.held_out`; imported when asked
    for, as it brings OpenCV and the generator), written into ``out_dir``; ``others`` scored on the same windows."""
    from thread_bench.workloads.thread_density import held_out

    return held_out.held_out_test(models, out_dir, others=others)


def manifest_metrics(manifest: Mapping[str, Any]) -> dict[str, float]:
    """What the preparation could not count, from its manifest: skipped patches and sub-patches, and rows whose
    given density disagrees with the count."""
    if "skipped" not in manifest:
        return {}
    return {
        keys.PREP_SKIPPED_PATCHES: float(len(manifest["skipped"]["patches"])),
        keys.PREP_DENSITY_MISMATCHES: float(len(manifest.get("density_mismatches", []))),
        keys.PREP_SKIPPED_SUBPATCHES: float(manifest["skipped"]["subpatches"]),
    }


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
            keys.VAL_MAE_THREADS_PER_CM: mean_absolute_error(outputs, labels),
            keys.BASELINE_VAL_LOSS: baseline_loss,
            keys.BASELINE_VAL_MAE_THREADS_PER_CM: baseline_mae,
        },
    )


def evaluate(outputs: np.ndarray, labels: np.ndarray) -> Scores:
    """Test scores of predicted densities: the loss and the mean absolute error in threads/cm."""
    return Scores(
        loss=normalized_mae(outputs, labels),
        metrics={keys.TEST_MAE_THREADS_PER_CM: mean_absolute_error(outputs, labels)},
    )


def prediction_columns(split: Any, outputs: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "patch_index": np.asarray(split.patch_index),
        "label_threads_per_cm": np.asarray(split.labels),
        "prediction_threads_per_cm": np.asarray(outputs).reshape(-1),
    }


def summary(metrics: Mapping[str, float]) -> str:
    return (
        f"val MAE {metrics[keys.VAL_MAE_THREADS_PER_CM]:.2f} threads/cm; predicting the training mean: "
        f"{metrics[keys.BASELINE_VAL_LOSS]:.4f} ({metrics[keys.BASELINE_VAL_MAE_THREADS_PER_CM]:.2f} "
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
    report_rows=(("Test MAE of the best model", "threads/cm", keys.TEST_MAE_THREADS_PER_CM),),
    loss_name="normalised MAE",
    summary=summary,
    builtin_source="synthetic",
    source_directory="a corpus directory",
    implementations=lambda framework, config: {"keras": ("functional",), "torch": ("module",)}[framework],
    manifest_metrics=manifest_metrics,
    baseline=test_split_baseline,
    held_out=held_out_test,
    source_marker="index.csv",
    serving="thread_bench.workloads.thread_density.serving",
    predicted_vs_true=("label_threads_per_cm", "prediction_threads_per_cm", "threads/cm"),
)
