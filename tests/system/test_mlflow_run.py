"""README's main command, as a user types it: ``mlflow run . -e torch_train`` (and the preprocessing), through
MLflow's own CLI in a process, on the smoke profile. The launch run MLflow creates records the parameters as given;
the training logs into a run of its own, linked both ways, and both end FINISHED."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow

from thread_bench import tracking

ROOT = Path(__file__).resolve().parents[2]


def _mlflow_run(entry: str, parameters: dict[str, str], store: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``mlflow run ROOT -e entry --env-manager local -P ...`` with this interpreter's environment first on PATH
    (what README's ``source .venv/bin/activate`` does)."""
    environment = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_TRACKING_URI": store,
        "THREAD_BENCH_DATA": str(tmp_path / "data"),
    }
    # A user's shell has none of these; an earlier test's mlflow.set_experiment (in a module fixture) may have.
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        environment.pop(name, None)
    command = [sys.executable, "-m", "mlflow", "run", str(ROOT), "-e", entry, "--env-manager", "local"]
    for name, value in parameters.items():
        command += ["-P", f"{name}={value}"]
    return subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600)


def test_readme_main_command_trains_and_links_the_launch_run(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = _mlflow_run("torch_train", {"profile": "smoke", "seed": "3", "experiment": "system-test"}, store, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    mlflow.set_tracking_uri(store)
    try:
        runs = mlflow.search_runs(experiment_names=["system-test"], output_format="list")
        assert isinstance(runs, list)
        training = [run for run in runs if run.data.tags.get(tracking.TAG_ROLE) == tracking.ROLE_TRAIN]
        assert len(training) == 1
        trained = training[0]
        launch = mlflow.get_run(trained.data.tags[tracking.TAG_LAUNCH_RUN_ID])
    finally:
        mlflow.set_tracking_uri(None)
    assert trained.info.status == launch.info.status == "FINISHED"
    assert launch.data.tags[tracking.TAG_TRAINING_RUN_ID] == trained.info.run_id
    # The launch run holds the parameters as given (MLflow logs an unset one as '': from the profile); the
    # training the resolved ones.
    assert launch.data.params["seed"] == "3" and launch.data.params["epochs"] == "''"
    assert trained.data.params["seed"] == "3" and trained.data.params["epochs"] == "2"
    assert trained.data.params[tracking.PARAM_FRAMEWORK] == "torch"
    assert tracking.BEST_VAL_LOSS in trained.data.metrics


def test_a_parameter_the_entry_point_does_not_declare_is_refused(tmp_path: Path) -> None:
    """MLflow passes an undeclared ``-P`` on as an option; the entry point refuses it by name, before any run."""
    result = _mlflow_run(
        "torch_train", {"profile": "smoke", "colour": "red"}, f"sqlite:///{tmp_path / 'm.db'}", tmp_path
    )
    assert result.returncode != 0
    assert "unrecognized arguments: --colour red" in result.stderr


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
