"""The ``keras_train`` entry point: ``python -m thread_bench.keras_train [--backend NAME] [--seed N] ...``.

Trains a workload's model (RegVGG by default) with Keras under the shared protocol and logs the run to MLflow
(see :mod:`thread_bench.training.driver`); ``--help`` lists every option. Keras reads ``KERAS_BACKEND`` once, at
its first import, so the options are parsed and the environment set before Keras is imported.
"""

from __future__ import annotations

from thread_bench.training import driver

ENTRY = driver.entry_point("keras")
FRAMEWORK = ENTRY.framework
build_parser = ENTRY.build_parser
main = ENTRY.main

if __name__ == "__main__":
    raise SystemExit(main())
