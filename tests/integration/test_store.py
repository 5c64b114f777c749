"""An unusable tracking store is named in one line, quickly, before any work."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import local_http_server
from thread_bench import preprocessing, store, torch_train

#: An unprivileged account for the read-only cases: root may write anywhere.
NOBODY = 65534


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    """The keyword arguments of every HTTP request the store's probe makes (the requests still go out)."""
    from mlflow.utils import rest_utils

    calls: list[dict[str, object]] = []
    real = rest_utils.http_request

    def recording(*args: object, **kwargs: object) -> object:
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(rest_utils, "http_request", recording)
    return calls


def test_an_unreachable_server_is_named_within_seconds(probes: list[dict[str, object]]) -> None:
    """One attempt, bounded by the probe's timeout (no retries for minutes): "within seconds" without a clock."""
    with pytest.raises(store.StoreError) as raised:
        store.open_store("http://127.0.0.1:9")

    assert str(raised.value).startswith(
        "tracking store http://127.0.0.1:9 is unreachable ([Errno 111] Connection refused)"
    )
    assert "\n" not in str(raised.value)
    assert [(call["max_retries"], call["timeout"]) for call in probes] == [(0, (store.PROBE_TIMEOUT_S, 30.0))]


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A server that accepts connections and never answers (a hung proxy, a firewall that drops replies)."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


