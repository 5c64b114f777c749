"""What moves with the processor, and by how much next to what moves with the seed.

    python benchmarks/cpu_isa_drift.py                                   # laptop profile, torch and keras
    python benchmarks/cpu_isa_drift.py --profile smoke --frameworks torch --spread_seeds ""   # seconds

Trains one seed through the real entry points under each instruction-set cap this processor can run under
(``native`` and every ``cpu_isa`` cap it has: each stands for a processor whose best that cap is) and, on
``native``, more seeds. Prints per framework the largest difference in validation loss between the caps, after
the first epoch and at the end of the run (best validation loss), next to the spread (max - min) across seeds on
``native``, and their ratio: how much of a one-seed difference between two machines is the machines. Runs go to
their own store (``--store``, a temporary one by default); ``--out`` writes the table and every run's losses as
JSON. The processor is named and other processes' CPU use is recorded: they slow the runs, not their numbers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine_load import ForeignLoad
from thread_bench import cli, cpu_isa, measure

EXPERIMENT = "cpu-isa-drift"


@dataclass
class Run:
    framework: str
    cpu_isa: str
    seed: int
    val_losses: list[float]
    seconds: float

    @property
    def first(self) -> float:
        return self.val_losses[0]

    @property
    def best(self) -> float:
        return min(self.val_losses)


def train(framework: str, setting: str, seed: int, profile: str, store: str, data: Path) -> Run:
    """One training through ``python -m thread_bench.<framework>_train`` in a fresh process."""
    name = f"{framework}-{setting}-seed{seed}-{int(time.time() * 1000)}"
    command = [sys.executable, "-m", f"thread_bench.{framework}_train", "--profile", profile, "--seed", str(seed)]
    command += ["--cpu_isa", setting, "--experiment", EXPERIMENT, "--run_name", name]
    environment = {**cpu_isa.uncapped(dict(os.environ)), "MLFLOW_TRACKING_URI": store, "THREAD_BENCH_DATA": str(data)}
    started = time.perf_counter()
    completed = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"{' '.join(command[2:])} failed:\n{completed.stderr[-2000:]}")
    mlflow.set_tracking_uri(store)
    [found] = mlflow.search_runs(
        experiment_names=[EXPERIMENT], filter_string=f"tags.mlflow.runName = '{name}'", output_format="list"
    )
    history = mlflow.MlflowClient().get_metric_history(found.info.run_id, "val_loss")
    losses = [metric.value for metric in sorted(history, key=lambda metric: metric.step)]
    return Run(framework, setting, seed, losses, seconds)


def spread(values: list[float]) -> float:
    return max(values) - min(values) if values else float("nan")


def summarise(runs: list[Run], seed: int) -> dict[str, float]:
    by_cap = [run for run in runs if run.seed == seed]
    native = [run for run in runs if run.cpu_isa == cpu_isa.NATIVE]
    row = {
        "caps": len(by_cap),
        "seeds": len(native),
        "cap_first_epoch": spread([run.first for run in by_cap]),
        "cap_final": spread([run.best for run in by_cap]),
        "seed_first_epoch": spread([run.first for run in native]),
        "seed_final": spread([run.best for run in native]),
    }
    row["ratio_final"] = row["cap_final"] / row["seed_final"] if row["seed_final"] > 0 else float("nan")
    return row


def main(argv: list[str] | None = None) -> int:
    parser = cli.Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="laptop")
    parser.add_argument("--frameworks", default="torch,keras", help="comma-separated: torch, keras, tensorflow")
    parser.add_argument("--seed", type=int, default=3, help="the seed trained under every cap")
    parser.add_argument("--spread_seeds", default="1,2", help="more seeds on native, for the seed spread")
    parser.add_argument(
        "--caps", default=None, help=f"default: native and every cap this processor has, of {list(cpu_isa.CAPS)}"
    )
    parser.add_argument("--store", default=None, help="tracking store (default: a temporary SQLite file)")
    parser.add_argument("--data_root", type=Path, default=None, help="prepared data (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=None, help="write cpu_isa_drift.json here")
    args = parser.parse_args(argv)

    caps = args.caps.split(",") if args.caps else [cpu_isa.NATIVE, *cpu_isa.available_caps()]
    for cap in caps:
        try:
            cpu_isa.check_available(cap)
        except ValueError as error:
            parser.error(str(error))
    extra_seeds = [int(seed) for seed in args.spread_seeds.split(",") if seed.strip()]
    scratch = Path(tempfile.mkdtemp(prefix="cpu_isa_drift-"))
    store = args.store or f"sqlite:///{scratch / 'mlflow.db'}"
    data = args.data_root or scratch / "data"
    processor = measure.cpu_description()
    print(f"processor: {processor}, its own level {cpu_isa.native_level()}; profile {args.profile}; caps {caps}")

    runs: list[Run] = []
    with ForeignLoad() as foreign:
        for framework in args.frameworks.split(","):
            plan = [(cap, args.seed) for cap in caps] + [(cpu_isa.NATIVE, seed) for seed in extra_seeds]
            for setting, seed in plan:
                run = train(framework, setting, seed, args.profile, store, data)
                runs.append(run)
                losses = " ".join(f"{value:.7f}" for value in run.val_losses)
                print(f"  {framework:<6} cpu_isa={setting:<7} seed {seed}: val_loss {losses}  ({run.seconds:.0f} s)")

    print(
        f"\nvalidation loss, largest difference between the caps (seed {args.seed}) and spread across seeds on native:"
    )
    header = (
        "| framework | caps | seeds | caps, epoch 1 | caps, best | seeds, epoch 1 | seeds, best | caps / seeds, best |"
    )
    print(header)
    print("| --- " * 8 + "|")
    table = {}
    for framework in args.frameworks.split(","):
        row = summarise([run for run in runs if run.framework == framework], args.seed)
        table[framework] = row
        print(
            f"| {framework} | {row['caps']} | {row['seeds']} | {row['cap_first_epoch']:.2e} | {row['cap_final']:.2e} "
            f"| {row['seed_first_epoch']:.2e} | {row['seed_final']:.2e} | {row['ratio_final']:.2f} |"
        )
    if foreign.cores is not None and foreign.cores > 0.2:
        print(f"warning: other processes used {foreign.cores:.1f} cores meanwhile (slows the runs; numbers unchanged)")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        report = {
            "processor": processor,
            "native_level": cpu_isa.native_level(),
            "profile": args.profile,
            "caps": caps,
            "table": table,
            "runs": [asdict(run) for run in runs],
            "foreign_cores": foreign.cores,
        }
        (args.out / "cpu_isa_drift.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
