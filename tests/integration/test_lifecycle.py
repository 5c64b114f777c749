"""Stop signals and process ends: no run is left RUNNING, whatever ends the process."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import psutil
import pytest

from thread_bench import lifecycle, store, tracking

WORKERS = Path(__file__).parents[1] / "tracking_workers.py"


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One store for the module: its schema is created once (~2 s), not once per test."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    store.open_store(uri)
    return uri


@pytest.fixture
def tracking_store(shared_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", shared_store)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    mlflow.set_tracking_uri(shared_store)
    yield shared_store
    mlflow.set_tracking_uri(None)


def _start(mode: str, started: Path, *, uri: str) -> subprocess.Popen[str]:
    environment = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    environment.pop("MLFLOW_RUN_ID", None)
    return subprocess.Popen(
        [sys.executable, str(WORKERS), mode, "signals", str(started)],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path: Path, process: subprocess.Popen[str], timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while not (path.exists() and path.read_text()):
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"worker ended early ({process.returncode}): {process.communicate()[1][-2000:]}")
        time.sleep(0.02)
    return path.read_text()


def test_sigterm_and_sigint_mark_the_run_killed(tracking_store: str, tmp_path: Path) -> None:
    expected = {signal.SIGTERM: 143, signal.SIGINT: 130}
    workers = {signum: _start("hold", tmp_path / signum.name, uri=tracking_store) for signum in expected}
    run_ids = {signum: _wait_for(tmp_path / signum.name, process) for signum, process in workers.items()}

    for signum, process in workers.items():
        process.send_signal(signum)
    for signum, process in workers.items():
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == expected[signum]
        assert "Traceback" not in stderr
        run = mlflow.MlflowClient().get_run(run_ids[signum])
        assert run.info.status == "KILLED"
        assert run.data.tags[tracking.TAG_END_REASON] == f"signal {signum.name}"


def test_a_child_dies_with_its_parent_and_ends_its_run(tracking_store: str, tmp_path: Path) -> None:
    started = tmp_path / "started"
    parent = _start("parent", started, uri=tracking_store)
    run_id = _wait_for(started, parent)
    (child,) = psutil.Process(parent.pid).children()

    parent.kill()  # SIGKILL: the parent can do nothing; the kernel sends the child SIGTERM (PR_SET_PDEATHSIG)
    parent.communicate(timeout=30)
    psutil.wait_procs([child], timeout=60)

    assert not child.is_running()
    run = mlflow.MlflowClient().get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags[tracking.TAG_END_REASON] == "signal SIGTERM"


def test_a_run_left_running_by_a_killed_process_is_reconciled(tracking_store: str, tmp_path: Path) -> None:
    started = tmp_path / "started"
    process = _start("vanish", started, uri=tracking_store)
    process.communicate(timeout=60)
    run_id = started.read_text()
    client = mlflow.MlflowClient()
    assert process.returncode == -signal.SIGKILL
    assert client.get_run(run_id).info.status == "RUNNING"

    with tracking.tracked_run("signals", run_name="next"):  # the next run in the experiment cleans up
        pass

    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags[tracking.TAG_END_REASON].startswith("reconciled: its process (pid ")


def test_a_live_run_is_not_reconciled(tracking_store: str) -> None:
    with tracking.tracked_run("signals") as run:
        assert tracking.reconcile_runs([run.info.experiment_id]) == []
        assert mlflow.MlflowClient().get_run(run.info.run_id).info.status == "RUNNING"


def test_an_interrupt_that_native_code_turned_into_another_error_is_still_a_kill(tracking_store: str) -> None:
    """pybind11 (Keras on TensorFlow) re-raises a KeyboardInterrupt from a callback as another exception."""
    with (
        lifecycle.stop_on_signals(),
        pytest.raises(lifecycle.Interrupted) as raised,
        tracking.tracked_run("signals") as run,
    ):
        try:
            signal.raise_signal(signal.SIGTERM)
        except KeyboardInterrupt as interrupt:
            raise RuntimeError("error_already_set: KeyboardInterrupt") from interrupt

    assert raised.value.signum == signal.SIGTERM
    assert lifecycle.exit_status(raised.value) == 143
    finished = mlflow.MlflowClient().get_run(run.info.run_id)
    assert finished.info.status == "KILLED"
    assert finished.data.tags[tracking.TAG_END_REASON] == "signal SIGTERM"


def test_a_signal_during_bookkeeping_waits_for_its_end() -> None:
    with lifecycle.stop_on_signals():
        done = []
        with pytest.raises(lifecycle.Interrupted), lifecycle.deferred_signals():
            signal.raise_signal(signal.SIGTERM)
            done.append("bookkeeping")
        assert done == ["bookkeeping"]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, "the previous handler is back"


def test_a_failure_records_its_reason(tracking_store: str) -> None:
    with pytest.raises(ZeroDivisionError), tracking.tracked_run("signals") as run:
        print(1 / 0)
    finished = mlflow.MlflowClient().get_run(run.info.run_id)
    assert finished.info.status == "FAILED"
    assert finished.data.tags[tracking.TAG_END_REASON] == "ZeroDivisionError: division by zero"


def test_process_identity_tells_a_reused_pid_apart() -> None:
    me = lifecycle.ProcessIdentity.current()
    assert me.on_this_machine() and me.alive()
    assert not lifecycle.ProcessIdentity(me.host, me.pid, me.start_time - 60, me.namespace).alive()
    assert not lifecycle.ProcessIdentity("elsewhere", me.pid, me.start_time, me.namespace).on_this_machine()


def test_a_live_owner_stays_alive_when_the_clock_is_adjusted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Linux recomputes the boot time (``btime``) from the current wall clock at each read, so NTP moving the clock
    moves every process's wall-clock start by a second between two readers; eight concurrent trainings then took
    each other for gone, ended each other's runs and removed each other's staging folders (CI, stop 35). The
    identity is the start since boot, which no clock moves; one recorded by an older version (wall clock, since
    the epoch) is still recognised, loosely."""
    me = lifecycle.ProcessIdentity.current()
    wall_clock_start = psutil.Process().create_time()
    boot = psutil.boot_time()
    monkeypatch.setattr(psutil._pslinux, "boot_time", lambda: boot + 1.0)  # the clock stepped by NTP, as read now
    assert psutil.Process().create_time() == pytest.approx(wall_clock_start + 1.0), "the reading the fix avoids"
    assert me.alive()
    assert lifecycle.ProcessIdentity.current() == me
    legacy = lifecycle.ProcessIdentity(me.host, me.pid, wall_clock_start, me.namespace)
    assert legacy.alive()
    assert not dataclasses.replace(legacy, start_time=wall_clock_start - 60).alive()