def test_a_server_that_never_answers_is_named_after_the_answer_timeout(
    silent_server: str, probes: list[dict[str, object]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """It accepted the connection, so it had as long to answer as any call (the user's MLFLOW_HTTP_REQUEST_TIMEOUT,
    here 2 s), and the line says which wait ran out."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    expected = rf"{silent_server} is unreachable \(it accepted the connection but sent no answer within 2 s\)"
    with pytest.raises(store.StoreError, match=expected):
        store.open_store(silent_server)
    assert [(call["max_retries"], call["timeout"]) for call in probes] == [(0, (store.PROBE_TIMEOUT_S, 2.0))]


def test_a_timeout_that_is_not_a_number_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1.5")
    with pytest.raises(store.StoreError, match=r"^MLFLOW_HTTP_REQUEST_TIMEOUT='1.5': expected a whole number"):
        store.open_store("http://127.0.0.1:9")


@pytest.fixture
def slow_server() -> Iterator[str]:
    """A tracking server that answers every request correctly, but each only after 1.5 s (a server busy with a
    team's trainings starting at once, on few cores)."""
    import http.server
    import json

    import mlflow

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(1.5)
            body = mlflow.__version__ if self.path == "/version" else json.dumps({"experiments": []})
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: object) -> None:
            pass

    with local_http_server(Slow) as url:
        yield url


def test_a_busy_server_that_answers_after_the_connect_timeout_is_used(
    slow_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen in CI: of eight trainings started at once against one server on two cores, four were
    refused as "unreachable (no answer within 5 s)" by a server that was only busy. Answering later than the
    connect timeout (here 0.5 s) is not being absent."""
    monkeypatch.setattr(store, "PROBE_TIMEOUT_S", 0.5)
    assert store.open_store(slow_server) == slow_server


def test_an_error_after_mlflows_retries_says_which_wait_ran_out() -> None:
    """The line for a server lost mid-run names the wait MLflow used, not the probe's."""
    from mlflow.exceptions import MlflowException

    read = MlflowException(
        "API request to http://team:5000/api/2.0/mlflow/runs/log-batch failed with exception "
        "HTTPConnectionPool(host='team', port=5000): Read timed out. (read timeout=30.0)"
    )
    connect = MlflowException(
        "API request to http://team:5000/api/2.0/mlflow/runs/get failed with exception "
        "ConnectTimeoutError(<urllib3.connection.HTTPConnection object>, "
        "'Connection to team timed out. (connect timeout=30)')"
    )
    assert "it accepted the connection but sent no answer within 30 s" in str(store.unreachable(read))
    assert "(no connection within 30 s;" in str(store.unreachable(connect))


@pytest.fixture
def unprivileged_dir() -> Iterator[Path]:
    """A folder an unprivileged account can reach (pytest's own tmp folders are private to root)."""
    directory = Path(tempfile.mkdtemp(prefix="thread-bench-store-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


def _open_as_unprivileged(uri: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``open_store(uri)`` in a fresh process without root's right to write anywhere: as root, the process drops
    to an unprivileged account after its imports (the interpreter itself lives under /root)."""
    code = (
        "import os\n"
        "from thread_bench import store\n"
        "if os.geteuid() == 0:\n"
        f"    os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY})\n"
        "try:\n"
        f"    store.open_store({uri!r})\n"
        "except store.StoreError as error:\n"
        "    print(error)\n"
    )
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_read_only_stores_are_named_before_any_work(unprivileged_dir: Path) -> None:
    read_only_dir = unprivileged_dir / "read-only-dir"
    read_only_dir.mkdir()
    read_only_dir.chmod(0o555)
    writable_dir = unprivileged_dir / "writable-dir"
    writable_dir.mkdir()
    read_only_db = writable_dir / "mlflow.db"
    store.open_store(f"sqlite:///{read_only_db}")  # a complete store...
    read_only_db.chmod(0o444)  # ...that may only be read
    if os.geteuid() == 0:
        os.chown(writable_dir, NOBODY, NOBODY)

    cases = {
        f"sqlite:///{read_only_dir / 'mlflow.db'}": "is the folder",
        f"sqlite:///{read_only_db}": "attempt to write a readonly database; the file or its folder",
    }
    for uri, cause in cases.items():
        completed = _open_as_unprivileged(uri, unprivileged_dir)
        assert completed.returncode == 0, completed.stderr[-2000:]
        assert completed.stdout.startswith(f"tracking store {uri}: cannot "), completed.stdout
        assert cause in completed.stdout and completed.stdout.count("\n") == 1
        assert "Traceback" not in completed.stderr


def test_entry_points_stop_on_an_unusable_store_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setenv("THREAD_BENCH_DATA", str(tmp_path / "data"))
    for main, argv in (
        (preprocessing.main, ["--profile", "smoke"]),
        (torch_train.main, ["--profile", "smoke"]),
    ):
        started = time.monotonic()
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "tracking store http://127.0.0.1:9 is unreachable ([Errno 111] Connection refused)" in err
        assert err.count("\n") == 1
        assert time.monotonic() - started < 10
    assert not (tmp_path / "data").exists(), "nothing was prepared"


# ------------------------------------------------------------------------- a store broken by a race


def _half_made(path: Path) -> None:
    """A SQLite file as several `mlflow run` launchers creating one store at once left it: a few tables, an old
    migration stamped, a migration's temporary table left over."""
    import sqlite3

    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        db.execute("INSERT INTO alembic_version VALUES ('a8c4a736bde6')")
        db.execute("CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY, name VARCHAR(256))")
        db.execute("CREATE TABLE _alembic_tmp_tags (key VARCHAR(250), value VARCHAR(8000), run_uuid VARCHAR(32))")


def test_a_half_made_store_is_refused_with_the_way_to_repair_it_and_repaired(tmp_path: Path) -> None:
    path = tmp_path / "mlflow.db"
    _half_made(path)
    uri = f"sqlite:///{path}"
    with pytest.raises(store.StoreError) as refused:
        store.open_store(uri)
    assert str(refused.value).endswith(
        f"its schema was left half made, as by several processes creating it at once: "
        f"python -m thread_bench.store repair {uri}"
    )
    done = subprocess.run(
        [sys.executable, "-m", "thread_bench.store", "repair", uri], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"{uri} held no runs: made new (the broken file is kept as {path}.backup-")
    assert len(list(tmp_path.glob("mlflow.db.backup-*"))) == 1
    opened = subprocess.run(
        [sys.executable, "-c", "import sys; from thread_bench import store; store.open_store(sys.argv[1])", uri],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert opened.returncode == 0, opened.stderr[-2000:]


def test_a_store_with_runs_keeps_them_and_loses_only_the_leftovers(tmp_path: Path) -> None:
    import sqlite3

    import mlflow

    path = tmp_path / "mlflow.db"
    uri = f"sqlite:///{path}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.create_run(client.create_experiment("kept"))
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE _alembic_tmp_runs (run_uuid VARCHAR(32))")
    done = subprocess.run(
        [sys.executable, "-m", "thread_bench.store", "repair", uri], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "migrations completed, dropped _alembic_tmp_runs (backup: " in done.stdout
    assert store._migration_leftovers(path) == []
    assert mlflow.MlflowClient(tracking_uri=uri).get_run(run.info.run_id).info.run_id == run.info.run_id


def test_repair_knows_sqlite_files_only(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        store.main(["repair", "http://127.0.0.1:5000"])
    assert stopped.value.code == 2
    assert "repair knows SQLite files only" in capsys.readouterr().err


def test_launchers_racing_on_a_store_a_command_made_first_all_open_it(tmp_path: Path) -> None:
    """The supported order for several `mlflow run` at once on a new file (their launcher opens the store before
    any of the project's code runs): any thread_bench command first, which makes the schema under the lock. Four
    MLflow clients at once on a new file broke it in 2 of 3 trials; after open_store none fails."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store.open_store(uri)
    code = "import sys, mlflow; mlflow.MlflowClient(tracking_uri=sys.argv[1]).search_experiments()"
    launchers = [
        subprocess.Popen([sys.executable, "-c", code, uri], stderr=subprocess.PIPE, text=True) for _ in range(4)
    ]
    failures = [p.communicate(timeout=120)[1] for p in launchers if p.wait(timeout=120) != 0]
    assert not failures, failures[0][-2000:]
    assert store._migration_leftovers(tmp_path / "mlflow.db") == []
