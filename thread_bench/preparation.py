"""The preparation step every command shares: reuse or build a workload's prepared dataset, and log a
``preprocess`` run when one is built (the ``preprocessing`` entry point always logs one).

A training, a study and the ping-pong call it before they train, so that the dataset a run used is always on
record in the store, whoever built it.
"""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Any

import mlflow

from thread_bench import tracking, workloads
from thread_bench.data.build import PrepareResult
from thread_bench.data.prepared import MANIFEST, PreparedDataset
from thread_bench.workloads import Workload


class PreparationError(ValueError):
    """The data could not be prepared (a damaged image, a bad row, a missing file): one line naming it, wherever
    it was raised, a preparation worker process included (whose traceback is not the user's business)."""


def prepare_and_log(
    config: Any,
    root: str | Path | None = None,
    experiment: str | None = None,
    *,
    profile: str | None = None,
    always_log: bool = False,
    workers: int | None = None,
    workload: Workload | None = None,
) -> PreparedDataset:
    """Reuse or build the prepared dataset for ``config`` (``workload``'s data config; default: the default
    workload's); log a ``preprocess`` run when one is built.

    Called inside an active run (a training run), the preprocess run is its child.

    Raises:
        PreparationError: bad input data, in one line.
    """
    workload = workload or workloads.get(workloads.DEFAULT)
    try:
        result = workload.prepare(config, root, workers)
    except (ValueError, FileNotFoundError) as error:  # a worker's arrives with its RemoteTraceback chained
        raise PreparationError(" ".join(str(error).split())) from None
    if result.built or always_log:
        nested = mlflow.active_run() is not None
        experiment = tracking.experiment_name(experiment, workload.experiment)
        with tracking.tracked_run(experiment, run_name=f"preprocess-{result.dataset.manifest['key']}", nested=nested):
            _log_result(result, config, profile, workload)
    return result.dataset


def _log_result(result: PrepareResult, config: Any, profile: str | None, workload: Workload) -> None:
    dataset = result.dataset
    manifest = dataset.manifest
    mlflow.set_tags(
        {
            tracking.TAG_ROLE: tracking.ROLE_PREPROCESS,
            tracking.TAG_DATASET_DIGEST: dataset.digest,
        }
    )
    params: dict[str, object] = {
        **{name: value for name, value in vars(config).items()},
        tracking.PARAM_WORKLOAD: workload.name,
        tracking.PARAM_PROFILE: profile,
        tracking.PARAM_DATASET_KEY: manifest["key"],
        tracking.PARAM_DATASET_DIGEST: dataset.digest,
        tracking.PARAM_SOURCE_DIGEST: manifest["source"]["digest"],
        tracking.PARAM_REUSED: not result.built,
    }
    tracking.log_params(params)
    metrics: dict[str, float] = {name: float(value) for name, value in result.stats.items()}
    # The sizes of the splits, under the names training logs them as params.
    split_sizes = {"train": tracking.PARAM_N_TRAIN, "val": tracking.PARAM_N_VAL, "test": tracking.PARAM_N_TEST}
    for split, key in split_sizes.items():
        metrics[key] = float(manifest["splits"][split]["n"])
    metrics.update(workload.manifest_metrics(manifest))  # what the workload's preparation reports of itself
    # ru_maxrss is in KiB on Linux; the workers' peak is reported separately (they run in parallel).
    metrics[tracking.HOST_RSS_PEAK_BYTES] = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    metrics[tracking.HOST_RSS_PEAK_WORKERS_BYTES] = float(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
    mlflow.log_metrics(metrics)
    mlflow.log_artifact(str(dataset.path / MANIFEST))
