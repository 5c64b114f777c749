"""Process lifecycle: stop signals, child processes that die with their parent, and who owns a run.

**Signals.** SIGTERM is handled like Ctrl-C (SIGINT): both raise :class:`Interrupted`, a ``KeyboardInterrupt``,
in the main thread, so every ``except KeyboardInterrupt`` / ``finally`` on the way out runs (the MLflow run is
marked KILLED, a staging directory is removed, worker pools are terminated). A signal that arrives while
bookkeeping must not be torn in half (:func:`deferred_signals`: starting or ending a run) is held and raised
when the section ends. The signal is also remembered (:func:`stop_signal`), because native code may turn the
``KeyboardInterrupt`` raised inside a Python callback into another exception (pybind11 does, under Keras).

**Children.** A child started with :data:`PARENT_PID_ENV` set (or a worker calling :func:`die_with_parent`)
asks the kernel for SIGTERM when its parent dies (Linux ``PR_SET_PDEATHSIG``), so a study killed even with
SIGKILL takes its training with it instead of leaving it to finish as an orphan.

**Owners.** :class:`ProcessIdentity` names a process across time (host, pid, start time since boot, and the
kernel's boot and pid-namespace ids, so that a reused pid or another container with the same host name is not
mistaken for the owner). Runs carry it as tags; a RUNNING run whose owner is gone can then be reconciled.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import psutil

log = logging.getLogger(__name__)

#: The signals handled like Ctrl-C.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Set by a parent for a child that must not outlive it; the value is the parent's pid.
PARENT_PID_ENV = "THREAD_BENCH_PARENT_PID"
#: Two readings of one process's start (clock ticks since boot) differ by float rounding only.
_START_TIME_TOLERANCE_S = 0.005
#: Start times above this (about 32 years of uptime) were recorded as wall-clock seconds since the epoch, before
#: identities used the time since boot; such a reading moves with the clock, so it is compared loosely.
_EPOCH_START_TIMES = 1e9
_EPOCH_TOLERANCE_S = 2.0
_PR_SET_PDEATHSIG = 1


class Interrupted(KeyboardInterrupt):
    """A stop signal (SIGINT or SIGTERM) arrived; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


class WorkLost(RuntimeError):
    """The machines running the work are gone (a Ray cluster died): its runs end KILLED, as work stopped by a
    signal does, and the command ends with this error's one line."""


# ------------------------------------------------------------------------------------------- signals


@dataclass
class _SignalState:
    received: int | None = None
    defer_depth: int = 0
    pending: bool = False


_state = _SignalState()


def _handle(signum: int, frame: FrameType | None) -> None:
    if _state.received is None:
        _state.received = signum
    if _state.defer_depth:
        _state.pending = True
        log.warning("%s received: stopping once the run's bookkeeping is done", signal.Signals(signum).name)
        return
    raise Interrupted(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Handle SIGINT and SIGTERM as :class:`Interrupted` inside the block (entry points wrap ``main`` in it).

    Restores the previous handlers on exit, so that a test calling ``main`` leaves pytest's own alone. Outside
    the main thread (where Python cannot set handlers) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _handle) for signum in STOP_SIGNALS}
    _reset()
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _reset()  # a later block (another main() in the same process) starts with no signal received


def _reset() -> None:
    _state.received, _state.pending, _state.defer_depth = None, False, 0


def stop_signal() -> int | None:
    """The stop signal received inside :func:`stop_on_signals`, if any (even one that native code swallowed)."""
    return _state.received


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold a stop signal until the block ends, then raise it: for bookkeeping that must complete."""
    _state.defer_depth += 1
    try:
        yield
    finally:
        _state.defer_depth -= 1
        if _state.defer_depth == 0 and _state.pending:
            _state.pending = False
            assert _state.received is not None
            raise Interrupted(_state.received)


def exit_status(interrupt: KeyboardInterrupt) -> int:
    """The shell's convention for a process stopped by a signal: 128 + the signal number (130, 143)."""
    # A plain KeyboardInterrupt after a stop signal: native code (Ray's waits) raised its own for our SIGTERM.
    signum = interrupt.signum if isinstance(interrupt, Interrupted) else (stop_signal() or signal.SIGINT)
    return 128 + int(signum)


def describe_stop(interrupt: BaseException) -> str:
    """``signal SIGTERM``, ``signal SIGINT`` or ``KeyboardInterrupt`` (for the run's end-reason tag)."""
    signum = interrupt.signum if isinstance(interrupt, Interrupted) else stop_signal()
    return f"signal {signal.Signals(signum).name}" if signum is not None else type(interrupt).__name__


# ------------------------------------------------------------------------------------------ children


