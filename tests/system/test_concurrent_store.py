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
from mlflow.exceptions import MlflowException
from mlflow.store.tracking.dbmodels.models import SqlDataset
from sqlalchemy.orm import Query

from thread_bench import tracking
from tracking_workers import DATASET_DIGEST, DATASET_NAME

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
        inputs = run.inputs.dataset_inputs
        assert [(i.dataset.name, i.dataset.digest) for i in inputs] == [(DATASET_NAME, DATASET_DIGEST)]
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


def test_runs_logging_one_dataset_at_once_all_link_it(
    tracking_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow's SQL store looks a dataset up, then inserts it: a run whose lookup came before another run's insert
    fails on the other's row (seen on a team server, eight trainings of one dataset). Here the race is made
    certain: the second run's first lookup finds nothing although the row exists."""
    source = str(tmp_path)
    real_all = Query.all
    blinded = []

    def lookup_before_the_other_insert(self: Query) -> list[object]:
        rows = real_all(self)
        if rows and isinstance(rows[0], SqlDataset) and not blinded:
            blinded.append(rows)
            return []
        return rows

    with tracking.tracked_run("raced", run_name="first") as first:
        tracking.log_dataset_input(source, "raced-dataset", "0123456789abcdef")
    with tracking.tracked_run("raced", run_name="second") as second, monkeypatch.context() as patched:
        patched.setattr(Query, "all", lookup_before_the_other_insert)
        tracking.log_dataset_input(source, "raced-dataset", "0123456789abcdef")

    assert blinded, "the race was not staged: the second run's lookup never found the first run's dataset"
    client = mlflow.MlflowClient()
    for run in (first, second):
        inputs = client.get_run(run.info.run_id).inputs.dataset_inputs
        assert [(i.dataset.name, i.dataset.digest) for i in inputs] == [("raced-dataset", "0123456789abcdef")]


@pytest.mark.parametrize(
    "message",
    [
        'BAD_REQUEST: (psycopg2.errors.UniqueViolation) duplicate key value violates unique constraint "dataset_pk"',
        "(pymysql.err.IntegrityError) (1062, \"Duplicate entry '1-d-0123' for key 'datasets.PRIMARY'\")",
    ],
    ids=["postgresql-server", "mysql"],
)
def test_each_store_wording_of_the_race_is_retried(
    tracking_store: str, monkeypatch: pytest.MonkeyPatch, message: str
) -> None:
    calls = []

    def raced_once(*args: object, **kwargs: object) -> None:
        calls.append(args)
        if len(calls) == 1:
            raise MlflowException(message)

    monkeypatch.setattr(mlflow, "log_input", raced_once)
    with tracking.tracked_run("raced"):
        tracking.log_dataset_input(str(Path.cwd()), "d", "0123")
    assert len(calls) == 2


def test_another_dataset_error_is_not_retried(tracking_store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def failing_log_input(*args: object, **kwargs: object) -> None:
        calls.append(args)
        raise MlflowException("Dataset name exceeds the maximum length")

    monkeypatch.setattr(mlflow, "log_input", failing_log_input)
    with pytest.raises(MlflowException, match="maximum length"), tracking.tracked_run("raced"):
        tracking.log_dataset_input(str(Path.cwd()), "d", "0123")
    assert len(calls) == 1
