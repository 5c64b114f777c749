"""The ``keras_train`` entry point: ``python -m thread_bench.keras_train [--backend NAME] [--seed N] ...``.

Trains RegVGG with Keras under the shared protocol and logs the run to MLflow (see
:mod:`thread_bench.training.driver`); ``--help`` lists every option. Keras reads ``KERAS_BACKEND`` once, at
its first import, so the options are parsed and the environment set before Keras is imported.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from thread_bench.training import driver
from thread_bench.training.options import KerasOptions


def backend_environment(options: KerasOptions, deterministic: bool, threads: int = 0) -> dict[str, str]:
    """Environment variables to set before Keras (and its backend) is first imported.

    Args:
        deterministic: ask XLA (JAX backend) for deterministic GPU kernels.
        threads: TrainConfig.threads; 1 makes XLA's CPU kernels single-threaded (JAX backend).
    """
    environment = {"KERAS_BACKEND": options.backend}
    flags = os.environ.get("XLA_FLAGS", "")
    if options.backend == "tensorflow":
        # Hide TensorFlow's start-up INFO notices (not its warnings); a value the user set wins.
        environment["TF_CPP_MIN_LOG_LEVEL"] = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "1")
    if options.backend == "jax":
        # Like TensorFlow without memory growth, JAX grabs 75 % of the GPU at start; allocate on demand so
        # that GPU memory figures describe the model (docs/DESIGN.md §7).
        environment["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
        if deterministic and "--xla_gpu_deterministic_ops" not in flags:
            flags = f"{flags} --xla_gpu_deterministic_ops=true"
        if threads == 1 and "--xla_cpu_multi_thread_eigen" not in flags:
            flags = f"{flags} --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        environment["XLA_FLAGS"] = flags.strip()
    return environment


def _load_trainer(request: driver.TrainRequest) -> ModuleType:
    assert isinstance(request.options, KerasOptions)
    if "keras" in sys.modules:
        running = sys.modules["keras"].backend.backend()
        if running != request.options.backend:
            raise ValueError(
                f"--backend {request.options.backend}: Keras is already running on {running} in this process "
                "and cannot switch; start a fresh process"
            )
    if request.options.backend == "jax" and request.train.threads > 1:
        raise ValueError("--threads: the jax backend supports 0 (its default) or 1")
    os.environ.update(backend_environment(request.options, request.train.deterministic, request.train.threads))
    from thread_bench.training import keras_train

    return keras_train


def build_parser() -> argparse.ArgumentParser:
    return driver.build_parser("keras", KerasOptions)


def main(argv: Sequence[str] | None = None) -> int:
    return driver.main(argv, "keras", KerasOptions, _load_trainer)


if __name__ == "__main__":
    raise SystemExit(main())
