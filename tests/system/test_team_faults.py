"""The team server owns what it starts: a port already taken is refused before anything starts; when its
``mlflow server`` dies, or the PostgreSQL under it, it ends its whole process group (spawned uvicorn workers
included, which used to keep the port and answer 503 for good), says which in one line, and frees the port.

Each fault test starts a team server of its own (``python -m thread_bench.server``) on one PostgreSQL data folder
shared by the module, so PostgreSQL's and MLflow's schema creation happen once.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import psutil
import pytest

from conftest import free_port, short_tmp_dir, start_team_server
from thread_bench import server, store, tracking
from thread_bench.store import StoreError

pytestmark = [pytest.mark.system, pytest.mark.fault]


def test_a_port_in_use_is_refused_naming_its_holder_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "thread_bench.server", "--dir", str(tmp_path / "team"), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"python -m thread_bench.server: error: port {port} on 127.0.0.1 is in use by pid {os.getpid()} "
        f"({' '.join(psutil.Process().cmdline())[:120]}) (Address already in use): stop that process or pass "
        "another --port"
    ]
    assert not (tmp_path / "team" / "postgres").exists()  # refused before PostgreSQL started for nothing


def test_a_free_port_passes_the_check() -> None:
    server.check_port_free("127.0.0.1", free_port())
    with pytest.raises(StoreError, match="in use"), socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server.check_port_free("127.0.0.1", taken.getsockname()[1])


@pytest.fixture(scope="module")
def team_dir() -> Iterator[Path]:
    directory = short_tmp_dir("tb-fault-")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _start(directory: Path) -> tuple[subprocess.Popen[str], int, psutil.Process]:
    """A team server, its port and its ``mlflow server`` process (the leader of the server's process group)."""
    team, url = start_team_server(directory, workers=2)
    port = int(url.rsplit(":", 1)[1])
    mlflow_server = next(
        child for child in psutil.Process(team.pid).children() if "mlflow" in " ".join(child.cmdline())
    )
    return team, port, mlflow_server


def _group(pgid: int) -> list[psutil.Process]:
    """The live processes of process group ``pgid``."""
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def _ended(team: subprocess.Popen[str], pgid: int, port: int) -> str:
    """Wait for the team server to end; check it left no process and no port; return its stderr."""
    try:
        _, stderr = team.communicate(timeout=60)
    finally:
        for leftover in _group(pgid):  # whatever the assertions say, nothing is left running
            leftover.kill()
    assert team.returncode == 1, stderr[-3000:]
    deadline = time.monotonic() + 10
    while _group(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _group(pgid), [" ".join(p.cmdline()) for p in _group(pgid)]
    server.check_port_free("127.0.0.1", port)  # free again: a restart can bind it
    assert "Traceback" not in stderr
    return stderr


def test_when_mlflow_server_dies_its_workers_go_too_and_the_port_is_free(team_dir: Path) -> None:
    team, port, mlflow_server = _start(team_dir)
    pgid = mlflow_server.pid
    assert len(_group(pgid)) >= 2  # the server and its uvicorn workers
    mlflow_server.send_signal(signal.SIGKILL)  # the leader only: its workers are orphaned, still in its group
    stderr = _ended(team, pgid, port)
    assert "mlflow server exited with status -9" in stderr and "; stopping" in stderr


def _training(url: str, data: Path, log: Path, experiment: str) -> subprocess.Popen[str]:
    """A smoke training with many epochs against ``url``, its output in ``log``."""
    environment = {**os.environ, "MLFLOW_TRACKING_URI": url, "THREAD_BENCH_DATA": str(data)}
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", *store.HTTP_RETRIES):
        environment.pop(name, None)  # the suite's own retry settings, as a user gets them
    command = [sys.executable, "-m", "thread_bench.torch_train", "--profile", "smoke", "--epochs", "500"]
    command += ["--patience", "500", "--threads", "1", "--experiment", experiment]
    with log.open("w") as output:
        return subprocess.Popen(command, env=environment, stdout=output, stderr=subprocess.STDOUT, text=True)


def _wait_for(log: Path, text: str, process: subprocess.Popen[str], timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in log.read_text():
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)


def test_a_training_whose_server_dies_ends_in_one_line_and_keeps_every_epoch_it_logged(
    team_dir: Path, tmp_path: Path
) -> None:
    """Killing the tracking server mid-training: the training used to print nothing for 10.6 min, then 89 lines
    of tracebacks. Now it gives up within MLflow's bounded retries (store.HTTP_RETRIES: about 30 s) with one line
    naming the server; a second training, sent SIGTERM meanwhile, ends within seconds and does not claim its run
    was ended. After a restart every epoch printed before the fault is in the store, and the runs are reconciled."""
    team, port, mlflow_server = _start(team_dir)
    url = f"http://127.0.0.1:{port}"
    first = _training(url, tmp_path / "data", tmp_path / "first.log", "faults")
    _wait_for(tmp_path / "first.log", "epoch   0 ", first)  # the dataset is ready: the second reuses it
    second = _training(url, tmp_path / "data", tmp_path / "second.log", "faults")
    try:
        _wait_for(tmp_path / "first.log", "epoch   3 ", first)
        _wait_for(tmp_path / "second.log", "epoch   1 ", second)
        mlflow_server.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        _ended(team, mlflow_server.pid, port)  # the team server stops its PostgreSQL too
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
        stopped_after = time.monotonic() - killed_at
        first.wait(timeout=120)
        failed_after = time.monotonic() - killed_at
    finally:
        for process in (first, second):
            if process.poll() is None:
                process.kill()
    first_log, second_log = (tmp_path / "first.log").read_text(), (tmp_path / "second.log").read_text()
    assert first.returncode == 1 and "Traceback" not in first_log, first_log[-3000:]
    assert failed_after < 90, failed_after  # MLflow's own settings took 10 minutes
    after = first_log.strip().split("\nepoch ")[-1].splitlines()[1:]  # what came after the last epoch's line
    assert len(after) == 2 and "retrying (5 retries at most)" in after[0], after  # not a screen of retries
    last = after[-1]
    assert last.startswith(f"python -m thread_bench.torch_train: the tracking server {url} stopped answering (")
    assert "is left RUNNING (the tracking server did not answer); the next command that reaches the store" in last
    assert second.returncode == 143 and stopped_after < 40 and "Traceback" not in second_log, second_log[-3000:]
    assert "no MLflow run is left RUNNING" not in second_log and "is left RUNNING" in second_log

    team, port, _ = _start(team_dir)  # restarted: the same database
    try:
        mlflow.set_tracking_uri(f"http://127.0.0.1:{port}")
        experiment = mlflow.get_experiment_by_name("faults")
        assert experiment is not None
        runs = mlflow.search_runs([experiment.experiment_id], output_format="list")
        trainings = [run for run in runs if run.data.tags.get(tracking.TAG_ROLE) == tracking.ROLE_TRAIN]
        assert len(trainings) == 2 and {run.info.status for run in trainings} == {"RUNNING"}
        for run, log in zip(sorted(trainings, key=lambda r: r.info.start_time), (first_log, second_log), strict=True):
            printed = sum(line.startswith("epoch ") for line in log.splitlines())
            steps = {m.step for m in mlflow.MlflowClient().get_metric_history(run.info.run_id, tracking.VAL_LOSS)}
            assert set(range(printed)) <= steps  # every epoch printed was logged first: none lost
        assert sorted(tracking.reconcile_runs([experiment.experiment_id])) == sorted(r.info.run_id for r in trainings)
        assert {mlflow.get_run(r.info.run_id).info.status for r in trainings} == {"KILLED"}
    finally:
        mlflow.set_tracking_uri(None)
        team.send_signal(signal.SIGTERM)
        team.communicate(timeout=60)


def test_when_postgresql_dies_the_tracking_server_is_stopped_saying_so(team_dir: Path) -> None:
    team, port, mlflow_server = _start(team_dir)
    postmaster = int((team_dir / "postgres" / "postmaster.pid").read_text().split()[0])
    os.kill(postmaster, signal.SIGKILL)
    stderr = _ended(team, mlflow_server.pid, port)
    assert f"PostgreSQL ({(team_dir / 'postgres').resolve()}) stopped under the tracking server" in stderr


# ------------------------------------------------------------------------------------------------ a login


def test_beyond_this_machine_without_a_login_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "thread_bench.server", "--dir", str(tmp_path / "team"), "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "python -m thread_bench.server: error: --host 0.0.0.0 serves every machine that can reach this one, and "
        "without a login anyone could write and delete runs: add --auth, or --insecure-no-auth on a network you trust"
    ]
    assert not (tmp_path / "team").exists()


def test_with_auth_writes_and_deletes_need_a_login_and_a_training_logs_with_one(tmp_path: Path) -> None:
    """MLflow's own basic-auth app: no credentials, no write and no delete (401); the admin's password, generated
    at the first start and readable by its owner only, lets a training log as any client would."""
    import requests

    directory = short_tmp_dir("tb-auth-")
    port = free_port()
    command = [sys.executable, "-m", "thread_bench.server", "--dir", str(directory), "--port", str(port), "--auth"]
    team = subprocess.Popen([*command, "--workers", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert team.stdout is not None
        line = team.stdout.readline()
        assert line.startswith("tracking server http://") and "login: user admin, password in" in line, line
        url = f"http://127.0.0.1:{port}"
        password_file = directory / "auth" / "admin-password"
        assert password_file.stat().st_mode & 0o777 == 0o600
        admin = ("admin", password_file.read_text().strip())
        api = f"{url}/api/2.0/mlflow"
        assert requests.post(f"{api}/experiments/create", json={"name": "x"}, timeout=30).status_code == 401
        created = requests.post(f"{api}/experiments/create", json={"name": "x"}, auth=admin, timeout=30)
        assert created.status_code == 200
        experiment_id = created.json()["experiment_id"]
        deleted = requests.post(f"{api}/experiments/delete", json={"experiment_id": experiment_id}, timeout=30)
        assert deleted.status_code == 401
        assert requests.get(f"{url}/health", timeout=30).status_code == 200  # the health check needs no login
        alice = ("alice", "a-team-members-password")  # a user the admin adds, as README says
        assert requests.post(
            f"{api}/users/create", json={"username": alice[0], "password": alice[1]}, auth=admin, timeout=30
        ).ok
        own = requests.post(f"{api}/experiments/create", json={"name": "alice's"}, auth=alice, timeout=30)
        assert own.status_code == 200  # a signed-in user may log
        others = requests.post(
            f"{api}/experiments/delete", json={"experiment_id": experiment_id}, auth=alice, timeout=30
        )
        assert others.status_code == 403  # but not delete someone else's work

        environment = {**os.environ, "MLFLOW_TRACKING_URI": url, "THREAD_BENCH_DATA": str(tmp_path / "data")}
        for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
            environment.pop(name, None)
        train = [sys.executable, "-m", "thread_bench.torch_train", "--profile", "smoke", "--experiment", "auth"]
        refused = subprocess.run(train, env=environment, capture_output=True, text=True, timeout=300)
        assert refused.returncode == 2
        assert f"tracking store {url} asks for a login (HTTP 401): export MLFLOW_TRACKING_USERNAME" in refused.stderr
        environment |= {"MLFLOW_TRACKING_USERNAME": admin[0], "MLFLOW_TRACKING_PASSWORD": admin[1]}
        trained = subprocess.run(train, env=environment, capture_output=True, text=True, timeout=300)
        assert trained.returncode == 0, trained.stderr[-3000:]
        found = requests.get(
            f"{api}/experiments/get-by-name", params={"experiment_name": "auth"}, auth=admin, timeout=30
        )
        runs = requests.post(
            f"{api}/runs/search", json={"experiment_ids": [found.json()["experiment"]["experiment_id"]]}, auth=admin,
            timeout=30,
        ).json()["runs"]  # fmt: skip
        assert any(run["info"]["status"] == "FINISHED" and run["data"].get("metrics") for run in runs)
    finally:
        team.send_signal(signal.SIGTERM)
        team.communicate(timeout=60)
        shutil.rmtree(directory, ignore_errors=True)
