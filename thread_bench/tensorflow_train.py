"""The ``tensorflow_train`` entry point: ``python -m thread_bench.tensorflow_train --workload digits [--seed N] ...``.

Trains a workload's model in plain TensorFlow — a ``tf.GradientTape`` loop, no ``keras.Model.fit`` — under the
shared protocol and logs the run to MLflow (see :mod:`thread_bench.training.driver`); ``--help`` lists every
option. Only the digits workload has TensorFlow models (``--implementation lowlevel|keras_layers``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from thread_bench import frameworks
from thread_bench.training import driver

FRAMEWORK = frameworks.get("tensorflow")


def build_parser() -> argparse.ArgumentParser:
    return driver.build_parser(FRAMEWORK)


def main(argv: Sequence[str] | None = None) -> int:
    return driver.main(argv, FRAMEWORK)


if __name__ == "__main__":
    raise SystemExit(main())