def die_with_parent(parent_pid: int) -> None:
    """Ask for SIGTERM when the parent dies (Linux); stop at once if it already has. Elsewhere: nothing."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        log.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d): this process may outlive its parent", errno)
        return
    if os.getppid() != parent_pid:
        # The parent died before the request was made: the kernel will not send the signal now.
        signal.raise_signal(signal.SIGTERM)


def die_with_parent_from_environment() -> None:
    """:func:`die_with_parent` for a process started with :data:`PARENT_PID_ENV` (removed, so that this
    process's own children do not take it for theirs), or by ``mlflow run`` (``MLFLOW_RUN_ID`` set), whose
    launcher is the parent: a SIGTERM ends the launcher at once without passing the signal on, and the work
    would run on, reparented, with its launch run left RUNNING; this way the kernel passes it on."""
    value = os.environ.pop(PARENT_PID_ENV, None)
    if value:
        die_with_parent(int(value))
    elif os.environ.get("MLFLOW_RUN_ID"):
        die_with_parent(os.getppid())


def child_environment(environment: Mapping[str, str]) -> dict[str, str]:
    """``environment`` plus :data:`PARENT_PID_ENV` = this process."""
    return {**environment, PARENT_PID_ENV: str(os.getpid())}


def run_child(command: Sequence[str], environment: Mapping[str, str], *, grace_s: float, cwd: str | None = None) -> int:
    """Run ``command`` (in ``cwd``, default this process's) to completion and return its exit status.

    When this process is interrupted meanwhile, the child gets SIGTERM (it ends its own run, KILLED) and
    ``grace_s`` seconds to exit before SIGKILL; a second interrupt kills it at once. Then the interrupt
    propagates.
    """
    process = subprocess.Popen(list(command), env=dict(environment), cwd=cwd)
    try:
        while True:
            # In steps, not one blocking wait: an interrupt raised without a signal (PyErr_SetInterrupt, which
            # is how Ray cancels the task running this in a worker) is only seen between two bytecodes.
            with contextlib.suppress(subprocess.TimeoutExpired):
                return process.wait(timeout=0.5)
    except BaseException:
        stop_child(process, grace_s)
        raise


def stop_child(process: subprocess.Popen[bytes], grace_s: float) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        log.warning("child %d did not stop within %.0f s of SIGTERM: killing it", process.pid, grace_s)
        process.kill()
        process.wait()
    except KeyboardInterrupt:
        process.kill()
        process.wait()
        raise


@contextlib.contextmanager
def interrupts_ignored_by_new_children() -> Iterator[None]:
    """Children started in the block inherit SIGINT ignored (Python then installs no handler of its own).

    For worker pools: the parent handles Ctrl-C and terminates them; otherwise every worker prints its own
    ``KeyboardInterrupt`` traceback, even one still importing modules. Keep the block to the creation of the
    processes (milliseconds): this thread blocks SIGINT meanwhile, so a Ctrl-C stays pending and arrives when
    the block ends, but one that the kernel hands to another thread of this process (OpenCV's, BLAS') is lost.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


# -------------------------------------------------------------------------------------------- owners


@dataclass(frozen=True)
class ProcessIdentity:
    """A process, told apart from any later process with the same pid or in another container."""

    host: str
    pid: int
    #: Seconds from the kernel's boot to the process's start (:func:`start_since_boot`).
    start_time: float
    #: The kernel's boot id and pid namespace: pids are only comparable when both match.
    namespace: str

    @classmethod
    def current(cls) -> ProcessIdentity:
        return cls.of(os.getpid())

    @classmethod
    def of(cls, pid: int) -> ProcessIdentity:
        """Process ``pid`` of this machine (``psutil.NoSuchProcess`` when there is none)."""
        return cls(socket.gethostname(), pid, start_since_boot(pid), _namespace())

    def on_this_machine(self) -> bool:
        """True when this process can tell whether the owner is alive (same host, boot and pid namespace)."""
        return self.host == socket.gethostname() and self.namespace == _namespace()

    def alive(self) -> bool:
        """True while the process runs (only meaningful :meth:`on_this_machine`)."""
        try:
            process = psutil.Process(self.pid)
            if process.status() == psutil.STATUS_ZOMBIE:
                return False
            if self.start_time > _EPOCH_START_TIMES:  # recorded by an older version, in wall-clock time
                return abs(process.create_time() - self.start_time) < _EPOCH_TOLERANCE_S
            return abs(start_since_boot(self.pid) - self.start_time) < _START_TIME_TOLERANCE_S
        except psutil.NoSuchProcess:
            return False

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}"


def start_since_boot(pid: int) -> float:
    """Seconds from the kernel's boot to process ``pid``'s start: ``starttime`` of ``/proc/<pid>/stat``, in clock
    ticks, fixed for the process's life.

    Not psutil's ``create_time``: that adds the boot time, which Linux recomputes from the current wall clock at
    each read of ``/proc/stat`` (``btime``), so when NTP adjusts the clock two processes read one process's start a
    second apart, and a live owner reads as gone (psutil issue 2526).

    Without ``/proc`` (macOS), psutil's wall-clock start, the only one there: it reads above
    :data:`_EPOCH_START_TIMES` and is compared loosely, as an older version's record is.

    Raises:
        psutil.NoSuchProcess: there is no process ``pid``.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        if not Path("/proc/self/stat").exists():
            return float(psutil.Process(pid).create_time())
        raise psutil.NoSuchProcess(pid) from None
    # The command name (field 2) is in parentheses and may hold spaces or ')'; starttime is field 22.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _namespace() -> str:
    boot = Path("/proc/sys/kernel/random/boot_id")
    boot_id = boot.read_text().strip() if boot.is_file() else "unknown-boot"
    try:
        pid_namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        pid_namespace = "unknown-pidns"
    return f"{boot_id}/{pid_namespace}"


# --------------------------------------------------------------------------------------------- locks


@contextlib.contextmanager
def directory_lock(directory: Path) -> Iterator[None]:
    """An exclusive lock on ``directory`` (``flock`` on the directory itself: no lock file is left behind),
    held by one process at a time on this machine; released when the block ends or the process dies."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock
