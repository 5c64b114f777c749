"""Many processes starting runs at once against a fresh tracking store and a fresh experiment.

    python benchmarks/concurrent_store.py                      # 20 trials x 8 processes, thread_bench.tracking
    python benchmarks/concurrent_store.py --trials 5 --plain   # the same with plain MLflow (the issue's baseline)
    python benchmarks/concurrent_store.py --launch spawn       # independent interpreters released together
    python benchmarks/concurrent_store.py --store existing     # the schema made first: only the experiment race

Each trial makes a new SQLite store and a new experiment name, starts ``--processes`` processes at the same
instant, each of which starts a run, logs a metric at 3 steps and ends it, then counts:

- failures: processes that exited non-zero;
- misfiled: runs that are not in the trial's experiment (MLflow's set_experiment race files them into the
  Default experiment);
- RUNNING: runs still RUNNING after every process has exited;
- incomplete: runs without all 3 metric steps.

``--launch fork`` (default) imports once and forks the processes together, so the race is as tight as it gets
and a trial takes seconds; ``--launch spawn`` starts one interpreter per process (seconds of imports each),
then releases them together through a file. Correctness figures only: no timing is reported.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from thread_bench import cli

EXPERIMENT = "concurrent-{trial}"
METRIC_STEPS = 3


@dataclass(frozen=True)
class Trial:
    failures: int
    misfiled: int
    running: int
    incomplete: int
    runs: int


def one_run(experiment: str, plain: bool) -> str:
    """Start a run in ``experiment``, log 3 steps, end it; returns the run id."""
    import mlflow

    if plain:
        mlflow.set_experiment(experiment)
        with mlflow.start_run() as run:
            for step in range(METRIC_STEPS):
                mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        return str(run.info.run_id)
    from thread_bench import tracking

    with tracking.tracked_run(experiment) as run:
        for step in range(METRIC_STEPS):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
    return str(run.info.run_id)


def fork_together(experiment: str, processes: int, plain: bool) -> list[int]:
    """Fork ``processes`` children at once (imports paid before, no store opened); their exit statuses."""
    importlib.import_module("mlflow.store.tracking.sqlalchemy_store")
    importlib.import_module("thread_bench.tracking")
    pids = []
    for _ in range(processes):
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                one_run(experiment, plain)
                status = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(status)
        pids.append(pid)
    return [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]


def spawn_together(experiment: str, processes: int, plain: bool, directory: Path) -> list[int]:
    """One interpreter per process; each waits for a file after its imports, so all start the run together."""
    go = directory / "go"
    command = [sys.executable, __file__, "--worker", experiment, str(go), *(["--plain"] if plain else [])]
    started = [subprocess.Popen([*command, str(directory / f"ready-{i}")], cwd=directory) for i in range(processes)]
    while len(list(directory.glob("ready-*"))) < processes:
        if any(process.poll() is not None for process in started):
            break
        time.sleep(0.01)
    go.touch()
    return [process.wait() for process in started]


def run_trial(trial: int, processes: int, launch: str, plain: bool, existing_store: bool) -> Trial:
    with tempfile.TemporaryDirectory(prefix="concurrent-store-") as name:
        directory = Path(name)
        uri = f"sqlite:///{directory / 'mlflow.db'}"
        os.environ["MLFLOW_TRACKING_URI"] = uri
        os.environ.pop("MLFLOW_RUN_ID", None)
        os.chdir(directory)  # MLflow's artifacts go under the working directory
        experiment = EXPERIMENT.format(trial=trial)
        if existing_store:
            subprocess.run(
                [sys.executable, "-c", "import mlflow; mlflow.MlflowClient().search_experiments()"], check=True
            )
        if launch == "fork":
            statuses = fork_together(experiment, processes, plain)
        else:
            statuses = spawn_together(experiment, processes, plain, directory)
        return count(uri, experiment, statuses)


def count(uri: str, experiment: str, statuses: list[int]) -> Trial:
    import mlflow
    from mlflow.entities import ViewType

    from thread_bench import store

    failures = sum(status != 0 for status in statuses)
    try:
        store.open_store(uri)
    except store.StoreError as error:  # every process broke the store: nothing to count
        print(f"  store unusable after the trial: {error}")
        return Trial(failures, 0, 0, 0, 0)
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiments = client.search_experiments(view_type=ViewType.ALL)
    runs = client.search_runs([e.experiment_id for e in experiments], run_view_type=ViewType.ALL)
    target = client.get_experiment_by_name(experiment)
    target_id = target.experiment_id if target is not None else None
    misfiled = sum(run.info.experiment_id != target_id for run in runs)
    running = sum(run.info.status == "RUNNING" for run in runs)
    incomplete = sum(len(client.get_metric_history(run.info.run_id, "loss")) != METRIC_STEPS for run in runs)
    return Trial(failures, misfiled, running, incomplete, len(runs))


def worker(argv: list[str]) -> int:
    experiment, go, *rest = argv
    plain = "--plain" in rest
    ready = Path(rest[-1])
    import mlflow  # noqa: F401 - the imports before the barrier

    importlib.import_module("thread_bench.tracking")
    ready.touch()
    while not Path(go).exists():
        time.sleep(0.005)
    one_run(experiment, plain)
    return 0


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        return worker(sys.argv[2:])
    parser = cli.Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--launch", choices=("fork", "spawn"), default="fork")
    parser.add_argument("--plain", action="store_true", help="plain mlflow.set_experiment + start_run (baseline)")
    parser.add_argument(
        "--store", choices=("new", "existing"), default="new", help="a new SQLite file, or one whose schema exists"
    )
    args = parser.parse_args()
    totals: Counter[str] = Counter()
    for trial in range(args.trials):
        result = run_trial(trial, args.processes, args.launch, args.plain, args.store == "existing")
        print(
            f"trial {trial:2d}: {result.runs} runs; failures {result.failures}, misfiled {result.misfiled}, "
            f"RUNNING {result.running}, incomplete {result.incomplete}",
            flush=True,
        )
        totals.update(vars(result))
        totals["trials with a problem"] += any((result.failures, result.misfiled, result.running, result.incomplete))
    what = "plain MLflow" if args.plain else "thread_bench.tracking"
    print(
        f"{what}, {args.trials} trials x {args.processes} processes ({args.launch}), {args.store} store and fresh "
        "experiment each: "
        f"{totals['failures']} failed processes, {totals['misfiled']} misfiled runs, {totals['running']} runs left "
        f"RUNNING, {totals['incomplete']} incomplete histories, {totals['runs']} runs in all; "
        f"{totals['trials with a problem']} trials with a problem"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
