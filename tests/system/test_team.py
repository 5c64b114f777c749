"""A team's setup: a tracking server over PostgreSQL (proxied artifacts) and a study's trainings on a Ray cluster.

One PostgreSQL, one ``mlflow server`` and one 2-CPU Ray cluster serve the whole session (tests/conftest.py).
The runs are read back over the server's REST API, as any client of the team would.
"""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import psutil
import pytest
import requests

from conftest import RayCluster, TeamServer, local_http_server
from thread_bench import executors, server, store, study, tracking

pytestmark = pytest.mark.filterwarnings("ignore:vert. bool was deprecated:matplotlib.MatplotlibDeprecationWarning")


# -------------------------------------------------------------------------------- the REST API, by hand


def rest(url: str, endpoint: str, payload: dict[str, Any] | None = None, **params: Any) -> dict[str, Any]:
    method = "POST" if payload is not None else "GET"
    response = requests.request(method, f"{url}/api/2.0/mlflow/{endpoint}", json=payload, params=params, timeout=30)
    response.raise_for_status()
    return dict(response.json())


def experiment_runs(url: str, experiment: str) -> list[dict[str, Any]]:
    """Every run of ``experiment`` as the REST API gives it, with params and tags as dicts."""
    found = rest(url, "experiments/get-by-name", experiment_name=experiment)
    experiment_id = found["experiment"]["experiment_id"]
    runs: list[dict[str, Any]] = []
    token = None
    while True:
        page = rest(url, "runs/search", {"experiment_ids": [experiment_id], "max_results": 1000, "page_token": token})
        for run in page.get("runs", []):
            data = run.get("data", {})
            run["params"] = {p["key"]: p["value"] for p in data.get("params", [])}
            run["tags"] = {t["key"]: t["value"] for t in data.get("tags", [])}
            run["metrics"] = {m["key"]: m["value"] for m in data.get("metrics", [])}
            runs.append(run)
        token = page.get("next_page_token")
        if not token:
            return runs


