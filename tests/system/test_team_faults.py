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

import psutil
import pytest

from conftest import free_port, short_tmp_dir
from thread_bench import server
from thread_bench.store import StoreError

pytestmark = pytest.mark.system


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
    port = free_port()
    command = [sys.executable, "-m", "thread_bench.server", "--dir", str(directory), "--port", str(port)]
    team = subprocess.Popen([*command, "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert team.stdout is not None
    line = team.stdout.readline()
    if not line.startswith("tracking server http://"):
        team.kill()
        raise RuntimeError(f"the team server did not start: {line}{team.communicate()[1][-3000:]}")
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


def test_when_postgresql_dies_the_tracking_server_is_stopped_saying_so(team_dir: Path) -> None:
    team, port, mlflow_server = _start(team_dir)
    postmaster = int((team_dir / "postgres" / "postmaster.pid").read_text().split()[0])
    os.kill(postmaster, signal.SIGKILL)
    stderr = _ended(team, mlflow_server.pid, port)
    assert f"PostgreSQL ({(team_dir / 'postgres').resolve()}) stopped under the tracking server" in stderr
