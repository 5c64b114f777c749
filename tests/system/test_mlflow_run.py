"""README's main command, as a user types it: ``mlflow run . -e torch_train`` (and the preprocessing), through
MLflow's own CLI in a process, on the smoke profile. The launch run MLflow creates records the parameters as given;
the training logs into a run of its own, linked both ways, and both end FINISHED."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import psutil
import pytest

from thread_bench import tracking

ROOT = Path(__file__).resolve().parents[2]


def _environment(store: str, tmp_path: Path) -> dict[str, str]:
    """This interpreter's environment first on PATH (what README's ``source .venv/bin/activate`` does)."""
    environment = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_TRACKING_URI": store,
        "THREAD_BENCH_DATA": str(tmp_path / "data"),
    }
    # A user's shell has none of these; an earlier test's mlflow.set_experiment (in a module fixture) may have.
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        environment.pop(name, None)
    return environment


def _command(entry: str, parameters: dict[str, str]) -> list[str]:
    command = [sys.executable, "-m", "mlflow", "run", str(ROOT), "-e", entry, "--env-manager", "local"]
    for name, value in parameters.items():
        command += ["-P", f"{name}={value}"]
    return command


def _mlflow_run(
    entry: str, parameters: dict[str, str], store: str, tmp_path: Path, *launcher: str
) -> subprocess.CompletedProcess[str]:
    """``mlflow run ROOT -e entry --env-manager local -P ... [launcher options]``, as a user types it."""
    return subprocess.run(
        [*_command(entry, parameters), *launcher],
        cwd=tmp_path,
        env=_environment(store, tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_readme_main_command_trains_and_links_the_launch_run(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    launcher = ("--experiment-name", "system-test")  # as README types it: the launch run beside the training
    result = _mlflow_run("torch_train", {"profile": "smoke", "seed": "3"}, store, tmp_path, *launcher)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "launch run" not in result.stderr  # no advice to keep them together: they are

    mlflow.set_tracking_uri(store)
    try:
        runs = mlflow.search_runs(experiment_names=["system-test"], output_format="list")
        assert isinstance(runs, list)
        training = [run for run in runs if run.data.tags.get(tracking.TAG_ROLE) == tracking.ROLE_TRAIN]
        assert len(training) == 1
        trained = training[0]
        launch = mlflow.get_run(trained.data.tags[tracking.TAG_LAUNCH_RUN_ID])
        experiment = mlflow.get_experiment_by_name("system-test")  # made by the launcher, without a kind
    finally:
        mlflow.set_tracking_uri(None)
    assert trained.info.status == launch.info.status == "FINISHED"
    assert trained.info.experiment_id == launch.info.experiment_id
    assert trained.data.tags["mlflow.parentRunId"] == launch.info.run_id
    assert experiment is not None and experiment.tags[tracking.TAG_EXPERIMENT_KIND] == tracking.EXPERIMENT_KIND
    assert launch.data.tags[tracking.TAG_TRAINING_RUN_ID] == trained.info.run_id
    # The launch run holds the parameters as given (MLflow logs an unset one as '': from the profile); the
    # training the resolved ones.
    assert launch.data.params["seed"] == "3" and launch.data.params["epochs"] == "''"
    assert trained.data.params["seed"] == "3" and trained.data.params["epochs"] == "2"
    assert trained.data.params[tracking.PARAM_FRAMEWORK] == "torch"
    assert tracking.BEST_VAL_LOSS in trained.data.metrics


@pytest.mark.fault
def test_sigterm_to_the_launcher_stops_the_training_and_leaves_no_run_running(tmp_path: Path) -> None:
    """``kill <pid of mlflow run>``: MLflow's launcher dies at once without passing the signal on; the training
    used to be reparented and train on, its launch run RUNNING for good. Now the kernel passes SIGTERM on (the
    training asked for it), the training ends KILLED, and so does the launch run, whose launcher is gone."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parameters = {"profile": "smoke", "epochs": "500", "patience": "500"}
    command = [*_command("torch_train", parameters), "--experiment-name", "stopped"]
    log_path = tmp_path / "launcher.log"
    with log_path.open("w") as log_file:
        launcher = subprocess.Popen(
            command, cwd=tmp_path, env=_environment(store, tmp_path), stdout=log_file, stderr=subprocess.STDOUT
        )
    training: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 240
        while "epoch   1 " not in log_path.read_text() and time.monotonic() < deadline:
            assert launcher.poll() is None, log_path.read_text()[-3000:]
            time.sleep(0.2)
        training = [p for p in psutil.Process(launcher.pid).children() if "torch_train" in " ".join(p.cmdline())]
        assert len(training) == 1, log_path.read_text()[-3000:]
        launcher.send_signal(signal.SIGTERM)
        launcher.wait(timeout=30)
        training[0].wait(timeout=60)  # psutil.TimeoutExpired if it trains on
    finally:  # nothing left behind, whatever failed
        for process in training:
            if process.is_running():
                process.kill()
        if launcher.poll() is None:
            launcher.kill()
    output = log_path.read_text()
    assert "interrupted (signal SIGTERM): no MLflow run is left RUNNING" in output
    mlflow.set_tracking_uri(store)
    try:
        runs = {run.info.run_id: run for run in mlflow.search_runs(experiment_names=["stopped"], output_format="list")}
    finally:
        mlflow.set_tracking_uri(None)
    assert "RUNNING" not in {run.info.status for run in runs.values()}  # the dataset's preparation FINISHED
    trained = next(run for run in runs.values() if run.data.tags.get(tracking.TAG_ROLE) == tracking.ROLE_TRAIN)
    launch = runs[trained.data.tags[tracking.TAG_LAUNCH_RUN_ID]]
    assert trained.info.status == launch.info.status == "KILLED"
    assert launch.data.tags[tracking.TAG_PID] == str(launcher.pid)  # the launcher's process, for reconciliation
    assert "was stopped" in launch.data.tags[tracking.TAG_END_REASON]