def role(runs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [run for run in runs if run["tags"].get(tracking.TAG_ROLE) == name]


# ---------------------------------------------------------------------------------------- the study


def _training_under_a_ray_worker(url: str, experiment: str, study_process: subprocess.Popen[str]) -> tuple[Any, Any]:
    """(the Ray worker, the training process) of the first training run seen RUNNING."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert study_process.poll() is None, study_process.communicate()[1][-4000:]
        try:
            runs = role(experiment_runs(url, experiment), tracking.ROLE_TRAIN)
        except requests.HTTPError:  # the experiment does not exist yet
            runs = []
        for run in runs:
            if run["info"]["status"] == "RUNNING":
                with_pid = run["tags"].get(tracking.TAG_PID)
                if with_pid:
                    training = psutil.Process(int(with_pid))
                    return training.parent(), training
        time.sleep(0.1)
    raise AssertionError("no training started")


@pytest.mark.fault
def test_a_ray_study_through_the_tracking_server_survives_a_killed_worker(
    team_store: str, ray_cluster: RayCluster, tmp_path: Path, team_data: Path
) -> None:
    """2 frameworks x 2 seeds on the 2-CPU cluster, into the PostgreSQL-backed server, with the analysis at the
    end; the Ray worker of the first training is killed in the middle of it: the study still ends with every
    pair FINISHED, the lost run KILLED, and nothing left RUNNING."""
    out = tmp_path / "report"
    argv = ["--profile", "smoke", "--epochs", "1", "--seeds", "2", "--study", "ray-smoke", "--experiment", "team"]
    argv += ["--executor", "ray", "--ray_address", ray_cluster.address, "--out", str(out)]
    environment = {**os.environ, **ray_cluster.environment, "MLFLOW_TRACKING_URI": team_store}
    environment["THREAD_BENCH_DATA"] = str(team_data)
    process = subprocess.Popen(
        [sys.executable, "-m", "thread_bench.study", *argv],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        worker, training = _training_under_a_ray_worker(team_store, "team", process)
        assert "ray" in " ".join(worker.cmdline()).lower(), worker.cmdline()
        worker.kill()  # SIGKILL: the worker dies in the middle of the training
        stdout, stderr = process.communicate(timeout=420)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert process.returncode == 0, stderr[-4000:]
    assert "study ray-smoke: 4 trained, 0 already finished, 0 failed" in stdout
    assert "lost with its Ray worker or node" in stderr and "progress: 4/4 trainings ended" in stderr
    psutil.wait_procs([training], timeout=60)
    assert not training.is_running(), "the training died with its worker"

    runs = experiment_runs(team_store, "team")
    assert [run["info"]["run_id"] for run in runs if run["info"]["status"] == "RUNNING"] == []
    trainings = role(runs, tracking.ROLE_TRAIN)
    finished = [run for run in trainings if run["info"]["status"] == "FINISHED"]
    pairs = sorted((run["params"]["framework"], run["params"]["seed"]) for run in finished)
    assert pairs == [("keras", "0"), ("keras", "1"), ("torch", "0"), ("torch", "1")]
    (lost,) = [run for run in trainings if run["info"]["status"] != "FINISHED"]
    assert lost["info"]["status"] == "KILLED" and lost["tags"][tracking.TAG_END_REASON]
    assert lost["tags"][tracking.TAG_STUDY_TRAINING].endswith("#1")
    retried = lost["tags"][tracking.TAG_STUDY_TRAINING].replace("#1", "#2")
    assert [run["tags"][tracking.TAG_STUDY_TRAINING] for run in finished].count(retried) == 1
    # Artifacts went through the server (proxied), not to a path of this machine.
    assert {run["info"]["artifact_uri"].split(":")[0] for run in finished} == {"mlflow-artifacts"}

    (study_run,) = role(runs, tracking.ROLE_STUDY)
    assert study_run["info"]["status"] == "FINISHED"
    assert study_run["params"][tracking.PARAM_EXECUTOR] == "ray"
    assert study_run["metrics"][tracking.N_LOST] == 1 and study_run["metrics"][tracking.N_TRAINED] == 4
    (analysis,) = role(runs, tracking.ROLE_ANALYSIS)
    assert analysis["info"]["status"] == "FINISHED"
    evaluations = role(runs, tracking.ROLE_EVALUATION)
    assert len(evaluations) == 2 and all(run["info"]["status"] == "FINISHED" for run in evaluations)
    listed = rest(team_store, "artifacts/list", run_id=analysis["info"]["run_id"], path=tracking.ARTIFACT_REPORT)
    assert "report/report.md" in {entry["path"] for entry in listed["files"]}
    table = pd.read_csv(out / "table.csv", index_col="quantity")
    assert float(table.loc["Runs (seeds)", "keras"]) == 2 and float(table.loc["Runs (seeds)", "torch"]) == 2


# ------------------------------------------------------------------------------ concurrent trainings


CONCURRENT = 8


@pytest.mark.fault
@pytest.mark.slow  # 60-80 s on 2 cores: over the default run's budget (README, "A team")
def test_eight_concurrent_trainings_lose_no_metric(team_store: str, team_data: Path) -> None:
    """8 smoke trainings started at once against one server: every run FINISHED with its whole per-epoch
    history (as in its own history.csv, fetched through the server), none left RUNNING."""
    environment = {**os.environ, "MLFLOW_TRACKING_URI": team_store, "THREAD_BENCH_DATA": str(team_data)}
    argv = ["--profile", "smoke", "--epochs", "2", "--threads", "1", "--experiment", "concurrent"]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "thread_bench.torch_train", *argv, "--seed", str(seed)],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in range(CONCURRENT)
    ]
    errors = [process.communicate(timeout=420)[1] for process in processes]
    failed = [(seed, p.returncode, error) for seed, (p, error) in enumerate(zip(processes, errors, strict=True))]
    # A str, not a list: pytest shows a str message whole, and cuts a list's repr to a few hundred characters.
    assert all(code == 0 for _, code, _ in failed), "\n".join(
        f"--- seed {seed}: exit {code}\n{error[-6000:]}" for seed, code, error in failed if code != 0
    )

    runs = role(experiment_runs(team_store, "concurrent"), tracking.ROLE_TRAIN)
    assert len(runs) == CONCURRENT
    assert {run["info"]["status"] for run in runs} == {"FINISHED"}
    lost = []
    for run in runs:
        run_id = run["info"]["run_id"]
        history = pd.read_csv(
            mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=tracking.ARTIFACT_HISTORY)
        )
        assert len(history) == 2
        for metric in tracking.EPOCH_METRICS:
            if metric not in history.columns or history[metric].isna().all():
                continue
            points = rest(team_store, "metrics/get-history", run_id=run_id, metric_key=metric).get("metrics", [])
            logged = {(point["step"], float(point["value"])) for point in points}
            for epoch, value in zip(history["epoch"], history[metric], strict=True):
                if not any(step == epoch and abs(got - value) <= 1e-6 * max(1.0, abs(value)) for step, got in logged):
                    lost.append((run_id, metric, int(epoch)))
        assert tracking.BEST_VAL_LOSS in run["metrics"]
    assert lost == []


# --------------------------------------------------------------------------------------- bad input


def test_an_unreachable_ray_cluster_is_named_before_any_work(
    tracking_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("THREAD_BENCH_DATA", str(tmp_path / "data"))
    store.open_store(tracking_store)  # the store's own log lines (a new schema) come before
    capsys.readouterr()
    started = time.monotonic()
    with pytest.raises(SystemExit) as exit_info:
        study.main(["--profile", "smoke", "--executor", "ray", "--ray_address", "127.0.0.1:9"])

    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Ray cluster 127.0.0.1:9 is unreachable (TCP connect to 127.0.0.1:9: [Errno 111] Connection refused)" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert time.monotonic() - started < 10
    assert not (tmp_path / "data").exists(), "nothing was prepared"
    with pytest.raises(ValueError, match="--executor must be one of"):
        study.settings_from_args(study.build_parser().parse_args(["--executor", "slurm"]))


def test_a_port_that_is_not_a_ray_head_is_named_within_seconds() -> None:
    """A listener that accepts and never answers (another service's port): ray.init would retry for minutes."""
    listener = socket.create_server(("127.0.0.1", 0))
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    started = time.monotonic()
    try:
        with pytest.raises(ValueError, match=rf"Ray cluster {address}: {address} accepts connections but does not"):
            executors.probe_address(address)
    finally:
        listener.close()
    assert time.monotonic() - started < executors.PROBE_TIMEOUT_S + 5


class _OldServer(http.server.BaseHTTPRequestHandler):
    """A tracking server of an older MLflow: answers the probe, and /version."""

    def do_GET(self) -> None:
        body = b"2.9.2" if self.path.startswith("/version") else b"{}"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def old_server() -> Iterator[str]:
    with local_http_server(_OldServer) as url:
        yield url


def test_a_server_of_an_older_mlflow_is_refused_with_the_upgrade_command(old_server: str) -> None:
    with pytest.raises(store.StoreError) as raised:
        store.open_store(old_server)
    message = str(raised.value)
    assert f"tracking server {old_server} runs MLflow 2.9.2, older than this client's {mlflow.__version__}" in message
    assert "mlflow db upgrade" in message and "\n" not in message


def test_a_database_with_an_older_schema_is_refused_with_the_upgrade_command(team_server: TeamServer) -> None:
    import sqlalchemy

    server.LocalPostgres(team_server.directory / "postgres").create_database("old_schema")
    uri = team_server.database_uri("old_schema")
    engine = sqlalchemy.create_engine(uri)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32))"))
        connection.execute(sqlalchemy.text("DELETE FROM alembic_version"))
        connection.execute(sqlalchemy.text("INSERT INTO alembic_version VALUES ('451aebb31d03')"))  # MLflow 1.x
    engine.dispose()

    with pytest.raises(store.StoreError) as raised:
        server.check_schema(uri)

    message = str(raised.value)
    assert "has MLflow schema 451aebb31d03, older than MLflow" in message
    assert f"then run `mlflow db upgrade {uri}`" in message
    assert "\n" not in message
    server.check_schema(team_server.database_uri(server.DATABASE))  # the server's own database is current


def test_progress_counts_failures_retries_and_estimates_the_time_left() -> None:
    job = executors.Job(("torch", "default", 0), "torch (default) seed 0", ("python",))
    progress = executors.Progress(total=5, slots=2)
    progress.record(executors.Ending(job, 1, 0, "a", 10.0))
    progress.record(executors.Ending(job, 1, None, "b", 30.0, reason="lost", lost=True))
    progress.record(executors.Ending(job, 2, 1, "a", 20.0))

    assert (progress.finished, progress.failed, progress.retried) == (2, 1, 1)
    assert progress.remaining_s() == pytest.approx(40.0)  # 3 to go, 2 at a time: 2 waves of the mean 20 s
    assert "2/5 trainings ended, 1 failed, 1 lost and retried" in progress.line()
    assert "about 40 s left" in progress.line()
