"""Shared fixtures, and the tests' roles.

The tests live in folders by role, and each folder's tests carry its marker: ``unit/`` (pure functions and
modules, no MLflow store, no framework training: ``pytest -m unit`` in well under a minute), ``integration/``
(trainers, frameworks side by side, the store and the analysis on a temporary store, entry points called in
process), ``system/`` (whole commands as processes: studies with their trainings, the team's server, Ray,
concurrent processes on one store). Helper modules stay here, next to this file, and are imported by bare name.
"""

from __future__ import annotations

import contextlib
import http.server
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest

from thread_bench.backends import tensorflow_backend

# The tests' own process computes as the suite's trainings and served models do, whichever test starts
# TensorFlow first: with its oneDNN kernels on every processor.
tensorflow_backend.prefer_onednn()


@contextlib.contextmanager
def private_store(directory: Path) -> Iterator[str]:
    """An MLflow store of its own (SQLite + artifacts in ``directory``, also the working directory) for a module's
    fixture (creating a SQLite schema takes seconds, not worth repeating per test); nothing of the environment's
    MLflow run or experiment leaks in."""
    uri = f"sqlite:///{directory / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(directory)
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
            patch.delenv(name, raising=False)
        mlflow.set_tracking_uri(uri)
        yield uri
        mlflow.set_tracking_uri(None)


@pytest.fixture
def tracking_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private MLflow store (SQLite + artifacts under tmp_path); the working directory is tmp_path too."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)  # mlflow.set_experiment sets it for the process
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


@pytest.fixture(autouse=True)
def _no_environment_leaks() -> Iterator[None]:
    """Every test ends with the process environment it started with. Tests set variables with ``monkeypatch``;
    this also undoes what the code under test sets for the rest of the process: ``Framework.load_trainer``
    (the Keras backend, thread and determinism settings) and ``mlflow.set_experiment`` (``MLFLOW_EXPERIMENT_ID``,
    which a later ``mlflow run`` in a subprocess would otherwise take for its experiment)."""
    import os

    before = dict(os.environ)
    yield
    if dict(os.environ) != before:
        os.environ.clear()
        os.environ.update(before)


def tracking_constants() -> dict[str, str]:
    """Every MLflow name ``thread_bench.tracking`` and the registered workloads' ``keys`` modules define, by
    constant: their upper-case string constants, but the role values (tag values) and the default experiment."""
    import importlib

    from thread_bench import tracking

    modules = [tracking]
    modules += [importlib.import_module(f"thread_bench.workloads.{name}.keys") for name in ("thread_density", "digits")]
    return {
        f"{module.__name__}.{name}": value
        for module in modules
        for name, value in vars(module).items()
        if name.isupper() and isinstance(value, str) and not name.startswith(("ROLE_", "DEFAULT_"))
    }


def config_params() -> set[str]:
    """The params the config dataclasses' fields are logged as (their own names; a data config's seed as
    ``data_seed``), of the protocol and every registered workload."""
    import dataclasses

    from thread_bench import tracking, workloads
    from thread_bench.config import TrainConfig

    classes: list[type] = [TrainConfig]
    classes += [workload.model_config for workload in workloads.WORKLOADS.values()]
    names = {field.name for cls in classes for field in dataclasses.fields(cls)}
    data = [workload.data_config for workload in workloads.WORKLOADS.values()]
    return names | {tracking.data_param(field.name) for cls in data for field in dataclasses.fields(cls)}


def tracking_names() -> set[str]:
    """The constants' values, the config params, and the names the workloads' keys functions make (a class's
    accuracy, a framework's ping-pong scores)."""
    from thread_bench import frameworks
    from thread_bench.workloads.digits import keys as digits_keys

    made = {digits_keys.class_accuracy(split, label) for split in ("val", "test") for label in range(10)}
    quantities = [
        value for name, value in vars(digits_keys).items() if name.startswith("PINGPONG_") and "TEMPLATE" not in name
    ]
    made |= {
        digits_keys.pingpong_metric(framework, quantity) for framework in frameworks.NAMES for quantity in quantities
    }
    return set(tracking_constants().values()) | config_params() | made


def names_not_in_tracking(run: mlflow.entities.Run) -> set[str]:
    """The params, metrics and tags ``run`` carries that ``thread_bench.tracking`` does not name, leaving out
    MLflow's own (``mlflow.*`` tags, ``system/*`` metrics)."""
    logged = set(run.data.params) | {m for m in run.data.metrics if not m.startswith("system/")}
    logged |= {tag for tag in run.data.tags if not tag.startswith("mlflow.")}
    return logged - tracking_names()


def make_fake_prepared(tmp_path: Path, n_train: int, n_val: int, n_test: int, size: int) -> Path:
    """A tiny prepared dataset in the layout of ``thread_bench.data.prepared`` (random stripes whose
    frequency is the label, so a model can learn something); returns its directory."""
    import json

    import numpy as np

    from thread_bench.data import prepared

    directory = tmp_path / "fake-prepared"
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    columns = np.arange(size)
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        labels = rng.uniform(6.0, 23.0, n).astype(np.float32)
        phases = rng.uniform(0, 2 * np.pi, n)
        waves = np.sin(2 * np.pi * labels[:, None] * columns[None, :] / (4.0 * size) * 4 + phases[:, None])
        images = np.repeat(((waves + 1) * 127.5).astype(np.uint8)[:, None, :], size, axis=1)
        arrays = {
            "images": images,
            "labels": labels,
            "density_h": rng.uniform(6.0, 23.0, n).astype(np.float32),
            "patch_index": np.arange(n, dtype=np.int32),
        }
        for name, array in arrays.items():
            np.save(directory / prepared.array_filename(split, name), array)
    manifest = {
        "format_version": prepared.FORMAT_VERSION,
        "key": "fake",
        "seed": 0,
        "settings": {"seed": 0, "input_size": size, "subpatches_per_patch": 1},
        "splits": {"train": {"n": n_train}, "val": {"n": n_val}, "test": {"n": n_test}},
    }
    manifest["content_digest"] = prepared.content_digest(directory, manifest)
    (directory / prepared.MANIFEST).write_text(json.dumps(manifest))
    return directory


