"""The steady CPU epoch of the real training entry points, per framework x precision x variant, on this processor.

    python benchmarks/cpu_epoch.py [--profile laptop] [--epochs 3] [--repeats 1] [--precisions fp32,bf16]
        [--variants default,nondeterministic,tuned]
        [--engines torch,torch-channels_last,keras-tensorflow,keras-jax,keras-torch] [--json cpu_epoch.json]

Prepares (or reuses) the profile's dataset once, then runs ``python -m thread_bench.torch_train`` /
``keras_train`` in fresh processes against a throwaway MLflow store, one setting after another (``--repeats``
interleaves them, so that a drift of a shared machine's speed falls on every setting alike). The engines:

- ``torch``: PyTorch as the variant sets it (``default`` and ``nondeterministic``: NCHW tensors; ``tuned``:
  channels_last and ``torch.compile``);
- ``torch-channels_last``: the same with ``--channels_last true``: the layout alone, against ``torch`` in the
  same cell (skipped in ``tuned``, which is channels_last already);
- ``keras-tensorflow``, ``keras-jax``, ``keras-torch``: Keras 3 on each backend.

One table, printed and written as JSON with the processor: per row the steady epoch time (the run's median epoch
after the first; over repeats, their median and min-max), the first epoch, training samples/s, the achieved
GFLOP/s (``spec.train_step_flops``: convolutions and dense layers, forward and backward, analytic) and its share
of the cores' peak (``measure.cpu_peak``: float32, or bfloat16 where the processor has it), the host RSS
peak, and ``x torch``: this engine's steady epoch / PyTorch's in the same precision and variant (above 1:
slower than PyTorch), with whether TensorFlow ran its oneDNN kernels (the suite turns them on;
``TF_ENABLE_ONEDNN_OPTS=0`` in the environment measures its Eigen kernels instead). The cores other processes
used meanwhile are measured; above 0.1 the table is marked disturbed. ``--json`` is rewritten after every
training (``"complete": false`` until the last), so a stopped grid keeps what it measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from analysis.report import markdown_table
from gpu_epoch import train
from machine_load import ChildrenLoad
from thread_bench import cli, measure, tracking
from thread_bench.config import PRECISIONS, resolve, variant_names
from thread_bench.workloads.thread_density import spec
from thread_bench.workloads.thread_density.config import PROFILES, DataConfig, ModelConfig
from thread_bench.workloads.thread_density.prepare import ensure_prepared

#: engine -> (entry point's framework, its extra options).
ENGINES: dict[str, tuple[str, list[str]]] = {
    "torch": ("torch", []),
    "torch-channels_last": ("torch", ["--channels_last", "true"]),
    "keras-tensorflow": ("keras", ["--backend", "tensorflow"]),
    "keras-jax": ("keras", ["--backend", "jax"]),
    "keras-torch": ("keras", ["--backend", "torch"]),
}
#: Other processes' average cores above which the timings are marked disturbed.
DISTURBED_CORES = 0.1


def build_parser() -> argparse.ArgumentParser:
    parser = cli.Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="laptop")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (>= 2: the first is warm-up)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per setting, interleaved (medians reported)")
    parser.add_argument("--engines", default=",".join(ENGINES), help=f"some of {', '.join(ENGINES)}")
    parser.add_argument("--precisions", default="fp32,bf16", help=f"some of {', '.join(PRECISIONS)}")
    parser.add_argument("--variants", default=",".join(variant_names()))
    parser.add_argument("--threads", default="0", help="TrainConfig.threads (0: one per core, the default)")
    parser.add_argument("--data_root", default=None, help="where the prepared dataset is kept (default: ./data)")
    parser.add_argument(
        "--json", default=None, help="also write the table and the processor here (after each training: 'complete')"
    )
    return parser


def settings(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """(engine, precision, variant) to run, in order; refuses unknown names in one line."""
    chosen = {
        "--engines": (args.engines.split(","), list(ENGINES)),
        "--precisions": (args.precisions.split(","), list(PRECISIONS)),
        "--variants": (args.variants.split(","), variant_names()),
    }
    for option, (given, known) in chosen.items():
        unknown = [name for name in given if name not in known]
        if unknown:
            raise ValueError(f"{option}: unknown {unknown}; expected some of {known}")
    engines, precisions, variants = (given for given, _ in chosen.values())
    return [
        (engine, precision, variant)
        for precision in precisions
        for variant in variants
        for engine in engines
        if not (engine == "torch-channels_last" and variant == "tuned")  # tuned is channels_last already
    ]


def cores_used(threads: str) -> int:
    """The cores a run's kernels use: ``--threads``, or every core this process may run on."""
    return int(threads) if int(threads) > 0 else len(os.sched_getaffinity(0))


