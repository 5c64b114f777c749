"""Many processes starting runs at once against a fresh SQLite store and a fresh experiment.

MLflow alone fails both ways: every process migrates the new schema at once (all of them die, and the store
stays broken), and ``mlflow.set_experiment`` returns without activating the experiment in the process that
loses the creation race (its run lands in the Default experiment).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from thread_bench import tracking

pytestmark = pytest.mark.fault

WORKERS = Path(__file__).parents[1] / "tracking_workers.py"
PROCESSES = 8


def fan_out(store_dir: Path, experiment: str, processes: int) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """``processes`` processes forked at one instant (see tracking_workers.fan_out) against a new store in
    ``store_dir``; returns the completed launcher and one "<pid> <status> <run id> <experiment id>" line each."""
    store_dir.mkdir(parents=True)
    environment = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store_dir / 'mlflow.db'}"}
    environment.pop("MLFLOW_RUN_ID", None)
    completed = subprocess.run(
        [sys.executable, str(WORKERS), "fanout", experiment, str(processes)],
        cwd=store_dir,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return completed, completed.stdout.splitlines()


def test_processes_starting_at_once_on_a_fresh_store_all_finish_in_the_right_experiment(tmp_path: Path) -> None:
    completed, lines = fan_out(tmp_path / "store", "fresh-experiment", PROCESSES)

    assert completed.returncode == 0, completed.stderr[-3000:]
    results = [line.split() for line in lines]
    assert len(results) == PROCESSES
    assert [status for _, status, *_ in results] == ["0"] * PROCESSES, completed.stderr[-3000:]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("fresh-experiment")
    assert experiment is not None
    assert {experiment_id for *_, experiment_id in results} == {experiment.experiment_id}
    runs = client.search_runs([experiment.experiment_id])
    assert {r.info.run_id for r in runs} == {run_id for _, _, run_id, _ in results}
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert client.search_runs(["0"]) == [], "no run was filed into the Default experiment"
    for run in runs:
        history = client.get_metric_history(run.info.run_id, "loss")
        assert sorted(m.step for m in history) == [0, 1, 2]
        owner = tracking.process_of(run)
        assert owner is not None and owner.on_this_machine() and not owner.alive()


def test_experiment_creation_race_is_resolved_by_id(tracking_store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loser of the creation race reads the winner's experiment back instead of giving up."""
    client = mlflow.MlflowClient()
    real_get = mlflow.MlflowClient.get_experiment_by_name
    calls = []

    def racing_get(self: mlflow.MlflowClient, name: str) -> object:
        calls.append(name)
        if len(calls) == 1:
            client.create_experiment(name)  # another process wins between the lookup and the creation
            return None
        return real_get(self, name)

    monkeypatch.setattr(mlflow.MlflowClient, "get_experiment_by_name", racing_get)

    experiment_id = tracking.ensure_experiment("raced")

    assert experiment_id == real_get(client, "raced").experiment_id  # type: ignore[union-attr]
    assert len(calls) == 2


def test_a_deleted_experiment_is_named(tracking_store: str) -> None:
    client = mlflow.MlflowClient()
    client.delete_experiment(client.create_experiment("gone"))
    with pytest.raises(ValueError, match=r"experiment 'gone' \(id \d+\) is deleted .*mlflow experiments restore"):
        tracking.ensure_experiment("gone")