# ------------------------------------------------------------------ a team tracking server and a Ray cluster


@contextlib.contextmanager
def local_http_server(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` answering on 127.0.0.1 from a thread of this process (a stand-in server); yields its URL."""
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def short_tmp_dir(prefix: str) -> Path:
    """A folder with a short path, readable by other accounts: PostgreSQL's and Ray's Unix sockets live under it
    (107-byte limit), and pgserver runs PostgreSQL as an unprivileged account when the tests run as root."""
    import tempfile

    directory = Path(tempfile.mkdtemp(prefix=prefix))
    directory.chmod(0o755)
    return directory


def start_team_server(directory: Path, *, workers: int) -> tuple[subprocess.Popen[str], str]:
    """``python -m thread_bench.server`` on ``directory`` and a free port, started and answering: the process
    and the tracking URL from the one line it prints once both of its servers answer."""
    import sys

    command = [sys.executable, "-m", "thread_bench.server", "--dir", str(directory), "--port", str(free_port())]
    process = subprocess.Popen(
        [*command, "--workers", str(workers)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("tracking server http://"):
        process.kill()
        raise RuntimeError(f"the team server did not start: {line}{process.communicate()[1][-3000:]}")
    return process, line.split()[2]


@dataclass(frozen=True)
class TeamServer:
    url: str
    directory: Path

    def database_uri(self, database: str) -> str:
        """A database of the server's PostgreSQL (``python -m thread_bench.server`` keeps it in DIR/postgres)."""
        from thread_bench import server

        return server.LocalPostgres(self.directory / "postgres").uri(database)


@pytest.fixture(scope="session")
def team_server() -> Iterator[TeamServer]:
    """The team's tracking server as a team starts it (``python -m thread_bench.server``: its own PostgreSQL,
    ``mlflow server`` with proxied artifacts) on 127.0.0.1, once for the whole test session: starting them and
    creating MLflow's schema takes seconds, not worth repeating per test. Stopped with SIGTERM, as Ctrl-C would."""
    import shutil
    import signal

    directory = short_tmp_dir("tb-team-")
    process, url = start_team_server(directory, workers=1)
    yield TeamServer(url, directory)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143 and "Traceback" not in stderr, stderr[-3000:]
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def team_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data root for the tests that train against the team server (the smoke dataset is prepared once)."""
    return tmp_path_factory.mktemp("team-data")


@pytest.fixture
def team_store(team_server: TeamServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The session's tracking server as this test's store (``MLFLOW_TRACKING_URI=http://…``); the working
    directory is tmp_path, so nothing can lean on a local store by accident."""
    url = team_server.url
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    mlflow.set_tracking_uri(url)
    yield url
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


@dataclass(frozen=True)
class RayCluster:
    #: The head's address, for ``--ray_address``.
    address: str
    #: What a driver needs in its environment to join: the cluster's own authentication token (Ray 2.60 turns
    #: token authentication on by default and would otherwise read ~/.ray/auth_token, shared by every cluster).
    environment: dict[str, str]


def start_ray_cluster(directory: Path, *, cpus: int) -> tuple[subprocess.Popen[bytes], RayCluster]:
    """A local Ray cluster of ``cpus`` CPUs (``ray start --head --block`` in a session of its own, its files in
    ``directory``), with a token of its own; stop it with :func:`stop_ray_cluster`."""
    import os
    import sys
    import time
    import uuid

    token = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex}
    port = free_port()
    log_path = directory / "ray-start.log"
    command = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--port", str(port)]
    command += ["--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus), "--num-gpus", "0"]
    command += ["--temp-dir", str(directory), "--include-dashboard", "false", "--disable-usage-stats"]
    command += ["--object-store-memory", str(200 * 2**20), "--ray-client-server-port", str(free_port())]
    command += ["--dashboard-agent-listen-port", str(free_port()), "--metrics-export-port", str(free_port())]
    with log_path.open("wb") as output:
        process = subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, **token, "RAY_USAGE_STATS_ENABLED": "0"},
            start_new_session=True,
        )
    deadline = time.monotonic() + 120
    while "Ray runtime started" not in log_path.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"ray start failed: {log_path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)
    return process, RayCluster(f"127.0.0.1:{port}", token)


def stop_ray_cluster(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to ``ray start --block`` (it stops what it started), then SIGKILL to its whole session."""
    import os
    import signal

    import psutil

    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    for left in psutil.process_iter():  # what a killed head left behind (its workers, its other servers)
        with contextlib.suppress(psutil.Error, OSError):
            if os.getsid(left.pid) == process.pid:
                left.kill()


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """A local Ray cluster of 2 CPUs for the session, stopped at the end."""
    import shutil

    directory = short_tmp_dir("tbray")
    process, cluster = start_ray_cluster(directory, cpus=2)
    yield cluster
    stop_ray_cluster(process)
    shutil.rmtree(directory, ignore_errors=True)


#: The roles, by folder (``tests/<role>/``): each is a marker declared in pyproject.toml.
ROLES = ("unit", "integration", "system")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test with the role of its folder, so that ``pytest -m unit`` (or ``integration``, ``system``)
    selects a role."""
    for item in items:
        role = item.path.parent.name
        if role in ROLES:
            item.add_marker(getattr(pytest.mark, role))
