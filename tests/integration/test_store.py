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
    assert [(call["max_retries"], call["timeout"]) for call in probes] == [(0, store.PROBE_TIMEOUT_S)]


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


def test_a_server_that_never_answers_is_named_after_the_probe_timeout(
    silent_server: str, probes: list[dict[str, object]]
) -> None:
    timeout = f"{store.PROBE_TIMEOUT_S:g}"
    with pytest.raises(store.StoreError, match=rf"{silent_server} is unreachable \(no answer within {timeout} s\)"):
        store.open_store(silent_server)
    assert [(call["max_retries"], call["timeout"]) for call in probes] == [(0, store.PROBE_TIMEOUT_S)]


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
