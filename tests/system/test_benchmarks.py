"""The benchmark scripts still run: each at its smallest setting, as a user starts it (``python benchmarks/…``),
in a process of its own. Nothing else runs them, so without this they rot unseen (two of them did: they imported
a loss from where it no longer lives).

``held_out_seeds.py`` needs a study's runs: the study's end-to-end test (tests/system/test_study.py) runs it on
its tiny study. ``digits_table.py`` (every digits style, 74 s at its smallest) and ``ray_vs_local.py`` (a team
server, a Ray cluster and three smoke studies) run with ``-m slow``. ``machine_load.py`` is a module the others
import; ``ratio_table.py`` runs at the end of ``run_inception_bench.py``.
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
    """``profile_train_step.py`` at its smallest: the smoke profile's base-2 model on 32 px images, batch 4 (an
    option over the profile's), one profiled step."""
    sizes = ["--profile", "smoke", "--batch", "4", "--steps", "1"]
    return ["benchmarks/profile_train_step.py", "--framework", framework, *sizes]


#: (script and its smallest arguments, a line its output must contain).
SCRIPTS = {
    "bench_preprocessing": (["benchmarks/bench_preprocessing.py", "--profile", "smoke"], "peak RSS (process tree)"),
    "concurrent_store": (["benchmarks/concurrent_store.py", "--trials", "1", "--processes", "2"], "0 failed processes"),
    "profile_train_step torch": (_profile_train_step("torch-eager"), "aten::"),
    # Which ops lead the profile varies with the machine's load: the header, printed once the steps were measured
    # and profiled, says they ran, with the profile's shapes and the batch option over them.
    "profile_train_step keras": (
        _profile_train_step("keras-tensorflow"),
        "keras-tensorflow: profile smoke, base 2, input 32, batch 4",
    ),
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
    "bench_counting": (["benchmarks/bench_counting.py"], "fft_count"),
    "gpu_epoch": (
        [
            "benchmarks/gpu_epoch.py",
            *("--profile", "smoke", "--epochs", "2", "--repeats", "1", "--frameworks", "torch"),
            *("--precisions", "fp32", "--variants", "default", "--data_root", "{tmp}/data"),
        ],
        "| torch (torch) | fp32",
    ),
    "cpu_epoch": (
        [
            "benchmarks/cpu_epoch.py",
            *("--profile", "smoke", "--epochs", "2", "--engines", "torch,torch-channels_last"),
            *("--precisions", "fp32", "--variants", "default", "--data_root", "{tmp}/data", "--json", "{tmp}/c.json"),
        ],
        "| torch-channels_last | torch",
    ),
    # Every inception case once, in PyTorch, then the ratio table (ratio_table.py) over the results.
    "run_inception_bench": (
        [
            "benchmarks/run_inception_bench.py",
            "--rounds",
            "1",
            "--only",
            "torch",
            "--wait-quiet",
            "0",
            "--out",
            "{tmp}",
        ],
        "| **inception_train** |",
    ),
    "bolt_matching": (
        ["benchmarks/bolt_matching.py", "--pairs", "1", "--width_cm", "12", "--height_cm", "6", "--px_per_cm", "64"],
        "| cnn |",
    ),
}


#: Minutes rather than seconds at their smallest: run with ``-m slow``.
SLOW = {
    "digits_table": (["benchmarks/digits_table.py", "--profile", "smoke", "--models", "mlp", "--seeds", "0"], "| mlp"),
    # A team server, a Ray cluster and three smoke studies.
    "ray_vs_local": (["benchmarks/ray_vs_local.py", "--repeats", "1", "--seeds", "1"], "ray 1-at-a-time"),
}


@pytest.mark.parametrize("name", [*SCRIPTS, *(pytest.param(name, marks=pytest.mark.slow) for name in SLOW)])
def test_a_benchmark_script_runs_at_its_smallest_setting(name: str, tmp_path: Path) -> None:
    arguments, expected = {**SCRIPTS, **SLOW}[name]
    arguments = [argument.replace("{tmp}", str(tmp_path)) for argument in arguments]
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
