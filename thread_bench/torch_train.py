"""The ``torch_train`` entry point: ``python -m thread_bench.torch_train [--seed N] [--profile NAME] ...``.

Trains RegVGG with PyTorch under the shared protocol and logs the run to MLflow (see
:mod:`thread_bench.training.driver`); ``--help`` lists every option.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from types import ModuleType

from thread_bench.training import driver
from thread_bench.training.options import TorchOptions


def _load_trainer(request: driver.TrainRequest) -> ModuleType:
    from thread_bench.training import torch_train

    return torch_train


def build_parser() -> argparse.ArgumentParser:
    return driver.build_parser("torch", TorchOptions)


def main(argv: Sequence[str] | None = None) -> int:
    return driver.main(argv, "torch", TorchOptions, _load_trainer)


if __name__ == "__main__":
    raise SystemExit(main())
