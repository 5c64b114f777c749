"""The benchmark scripts still run: each at its smallest setting, as a user starts it (``python benchmarks/…``),
in a process of its own. Nothing else runs them, so without this they rot unseen (two of them did: they imported
a loss from where it no longer lives).

Not yet here (their smallest settings need a team server, a Ray cluster, a GPU, saved results or minutes):
``ray_vs_local.py``, ``gpu_epoch.py``, ``digits_table.py``, ``run_inception_bench.py``, ``ratio_table.py``,
``bench_counting.py``, ``machine_load.py``, ``held_out_seeds.py`` (it scores a study's runs; its machinery is the
analysis' held-out test, which the study's end-to-end test runs) and the inception-module cases of
``test_inception_bench.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]


def _profile_train_step(framework: str) -> list[str]:
    """``profile_train_step.py`` at its smallest: a base-2 RegVGG on 32 px images, batch 4, one profiled step."""
    sizes = ["--base-filters", "2", "--input-size", "32", "--batch", "4", "--steps", "1"]
    return ["benchmarks/profile_train_step.py", "--framework", framework, *sizes]


#: (script and its smallest arguments, a line its output must contain).
SCRIPTS = {
    "bench_preprocessing": (["benchmarks/bench_preprocessing.py", "--profile", "smoke"], "peak RSS (process tree)"),
    "concurrent_store": (["benchmarks/concurrent_store.py", "--trials", "1", "--processes", "2"], "0 failed processes"),
    "profile_train_step torch": (_profile_train_step("torch-eager"), "aten::"),
    "profile_train_step keras": (_profile_train_step("keras-tensorflow"), "AssignAddVariableOp"),
    "inception model train step": (
        [
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "benchmarks/test_inception_bench.py",
            "-k",
            "model_train_step",
            "--frameworks",
            "torch-eager",
            "--rounds",
            "1",
            "--wait-quiet",
            "0",
        ],
        "1 passed",
    ),
    "weave_map_speed": (["benchmarks/weave_map_speed.py", "--repeats", "1"], "per window: FFT"),
    "fft_variants": (
        ["benchmarks/fft_variants.py", "--windows", "8", "--variants", "default,no window"],
        "FFT variants on 8 windows per mix",
    ),
    "cpu_isa_drift": (
        [
            "benchmarks/cpu_isa_drift.py",
            *("--profile", "smoke", "--frameworks", "torch", "--caps", "native,sse41", "--spread_seeds", "1"),
        ],
        "| torch | 2 | 2 |",
    ),
    "bolt_matching": (
        ["benchmarks/bolt_matching.py", "--pairs", "1", "--width_cm", "12", "--height_cm", "6", "--px_per_cm", "64"],
        "| cnn |",
    ),
}


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_a_benchmark_script_runs_at_its_smallest_setting(name: str, tmp_path: Path) -> None:
    arguments, expected = SCRIPTS[name]
    environment = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "THREAD_BENCH_DATA": str(tmp_path / "data"),
        "PYTHONPATH": str(ROOT),
    }
    for variable in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
        environment.pop(variable, None)
    done = subprocess.run(
        [sys.executable, *arguments], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert expected in done.stdout + done.stderr
