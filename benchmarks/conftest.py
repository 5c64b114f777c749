"""Options of the model micro-benchmarks (``test_inception_bench.py``), and machine facts for every run."""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest

from thread_bench.backends import tensorflow_backend

# Keras on TensorFlow measured as the suite trains it: with TensorFlow's oneDNN kernels on every processor.
tensorflow_backend.prefer_onednn()

#: Frameworks of the model benchmarks. ``keras-<backend>`` runs only in a process whose Keras backend is that
#: one (Keras fixes its backend at import); ``run_inception_bench.py`` starts one process per backend.
FRAMEWORKS = ("torch-eager", "torch-channels_last", "keras-tensorflow", "keras-jax", "keras-torch")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("thread_bench model benchmarks")
    group.addoption(
        "--frameworks",
        default=",".join(FRAMEWORKS),
        help="comma-separated subset of " + ", ".join(FRAMEWORKS) + " (Keras ones need the matching KERAS_BACKEND)",
    )
    group.addoption(
        "--full", action="store_true", help="every inception shape of the network, batches 8 and 32, default model"
    )
    group.addoption("--rounds", type=int, default=5, help="timed rounds per case (after 2 warm-up rounds)")
    group.addoption(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each case, wait up to SECONDS for other processes to leave the cores idle (shared machines)",
    )


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    torch = sys.modules.get("torch")  # not imported here: a Keras-on-TensorFlow run need not load torch
    if torch is not None:
        machine_info["torch_num_threads"] = torch.get_num_threads()
    machine_info["keras_backend_env"] = os.environ.get("KERAS_BACKEND", "")
    machine_info["load_average_1m"] = os.getloadavg()[0]
    machine_info["cpu_count"] = os.cpu_count()
    # Threading knobs change these timings a lot (e.g. OMP_WAIT_POLICY on a busy machine): log them all.
    knobs = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "TF_ENABLE_ONEDNN_OPTS", "XLA_FLAGS")
    machine_info["environment"] = {name: os.environ[name] for name in knobs if name in os.environ}
