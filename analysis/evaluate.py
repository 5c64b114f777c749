"""Evaluate a selected model on the test split, time its prediction, and log an evaluation run.

The model's outputs are scored by its workload (``Workload.evaluate``): thread densities by their normalised
and absolute errors, digit logits by accuracy, per-class accuracy and the confusion matrix. Also the
non-learning reference of the workloads that have one: the spectral (FFT) thread counter on the same test split.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient

from thread_bench import backends, cli, figures, frameworks, measure, tracking, workloads
from thread_bench.backends import Sync
from thread_bench.config import PREDICT_BATCH_SIZE
from thread_bench.data.prepared import PreparedDataset, Split, load_prepared
from thread_bench.frameworks import Framework, Trainer
from thread_bench.workloads import Models, Workload

log = logging.getLogger(__name__)

#: Timed prediction passes over the test split after the warm-up pass; the median is reported.
DEFAULT_REPEATS = 3


@dataclass(frozen=True)
class Evaluation:
    """A model's outputs on a test split, their scores and the time they took."""

    predictions: np.ndarray
    """float32: ``(N,)`` threads/cm, or ``(N, C)`` logits."""
    test_loss: float
    #: The workload's test metrics (``Workload.evaluate``), by MLflow key.
    scores: dict[str, float]
    predict_time_s: float
    """Median of the timed (warm) passes over the whole split."""
    predict_first_time_s: float
    """The first, cold pass (graph tracing, allocator growth), reported apart."""
    predict_samples_per_s: float
    n_test: int
    device: str
    #: The workload's tables of the test split (a classifier's confusion matrix), by artifact name.
    tables: dict[str, Any] = dataclasses.field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        return {
            tracking.TEST_LOSS: self.test_loss,
            **self.scores,
            tracking.PREDICT_TIME_S: self.predict_time_s,
            tracking.PREDICT_FIRST_TIME_S: self.predict_first_time_s,
            tracking.PREDICT_SAMPLES_PER_S: self.predict_samples_per_s,
        }


# ------------------------------------------------------------------------------------------- models


def model_uri(run_id: str) -> str:
    """The URI of the model a training run logged (named ``model``): its MLflow 3 logged model, else
    ``runs:/<id>/model`` (older stores).

    Raises:
        ValueError: the run logged several models under that name (ambiguous).
    """
    client = MlflowClient()
    run = client.get_run(run_id)
    models = [
        model
        for model in client.search_logged_models(
            experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'"
        )
        if model.name == tracking.ARTIFACT_MODEL
    ]
    if len(models) > 1:
        ids = sorted(m.model_id for m in models)
        raise ValueError(f"run {run_id} logged {len(models)} models named {tracking.ARTIFACT_MODEL!r} ({ids})")
    if models:
        return f"models:/{models[0].model_id}"
    return f"runs:/{run_id}/{tracking.ARTIFACT_MODEL}"


@dataclass(frozen=True)
class Predictor:
    """A loaded model's ``predict(images) -> densities`` with the device it runs on and its device sync."""

    predict: Callable[[np.ndarray], np.ndarray]
    device: str
    sync: Sync


def start_framework(framework: Framework, backend: str) -> Trainer | None:
    """The framework's trainer, running on ``backend`` in this process; ``None`` when the framework already runs
    on another backend here (Keras picks its backend once, at its first import).

    Sets the environment training sets (JAX allocates on demand) and the backend's memory settings: without
    TensorFlow's memory growth, TensorFlow reserves nearly all GPU memory and a PyTorch model evaluated next
    in this process would not fit (docs/DESIGN.md §7).
    """
    if not framework.can_start(backend):
        return None
    trainer = framework.load_trainer(backend)
    backends.get(backend).prepare_memory()
    return trainer


def load_predictor(trainer: Trainer, models: Models, uri: str, batch_size: int = PREDICT_BATCH_SIZE) -> Predictor:
    """Load a logged model with the framework's own loader (not pyfunc: prediction is timed without its
    overhead) on this process's device; it predicts with the workload's ``models.predict``."""
    model = trainer.load_model(uri)
    return Predictor(
        predict=lambda images: models.predict(model, images, batch_size),
        device=trainer.device(),
        sync=backends.get(trainer.backend()).device_sync(),
    )