def row(
    engine: str, precision: str, variant: str, run_ids: list[str], flops: int, peak: measure.CpuPeak, cores: int
) -> dict[str, Any]:
    """One setting over its repeats."""
    runs = [mlflow.get_run(run_id) for run_id in run_ids]
    metrics = [run.data.metrics for run in runs]
    params = runs[0].data.params
    epochs = [m[tracking.MEDIAN_EPOCH_TIME_S] for m in metrics]
    samples_per_s = statistics.median(m[tracking.TRAIN_SAMPLES_PER_S] for m in metrics)
    gflops = samples_per_s * flops / 1e9
    bf16_native = precision == "bf16" and peak.bf16_flop_per_cycle is not None
    peak_gflops = peak.bf16_gflops(cores) if bf16_native else peak.fp32_gflops(cores)
    return {
        "engine": engine,
        "backend": params[tracking.PARAM_BACKEND],
        "precision": precision,
        "variant": variant,
        "runs": len(runs),
        "steady epoch s": statistics.median(epochs),
        "min-max": f"{min(epochs):.3g}-{max(epochs):.3g}",
        "first epoch s": statistics.median(m[tracking.FIRST_EPOCH_TIME_S] for m in metrics),
        "samples/s": samples_per_s,
        "GFLOP/s": gflops,
        "% of peak": 100 * gflops / peak_gflops if peak_gflops else float("nan"),
        "peak": "bf16" if bf16_native else "fp32",
        "RSS peak GiB": statistics.median(m[tracking.HOST_RSS_PEAK_BYTES] for m in metrics) / 2**30,
        "bf16 hardware": params.get(tracking.PARAM_BF16_HARDWARE, "unused"),
        "channels_last": params.get(tracking.PARAM_CHANNELS_LAST, "-"),
        "tf onednn": params.get(tracking.PARAM_TF_ONEDNN, "-"),
    }


def add_torch_ratio(table: pd.DataFrame) -> pd.DataFrame:
    """``x torch``: each row's steady epoch / PyTorch's (engine ``torch``) in the same precision and variant."""
    torch = table[table["engine"] == "torch"].set_index(["precision", "variant"])["steady epoch s"]
    table["x torch"] = [
        row["steady epoch s"] / torch[(row["precision"], row["variant"])]
        if (row["precision"], row["variant"]) in torch.index
        else float("nan")
        for _, row in table.iterrows()
    ]
    return table


def run(args: argparse.Namespace, on_update: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run every setting; the result as written to ``--json``. ``on_update`` gets the result so far after each
    training (``complete`` false until the last): a grid of hours keeps what it measured when it is stopped."""
    if args.epochs < 2:
        raise ValueError("--epochs must be >= 2: the first epoch is warm-up, the steady state is the rest")
    chosen = settings(args)
    peak = measure.cpu_peak()
    cores = cores_used(args.threads)
    data = resolve(DataConfig, args.profile, profiles=PROFILES)
    flops = spec.train_step_flops(resolve(ModelConfig, args.profile, profiles=PROFILES), batch=1)
    dataset = ensure_prepared(data, args.data_root).dataset.path
    load = ChildrenLoad().start()
    made: dict[tuple[str, str, str], list[str]] = {}
    tried: set[tuple[str, str, str]] = set()

    def result(complete: bool) -> dict[str, Any]:
        rows = [row(*setting, made[setting], flops, peak, cores) for setting in chosen if setting in made]
        foreign = load.foreign_cores()
        return {
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "processor": {**dataclasses.asdict(peak), "cores": cores, "fp32_peak_gflops": peak.fp32_gflops(cores)},
            "machine": platform.node(),
            "profile": args.profile,
            "epochs": args.epochs,
            "gflop_per_sample": flops / 1e9,
            "other_processes_cores": foreign,
            "disturbed": foreign is not None and foreign > DISTURBED_CORES,
            "complete": complete,
            "failed": [list(setting) for setting in chosen if setting in tried and setting not in made],
            "rows": add_torch_ratio(pd.DataFrame(rows)).to_dict(orient="records") if rows else [],
        }

    with tempfile.TemporaryDirectory(prefix="cpu-epoch-") as directory:
        store = f"sqlite:///{Path(directory) / 'mlflow.db'}"
        mlflow.set_tracking_uri(store)
        for repeat in range(args.repeats):
            for engine, precision, variant in chosen:
                framework, extra = ENGINES[engine]
                run_id = train(
                    framework, args, dataset, precision, variant, "auto", store, repeat, extra=extra, label=engine
                )
                tried.add((engine, precision, variant))
                if run_id is not None:
                    made.setdefault((engine, precision, variant), []).append(run_id)
                if on_update is not None:
                    on_update(result(complete=False))
        return result(complete=True)


def report(result: dict[str, Any]) -> str:
    """The table with its header lines, as printed."""
    processor = result["processor"]
    lines = [
        f"{processor['description']}, {processor['cores']} cores ({processor['isa']}): float32 peak "
        f"{processor['fp32_peak_gflops']:.0f} GFLOP/s ({processor['basis']})",
        f"profile {result['profile']}, {result['epochs']} epochs per run, {result['gflop_per_sample']:.3f} GFLOP per "
        f"training sample; {result['date']}",
    ]
    if result["rows"]:
        table = pd.DataFrame(result["rows"])
        lines += ["", markdown_table(table.map(lambda v: f"{v:.3g}" if isinstance(v, float) else v))]
    foreign = result["other_processes_cores"]
    if foreign is not None:
        state = "DISTURBED: the timings are not a quiet machine's" if result["disturbed"] else "a quiet machine"
        lines.append(f"\nother processes used {foreign:.2f} cores on average meanwhile ({state})")
    if result["failed"]:
        lines.append(f"failed (their stderr above): {result['failed']}")
    return "\n".join(lines)


def write_json(path: Path, result: dict[str, Any]) -> None:
    """``result`` into ``path`` whole or not at all (written beside it, then renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(result, indent=2, default=str) + "\n")
    partial.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    path = Path(args.json) if args.json else None
    try:
        result = run(args, on_update=(lambda so_far: write_json(path, so_far)) if path is not None else None)
    except ValueError as error:
        cli.fail(parser, error)
        return 2
    print("\n" + report(result))
    if path is not None:
        write_json(path, result)
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
