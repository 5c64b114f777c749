"""A study whose Ray cluster dies under it (its ``gcs_server`` and ``raylet`` killed) stops within seconds with one
line of the suite's, and leaves its study run and the running training's run KILLED, nothing RUNNING and no
training process behind. It used to wait 60 s for Ray's core to end it with a C++ message, leaving the study
run RUNNING until a re-run reconciled it.

(A killed Ray *worker* is handled by retrying its training: ``test_team.py``.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import psutil
import pytest

from conftest import short_tmp_dir, start_ray_cluster, stop_ray_cluster
from thread_bench import executors, tracking

pytestmark = [pytest.mark.system, pytest.mark.fault]


def _cluster_servers(head: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The cluster's GCS server and raylet (in the session of its ``ray start``)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if os.getsid(process.pid) != head.pid:
                continue
        except (ProcessLookupError, PermissionError):
            continue
        if any(name in " ".join(process.info["cmdline"] or []) for name in ("gcs_server", "raylet")):
            found.append(process)
    return found


def _training(store: str, timeout_s: float = 180) -> psutil.Process:
    """The training's process, once its run is RUNNING in ``store``."""
    deadline = time.monotonic() + timeout_s
    mlflow.set_tracking_uri(store)
    try:
        while time.monotonic() < deadline:
            running = mlflow.search_runs(
                search_all_experiments=True,
                filter_string=f"tags.`{tracking.TAG_ROLE}` = '{tracking.ROLE_TRAIN}' and attributes.status = 'RUNNING'",
                output_format="list",
            )
            processes = [
                process
                for process in psutil.process_iter(["cmdline"])
                if "thread_bench.torch_train" in " ".join(process.info["cmdline"] or [])
            ]
            if running and processes:
                return processes[0]
            time.sleep(0.5)
    finally:
        mlflow.set_tracking_uri(None)
    raise AssertionError("no training started")


def test_a_lost_ray_cluster_ends_the_study_at_once_in_one_line_with_its_runs_killed(tmp_path: Path) -> None:
    directory = short_tmp_dir("tbrl")
    head, cluster = start_ray_cluster(directory, cpus=1)
    study = None
    try:
        store = f"sqlite:///{tmp_path / 'mlflow.db'}"
        environment = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
        environment |= {**cluster.environment, "MLFLOW_TRACKING_URI": store, "THREAD_BENCH_DATA": str(tmp_path)}
        argv = ["--profile", "smoke", "--epochs", "200", "--seeds", "1", "--frameworks", "torch", "--study", "lost"]
        argv += ["--executor", "ray", "--ray_address", cluster.address, "--out", str(tmp_path / "out")]
        study = subprocess.Popen(
            [sys.executable, "-m", "thread_bench.study", *argv],
            cwd=tmp_path,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        training = _training(store)
        servers = _cluster_servers(head)
        assert len(servers) == 2, [server.cmdline() for server in servers]
        for server in servers:
            server.kill()
        killed = time.monotonic()
        _, stderr = study.communicate(timeout=120)
        waited = time.monotonic() - killed
    finally:
        if study is not None and study.poll() is None:
            study.kill()
            study.communicate()
        stop_ray_cluster(head)
        shutil.rmtree(directory, ignore_errors=True)

    assert study.returncode == 1, stderr[-3000:]
    # Detected by the study's own watch (HEAD_PROBES polls), long before Ray's core would give up (60 s).
    assert waited < 30, waited
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"python -m thread_bench.study: error: Ray cluster {cluster.address} is gone: its head ")
    assert "1 running training ended KILLED" in last and last.endswith("no MLflow run is left RUNNING"), last
    assert "Traceback" not in stderr and "rpc_client" not in stderr, stderr[-3000:]
    psutil.wait_procs([training], timeout=30)
    assert not training.is_running(), "the training died with its cluster"

    mlflow.set_tracking_uri(store)
    try:
        runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    finally:
        mlflow.set_tracking_uri(None)
    statuses = {run.data.tags.get(tracking.TAG_ROLE): run.info.status for run in runs}
    assert statuses[tracking.ROLE_STUDY] == "KILLED" and statuses[tracking.ROLE_TRAIN] == "KILLED", statuses
    assert "RUNNING" not in {run.info.status for run in runs}
    (study_run,) = [run for run in runs if run.data.tags.get(tracking.TAG_ROLE) == tracking.ROLE_STUDY]
    assert study_run.data.tags[tracking.TAG_END_REASON].startswith(f"Ray cluster {cluster.address} is gone")


def test_a_head_that_answers_is_not_taken_for_lost() -> None:
    """The watch's probe: a listening port passes; a refused one counts, and only HEAD_PROBES in a row end it."""
    import socket

    ended: list[executors.Ending] = []
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        watch = executors.HeadWatch("test", f"127.0.0.1:{listening.getsockname()[1]}")
        for _ in range(executors.HEAD_PROBES + 1):
            watch.check({}, ended.append)
        closed = watch.address
    assert not watch.lost
    watch = executors.HeadWatch("test", closed)  # nothing listens there now
    for _ in range(executors.HEAD_PROBES - 1):
        watch.check({}, ended.append)
    with pytest.raises(executors.lifecycle.WorkLost, match=r"Ray cluster test is gone: its head 127\.0\.0\.1:"):
        watch.check({}, ended.append)
    assert watch.lost and ended == []