def evaluate(model: Predictor, split: Split, workload: Workload, *, repeats: int = DEFAULT_REPEATS) -> Evaluation:
    """Predict the whole split once cold, then ``repeats`` times timed (synced); scores from the last pass."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    images = np.array(split.images)  # copied out of the memory map: no disk reads inside the timed regions
    labels = np.asarray(split.labels, dtype=np.float32)
    if len(labels) == 0:
        raise ValueError("the test split is empty")
    timer = measure.Timer(sync=model.sync)
    with timer:
        predictions = model.predict(images)
    first_time_s = timer.elapsed_s
    times = []
    for _ in range(repeats):
        with timer:
            predictions = model.predict(images)
        times.append(timer.elapsed_s)
    predict_time_s = statistics.median(times)
    predictions = np.asarray(predictions, dtype=np.float32)
    if len(predictions) != len(labels):
        raise ValueError(f"model returned {len(predictions)} predictions for {len(labels)} test images")
    scores = workload.evaluate(predictions, labels)
    return Evaluation(
        predictions=predictions,
        test_loss=scores.loss,
        scores=scores.metrics,
        tables=scores.tables,
        predict_time_s=predict_time_s,
        predict_first_time_s=first_time_s,
        predict_samples_per_s=len(labels) / predict_time_s if predict_time_s > 0 else float("nan"),
        n_test=len(labels),
        device=model.device,
    )


def evaluate_run(
    run: Mapping[str, Any],
    dataset: PreparedDataset,
    *,
    repeats: int = DEFAULT_REPEATS,
    batch_size: int = PREDICT_BATCH_SIZE,
) -> tuple[Evaluation, str]:
    """Load the model of training ``run`` and evaluate it on ``dataset``'s test split; returns it and its URI.

    A model runs on the backend it was trained on: in this process when its framework is not yet running on
    another backend here (Keras), else in a fresh subprocess (``python -m analysis.evaluate``).
    """
    uri = model_uri(str(run["run_id"]))
    framework = frameworks.get(str(run["framework"]))
    backend = str(run.get("backend") or framework.default_backend)
    workload = workloads.get(str(run.get("workload") or workloads.DEFAULT))
    trainer = start_framework(framework, backend)
    if trainer is None:
        log.info(
            "%s runs on another backend in this process: evaluating the %s model in a subprocess",
            framework.name,
            backend,
        )
        return _evaluate_in_subprocess(uri, framework.name, backend, workload, dataset.path, repeats, batch_size), uri
    predictor = load_predictor(trainer, workload.models_for(framework.name), uri, batch_size)
    return evaluate(predictor, dataset.test, workload, repeats=repeats), uri


def _evaluate_in_subprocess(
    uri: str, framework: str, backend: str, workload: Workload, dataset_dir: Path, repeats: int, batch_size: int
) -> Evaluation:
    with tempfile.TemporaryDirectory(prefix="thread-bench-evaluate-") as directory:
        command = [sys.executable, "-m", "analysis.evaluate", "--model_uri", uri, "--framework", framework]
        command += ["--workload", workload.name, "--backend", backend, "--dataset", str(dataset_dir)]
        command += ["--repeats", str(repeats)]
        command += ["--batch_size", str(batch_size), "--out", directory]
        environment = {**os.environ, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()}
        environment.pop("MLFLOW_RUN_ID", None)
        subprocess.run(command, env=environment, check=True)
        return _read_evaluation(Path(directory))


def _write_evaluation(evaluation: Evaluation, directory: Path) -> None:
    fields = {k: v for k, v in dataclasses.asdict(evaluation).items() if k != "predictions"}
    (directory / "evaluation.json").write_text(json.dumps(fields))
    np.save(directory / "predictions.npy", evaluation.predictions)


def _read_evaluation(directory: Path) -> Evaluation:
    fields = json.loads((directory / "evaluation.json").read_text())
    return Evaluation(predictions=np.load(directory / "predictions.npy"), **fields)


def log_evaluation(
    source: Mapping[str, Any],
    evaluation: Evaluation,
    split: Split,
    *,
    uri: str,
    experiment: str | None,
    study: str | None,
    workload: Workload,
    extra_params: Mapping[str, Any] | None = None,
) -> str:
    """Log an evaluation run for ``source`` (a row of the selected runs); returns its run id.

    Nested under the active run (the analysis run) when there is one.
    """
    tags = {
        tracking.TAG_ROLE: tracking.ROLE_EVALUATION,
        tracking.TAG_SOURCE_RUN_ID: str(source["run_id"]),
        tracking.TAG_FRAMEWORK: str(source["framework"]),
        tracking.TAG_DATASET_DIGEST: str(source["dataset_digest"]),
    }
    if study:
        tags[tracking.TAG_STUDY] = study
    name = f"evaluate-{source['group']}-seed{source['seed']}".replace(" ", "")
    with tracking.tracked_run(experiment, run_name=name, tags=tags, nested=mlflow.active_run() is not None) as run:
        tracking.log_params(
            {
                tracking.PARAM_FRAMEWORK: source["framework"],
                tracking.PARAM_WORKLOAD: workload.name,
                tracking.PARAM_BACKEND: source.get("backend"),
                tracking.PARAM_GROUP: source["group"],
                tracking.PARAM_SEED: source["seed"],
                tracking.PARAM_SOURCE_RUN_ID: source["run_id"],
                tracking.PARAM_MODEL_URI: uri,
                tracking.PARAM_DATASET_DIGEST: source["dataset_digest"],
                tracking.PARAM_N_TEST: evaluation.n_test,
                tracking.PARAM_PREDICT_DEVICE: evaluation.device,
                **(extra_params or {}),
            }
        )
        mlflow.log_metrics({**evaluation.metrics(), tracking.BEST_VAL_LOSS: float(source[tracking.BEST_VAL_LOSS])})
        table = pd.DataFrame(workload.prediction_columns(split, evaluation.predictions))
        mlflow.log_text(table.to_csv(index=False), tracking.ARTIFACT_PREDICTIONS)
        for name, matrix in evaluation.tables.items():
            mlflow.log_dict(matrix, name)
            figure = figures.confusion_matrix_figure(np.asarray(matrix), f"{source['group']}, seed {source['seed']}")
            mlflow.log_figure(figure, str(Path(name).with_suffix(".png")))
        return str(run.info.run_id)


# ------------------------------------------------------------------------- the subprocess entry point


def build_parser() -> argparse.ArgumentParser:
    """``python -m analysis.evaluate``: evaluate one logged model in a fresh process (used by the analysis
    when the model needs a Keras backend other than the one already running)."""
    parser = cli.Parser(prog="python -m analysis.evaluate", description=build_parser.__doc__)
    parser.add_argument("--model_uri", required=True)
    parser.add_argument("--framework", required=True, choices=frameworks.NAMES)
    parser.add_argument("--workload", default=workloads.DEFAULT, choices=workloads.names())
    parser.add_argument("--backend", default=None, help="the backend it was trained on (default: the framework's)")
    parser.add_argument("--dataset", required=True, help="prepared dataset directory")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS)
    parser.add_argument("--batch_size", type=int, default=PREDICT_BATCH_SIZE)
    parser.add_argument("--out", required=True, help="folder for evaluation.json and predictions.npy")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    framework = frameworks.get(args.framework)
    backend = args.backend or framework.default_backend
    trainer = start_framework(framework, backend)
    if trainer is None:
        raise RuntimeError(f"cannot run {framework.name} on {backend} in this process")
    split = load_prepared(args.dataset).test
    workload = workloads.get(args.workload)
    predictor = load_predictor(trainer, workload.models_for(framework.name), args.model_uri, args.batch_size)
    evaluation = evaluate(predictor, split, workload, repeats=args.repeats)
    _write_evaluation(evaluation, Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