def test_a_misspelled_parameter_is_refused_with_the_closest_name(tmp_path: Path) -> None:
    """MLflow passes an undeclared ``-P epoch=2`` on as ``--epoch 2``, which argparse's prefix matching took for
    ``--epochs``; the entry point refuses it in one line naming the parameter it means, before any run."""
    store = tmp_path / "m.db"
    result = _mlflow_run("torch_train", {"profile": "smoke", "epoch": "2"}, f"sqlite:///{store}", tmp_path)
    assert result.returncode != 0
    own = [line for line in result.stderr.splitlines() if line.startswith("python -m thread_bench.torch_train")]
    assert own == [
        "python -m thread_bench.torch_train: error: unknown option --epoch (under `mlflow run`: the parameter "
        "-P epoch=…); did you mean --epochs?"
    ]
    assert "Traceback" not in result.stderr


def test_weave_map_runs_as_the_readme_says_on_a_radiograph_of_its_own(tmp_path: Path) -> None:
    """``mlflow run . -e weave_map -P radiograph=… -P px_per_cm=…``: every other parameter as MLflow passes it
    (``''``), the maps written to ``out`` and logged in the weave-maps run, linked to the launch run."""
    from thread_bench.workloads.thread_density import canvas

    spec = canvas.CanvasSpec(width_cm=6.0, height_cm=5.0, px_per_cm=64.0, seed=1)
    image, _ = canvas.write_canvas(canvas.render_canvas(spec), tmp_path, "radiograph")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parameters = {"radiograph": str(image), "px_per_cm": "64", "out": str(tmp_path / "maps")}
    result = _mlflow_run("weave_map", parameters, store, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "weave map: 9 x 11 windows" in result.stdout
    assert (tmp_path / "maps" / "weave_map.csv").is_file() and (tmp_path / "maps" / "weave_map.png").is_file()
    mlflow.set_tracking_uri(store)
    try:
        (mapped,) = mlflow.search_runs(experiment_names=[tracking.WEAVE_EXPERIMENT], output_format="list")
        launch = mlflow.get_run(mapped.data.tags[tracking.TAG_LAUNCH_RUN_ID])
    finally:
        mlflow.set_tracking_uri(None)
    assert mapped.info.status == launch.info.status == "FINISHED"
    assert mapped.data.params["window_cm"] == "1.0" and launch.data.params["window_cm"] == "''"
