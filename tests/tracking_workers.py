"""Light worker processes for the concurrency and signal tests (no training): ``python tracking_workers.py MODE ...``.

Modes:
    run EXPERIMENT READY GO      import, create READY, wait for GO to exist, then a tracked run with 3 metric steps
    fanout EXPERIMENT N          import once, fork N processes at the same instant, each a tracked run that logs one
                                 shared dataset as its input and 3 metric steps; prints "<pid> <exit status> <run id>
                                 <experiment id>" per process
    hold EXPERIMENT STARTED      a tracked run that writes its id to STARTED and waits to be stopped
    vanish EXPERIMENT STARTED    a tracked run that writes its id to STARTED and SIGKILLs its own process
    parent EXPERIMENT STARTED    starts ``hold`` as a child that dies with it, and waits for it

Every mode runs the way the entry points do: stop signals handled, exit status 128 + signal when stopped.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import time
import traceback
from pathlib import Path

import mlflow

from thread_bench import lifecycle, tracking

METRIC_STEPS = 3
#: The dataset every ``fanout`` child logs as its input (the working folder), as trainings of one dataset do.
DATASET_NAME = "shared-dataset"
DATASET_DIGEST = "0123456789abcdef"


def _run(experiment: str, ready: Path, go: Path) -> None:
    ready.touch()
    while not go.exists():
        time.sleep(0.005)
    with tracking.tracked_run(experiment, run_name=f"worker-{os.getpid()}") as run:
        for step in range(METRIC_STEPS):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
    print(run.info.run_id, run.info.experiment_id, flush=True)


def fan_out(experiment: str, processes: int) -> list[tuple[int, int, str, str]]:
    """Fork ``processes`` children at once (the imports are paid once, here); each starts a tracked run.

    Returns (pid, exit status, run id, experiment id) per child; the ids are empty when the child failed.
    """
    # Paid once before the fork: importing MLflow's SQL store takes ~1 s of CPU that every child would repeat.
    # Only modules; no store is opened here, so every child still races for the new store on its own.
    importlib.import_module("mlflow.store.tracking.sqlalchemy_store")
    children = []
    for _ in range(processes):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: one tracked run, its ids down the pipe, never back into the parent's code
            os.close(read)
            status = 1
            try:
                with tracking.tracked_run(experiment, run_name=f"worker-{os.getpid()}") as run:
                    tracking.log_dataset_input(os.getcwd(), DATASET_NAME, DATASET_DIGEST)
                    for step in range(METRIC_STEPS):
                        mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
                os.write(write, f"{run.info.run_id} {run.info.experiment_id}".encode())
                status = 0
            except BaseException:
                traceback.print_exc()  # os._exit below would otherwise hide it
            finally:
                os._exit(status)
        os.close(write)
        children.append((pid, read))
    results = []
    for pid, read in children:
        with os.fdopen(read) as pipe:
            ids = pipe.read().split() or ["", ""]
        _, wait_status = os.waitpid(pid, 0)
        results.append((pid, os.waitstatus_to_exitcode(wait_status), ids[0], ids[1]))
    return results


def _hold(experiment: str, started: Path) -> None:
    lifecycle.die_with_parent_from_environment()
    with tracking.tracked_run(experiment, run_name="hold") as run:
        started.write_text(run.info.run_id)
        time.sleep(120)


def _vanish(experiment: str, started: Path) -> None:
    with tracking.tracked_run(experiment, run_name="vanish") as run:
        started.write_text(run.info.run_id)
        os.kill(os.getpid(), signal.SIGKILL)


def _parent(experiment: str, started: Path) -> None:
    command = [sys.executable, __file__, "hold", experiment, str(started)]
    lifecycle.run_child(command, lifecycle.child_environment(os.environ), grace_s=10)


def main(argv: list[str]) -> int:
    mode, experiment, path, *rest = argv
    modes = {"hold": _hold, "vanish": _vanish, "parent": _parent}
    with lifecycle.stop_on_signals():
        try:
            if mode == "run":
                _run(experiment, Path(path), Path(rest[0]))
            elif mode == "fanout":
                for result in fan_out(experiment, int(path)):
                    print(*result, flush=True)
            else:
                modes[mode](experiment, Path(path))
        except KeyboardInterrupt as interrupt:
            return lifecycle.exit_status(interrupt)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
