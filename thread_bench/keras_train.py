"""The ``keras_train`` entry point: ``python -m thread_bench.keras_train [--backend NAME] [--seed N] ...``.

Trains RegVGG with Keras under the shared protocol and logs the run to MLflow (see
:mod:`thread_bench.training.driver`); ``--help`` lists every option. Keras reads ``KERAS_BACKEND`` once, at
its first import, so the options are parsed and the environment set before Keras is imported.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from thread_bench import frameworks
from thread_bench.training import driver

FRAMEWORK = frameworks.get("keras")


def build_parser() -> argparse.ArgumentParser:
    return driver.build_parser(FRAMEWORK)


def main(argv: Sequence[str] | None = None) -> int:
    return driver.main(argv, FRAMEWORK)


if __name__ == "__main__":
    raise SystemExit(main())
