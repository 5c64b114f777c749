"""Epoch times of both frameworks' real training loops for each precision x variant, on a GPU or a CPU.

    python benchmarks/gpu_epoch.py [--profile paper] [--epochs 3] [--backend jax] [--precisions fp32,tf32,bf16]
                                   [--variants default,nondeterministic,tuned] [--frameworks torch,keras]

Prepares (or reuses) the profile's dataset once, then runs the real entry points (``python -m
thread_bench.torch_train`` / ``keras_train``) in fresh processes against a throwaway MLflow store, twice per
setting: with the real input pipeline (``--input_pipeline auto``) and with ``staged`` batches (one pre-made
batch per size, already on the device: the step loop alone). It prints one table:

- steady epoch time (median of the epochs after the first; with ``--repeats``, the median over the runs and
  their min-max) and the first epoch (tracing, compilation);
- training samples/s and the achieved TFLOP/s (``spec.train_step_flops``: convolutions and dense layers,
  forward + backward, analytic);
- the framework allocator's GPU peak (or the host RSS peak on a CPU);
- ``input/step``: steady training-pass time of the real loop / of the staged loop run right after it (median
  over the repeats); the budget is <= 1.05;
- ``vs default``: steady epoch time of the default variant / of this row (same framework and precision);
  ``vs fp32``: fp32 / this row (same framework and variant).

The defaults measure the GPU question (paper profile). On a CPU, ``--profile laptop --precisions fp32,bf16
--variants default,tuned`` takes about 25 minutes per repeat on 2 cores (torch.compile spends minutes on its
first run). A shared or virtual machine drifts: the same laptop run took 20 to 29 s per epoch within an
hour on the 2-core VM this was written on, hence ``--repeats`` (interleaved) for comparisons.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import pandas as pd

from analysis.report import markdown_table
from machine_load import ChildrenLoad
from thread_bench import cli, tracking
from thread_bench.config import PRECISIONS, resolve, variant_names
from thread_bench.workloads.thread_density import spec
from thread_bench.workloads.thread_density.config import PROFILES, DataConfig, ModelConfig
from thread_bench.workloads.thread_density.prepare import ensure_prepared

EXPERIMENT = "gpu-epoch"


def build_parser() -> argparse.ArgumentParser:
    parser = cli.Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (>= 2: the first is warm-up)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per setting, interleaved (medians reported)")
    parser.add_argument("--frameworks", default="torch,keras")
    parser.add_argument("--backend", default="tensorflow", help="Keras backend")
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument("--variants", default=",".join(variant_names()))
    parser.add_argument("--threads", default="", help="TrainConfig.threads for every run (default: the profile's)")
    parser.add_argument("--data_root", default=None, help="where the prepared dataset is kept (default: ./data)")
    parser.add_argument("--out", default=None, help="also write the table as CSV here")
    return parser


def train(
    framework: str,
    args: argparse.Namespace,
    dataset: Path,
    precision: str,
    variant: str,
    pipeline: str,
    store: str,
    repeat: int,
    *,
    extra: list[str] | None = None,
    label: str | None = None,
) -> str | None:
    """One training in a fresh process; its run id, or None when it failed (its stderr is shown).

    Args:
        extra: more options of the entry point (``--backend jax``).
        label: the run name's first part (default: ``framework``).
    """
    name = f"{label or framework}-{precision}-{variant}-{pipeline}-{repeat}"
    command = [sys.executable, "-m", f"thread_bench.{framework}_train", "--profile", args.profile]
    command += ["--dataset", str(dataset), "--epochs", str(args.epochs), "--threads", args.threads]
    command += ["--precision", precision, "--variant", variant, "--input_pipeline", pipeline]
    command += ["--experiment", EXPERIMENT, "--run_name", name, *(extra or [])]
    environment = {**os.environ, "MLFLOW_TRACKING_URI": store}
    environment.pop("MLFLOW_RUN_ID", None)
    started = time.perf_counter()
    completed = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        print(f"{name}: FAILED\n{completed.stderr[-2000:]}", file=sys.stderr, flush=True)
        return None
    print(f"{name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    (run,) = mlflow.search_runs(
        experiment_names=[EXPERIMENT], filter_string=f"tags.`mlflow.runName` = '{name}'", output_format="list"
    )
    return str(run.info.run_id)


def steady_train_time_s(run_id: str) -> float:
    """The median training pass over the steady state, as the run logged it (``training.common.steady_state``)."""
    return float(mlflow.get_run(run_id).data.metrics[tracking.MEDIAN_TRAIN_TIME_S])


def row(
    framework: str, precision: str, variant: str, real: list[str], staged: list[str], flops: int
) -> dict[str, object]:
    """One setting, over its repeats: medians, and the spread of the steady epoch time."""
    runs = [mlflow.get_run(run_id) for run_id in real]
    metrics = [run.data.metrics for run in runs]
    params = runs[0].data.params

    def median(key: str) -> float:
        return statistics.median(m[key] for m in metrics)

    epochs = [m[tracking.MEDIAN_EPOCH_TIME_S] for m in metrics]
    samples_per_s = median(tracking.TRAIN_SAMPLES_PER_S)
    gpu = [m[tracking.GPU_MEM_PEAK_BYTES] for m in metrics if tracking.GPU_MEM_PEAK_BYTES in m]
    # Real and staged runs of one repeat ran back to back: their ratio is the least disturbed by drift.
    pairs = [steady_train_time_s(a) / steady_train_time_s(b) for a, b in zip(real, staged, strict=False)]
    return {
        "framework": f"{framework} ({params[tracking.PARAM_BACKEND]})",
        "precision": precision,
        "variant": variant,
        "input": params[tracking.PARAM_INPUT_PIPELINE],
        "runs": len(runs),
        "steady epoch s": statistics.median(epochs),
        "min-max": f"{min(epochs):.3g}-{max(epochs):.3g}",
        "first epoch s": median(tracking.FIRST_EPOCH_TIME_S),
        "samples/s": samples_per_s,
        "TFLOP/s": samples_per_s * flops / 1e12,
        "memory peak GiB": (max(gpu) if gpu else median(tracking.HOST_RSS_PEAK_BYTES)) / 2**30,
        "memory kind": "GPU allocator" if gpu else "host RSS",
        "input/step": statistics.median(pairs) if pairs else float("nan"),
        "device": runs[0].data.tags.get(tracking.TAG_DEVICE, "?"),
    }


def add_ratios(table: pd.DataFrame) -> pd.DataFrame:
    epoch = table.set_index(["framework", "precision", "variant"])["steady epoch s"]

    def ratio(row: pd.Series, key: tuple[str, str, str]) -> float:
        return float(epoch[key] / row["steady epoch s"]) if key in epoch.index else float("nan")

    table["vs default"] = table.apply(lambda r: ratio(r, (r["framework"], r["precision"], "default")), axis=1)
    table["vs fp32"] = table.apply(lambda r: ratio(r, (r["framework"], "fp32", r["variant"])), axis=1)
    return table


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.epochs < 2:
        raise SystemExit("--epochs must be >= 2: the first epoch is warm-up, the steady state is the rest")
    data = resolve(DataConfig, args.profile, profiles=PROFILES)
    flops = spec.train_step_flops(resolve(ModelConfig, args.profile, profiles=PROFILES), batch=1)
    dataset = ensure_prepared(data, args.data_root).dataset.path
    load = ChildrenLoad().start()
    settings = [
        (framework, precision, variant)
        for framework in args.frameworks.split(",")
        for precision in args.precisions.split(",")
        for variant in args.variants.split(",")
    ]
    made: dict[tuple[str, ...], list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="gpu-epoch-") as directory:
        store = f"sqlite:///{Path(directory) / 'mlflow.db'}"
        mlflow.set_tracking_uri(store)
        # Repeats interleaved: a drift of the machine's speed spreads over every setting alike.
        for repeat in range(args.repeats):
            for framework, precision, variant in settings:
                for pipeline in ("auto", "staged"):
                    backend = ["--backend", args.backend] if framework == "keras" else []
                    run_id = train(framework, args, dataset, precision, variant, pipeline, store, repeat, extra=backend)
                    if run_id is not None:
                        made.setdefault((framework, precision, variant, pipeline), []).append(run_id)
        rows = [
            row(*setting, made[(*setting, "auto")], made.get((*setting, "staged"), []), flops)
            for setting in settings
            if (*setting, "auto") in made
        ]
    table = add_ratios(pd.DataFrame(rows))
    print(f"\nprofile {args.profile}, {args.epochs} epochs per run, {flops / 1e9:.2f} GFLOP per training sample")
    print(markdown_table(table.map(lambda v: f"{v:.3g}" if isinstance(v, float) else v)))
    foreign = load.foreign_cores()
    if foreign is not None:
        print(f"\nother processes used {foreign:.2f} cores on average meanwhile (0 = a quiet machine)")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