def test_without_proc_the_wall_clock_start_stands_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """macOS has no /proc: the identity falls back to psutil's wall-clock start, compared loosely."""

    class NoProc(type(Path())):  # type: ignore[misc]
        def read_bytes(self) -> bytes:
            raise FileNotFoundError(str(self))

        def exists(self, *, follow_symlinks: bool = True) -> bool:
            return False

    monkeypatch.setattr(lifecycle, "Path", NoProc)
    me = lifecycle.ProcessIdentity.current()
    assert me.start_time == psutil.Process().create_time()
    assert me.alive()
    assert not dataclasses.replace(me, start_time=me.start_time - 60).alive()


def test_a_process_records_the_identity_another_process_reads_for_it() -> None:
    """The owner writes its own identity (a run's tags, a staging folder's name); another process checks it."""
    code = (
        "import dataclasses, json, sys; from thread_bench import lifecycle; "
        "print(json.dumps(dataclasses.asdict(lifecycle.ProcessIdentity.current())), flush=True); sys.stdin.read()"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdin is not None and child.stdout is not None
        recorded = lifecycle.ProcessIdentity(**json.loads(child.stdout.readline()))
        assert recorded == lifecycle.ProcessIdentity.of(child.pid)
        assert recorded.alive()
        child.stdin.close()
        child.wait(timeout=30)
    assert not recorded.alive()


def test_a_child_is_stopped_by_an_interrupt_raised_without_a_signal(tmp_path: Path) -> None:
    """Ray cancels the task running a training by PyErr_SetInterrupt (no signal wakes a blocking wait): the
    wait must still see it, stop the child (SIGTERM) and let the interrupt go on.

    Python's own SIGINT handler is put in place first: a process started in the background of a shell without job
    control (``cmd &`` in a script) inherits SIGINT ignored, and then ``interrupt_main`` does nothing at all."""
    import _thread
    import signal
    import threading

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    marker = tmp_path / "stopped"
    child = (
        "import signal, sys, time\n"
        f"signal.signal(signal.SIGTERM, lambda *_: (open({str(marker)!r}, 'w').close(), sys.exit(143)))\n"
        "time.sleep(600)\n"
    )
    timer = threading.Timer(0.5, _thread.interrupt_main)
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            lifecycle.run_child([sys.executable, "-c", child], dict(os.environ), grace_s=5)
        timer.join()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert marker.exists()  # ended by the SIGTERM run_child sent, not by its sleep running out
