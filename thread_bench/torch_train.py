"""The ``torch_train`` entry point: ``python -m thread_bench.torch_train [--seed N] [--profile NAME] ...``.

Trains a workload's model (RegVGG by default) with PyTorch under the shared protocol and logs the run to MLflow
(see :mod:`thread_bench.training.driver`); ``--help`` lists every option.
"""

from __future__ import annotations

from thread_bench.training import driver

ENTRY = driver.entry_point("torch")
FRAMEWORK = ENTRY.framework
build_parser = ENTRY.build_parser
main = ENTRY.main

if __name__ == "__main__":
    raise SystemExit(main())
