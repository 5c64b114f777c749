"""Seed-averaged held-out-style test: every finished training run's model, and the FFT, on the same held-out windows.

    python benchmarks/held_out_seeds.py --study laptop-tensorflow-data0       # the runs of one study
    python benchmarks/held_out_seeds.py --filter "params.profile = 'laptop'"  # or any selection of an experiment
    python benchmarks/held_out_seeds.py --study ID --styles training          # in distribution, for comparison

The analysis tests each framework's *best* model on held-out styles; a claim that the CNN beats the FFT needs the
spread over seeds. This scores every selected FINISHED thread-density training run's model on the windows of
``held_out.make_windows`` (the FFT once, on the same windows), then prints one row per run (nMAE, FFT nMAE, ratio) and
per framework the mean, standard deviation and range over its runs and the verdict against the FFT (``analysis.stats``:
beaten or beating only on every seed), with the processor named: a per-seed figure depends on the processor's
arithmetic as much as on the seed. ``--out`` also writes the per-run table and each run's samples.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import mlflow
import pandas as pd

from analysis import evaluate, runs, stats
from thread_bench import cli, tracking, workloads
from thread_bench.measure import cpu_description
from thread_bench.workloads.thread_density import held_out, synthetic
from thread_bench.workloads.thread_density.weave_map import resolve_model


def main(argv: list[str] | None = None) -> int:
    parser = cli.Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default=tracking.DEFAULT_EXPERIMENT)
    parser.add_argument("--study", default=None, help="only the runs of this study")
    parser.add_argument("--filter", default=None, help="extra MLflow search clause")
    parser.add_argument("--windows", type=int, default=held_out.DEFAULT_WINDOWS)
    parser.add_argument("--paintings", type=int, default=None, help="default: in proportion to --windows")
    parser.add_argument("--styles", default=synthetic.HELD_OUT_MIX.name, choices=sorted(synthetic.STYLE_MIXES))
    parser.add_argument("--out", type=Path, default=None, help="write held_out_seeds.csv and the samples here")
    args = parser.parse_args(argv)

    selected = runs.of_workload(
        runs.search_training_runs(args.experiment, study=args.study, extra_filter=args.filter), workloads.DEFAULT
    )
    names = {str(row.run_id): f"{row.framework}-seed{row.seed}-{str(row.run_id)[:6]}" for row in selected.itertuples()}
    models = {names[run_id]: resolve_model(evaluate.model_uri(run_id)).predict for run_id in names}
    print(f"{len(models)} models from {mlflow.get_tracking_uri()}; CPU: {cpu_description()}")
    started = time.perf_counter()
    windows = held_out.make_windows(args.windows, args.paintings, held_out.HELD_OUT_SEED, args.styles)
    print(f"{len(windows.images)} windows ({args.styles} styles) made in {time.perf_counter() - started:.1f} s")
    result = held_out.evaluate(models, windows)
    overall = result.overall()
    rows = []
    for row in selected.itertuples():
        name = names[str(row.run_id)]
        rows.append(
            {
                "framework": row.framework,
                "seed": int(row.seed),
                "run_id": row.run_id,
                "best_val_loss": float(getattr(row, tracking.BEST_VAL_LOSS)),
                "held_out_nmae": overall[name],
                "fft_nmae": overall[held_out.FFT],
                "ratio_to_fft": overall[name] / overall[held_out.FFT],
            }
        )
    table = pd.DataFrame(rows).sort_values(["framework", "seed"])
    print(result.note())
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    fft = overall[held_out.FFT]
    for framework, part in table.groupby("framework"):
        over = stats.spread(part["held_out_nmae"])
        print(
            f"{framework}: held-out nMAE {over.text('{:.4f}'.format)} (FFT {fft:.4f}, ratio {over.mean / fft:.2f}); "
            f"validation {stats.spread(part['best_val_loss']).text('{:.4f}'.format)}"
        )
        called = stats.verdict(f"{args.styles} nMAE", (str(framework), part["held_out_nmae"]), ("the FFT", fft))
        print(f"  {called.sentence}")
    for line in result.lines():
        print(line)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out / "held_out_seeds.csv", index=False)
        held_out.write(result, args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
