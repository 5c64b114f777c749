"""Where a study's trainings run: one after another on this machine (``local``), or as tasks on a Ray cluster
(``ray``), behind one small protocol (:class:`Executor`) chosen by name from :data:`EXECUTORS`.

Either way a training is the same thing: the training entry point's command in a fresh process, with the
study's environment (tracking URI, data root, the run context that tags and nests its run), whose exit status
says how it went. The executor knows nothing of MLflow; the study hands it the jobs, an ``environment``
function (the variables of one attempt) and an ``ended`` callback (the study's bookkeeping after each attempt:
reconciliation, and ending the runs of a lost attempt).

**Ray** (imported only here, and only by :class:`RayExecutor`): each training is a Ray task that runs the
command in a subprocess on the worker, with the worker's own interpreter and environment plus the study's
variables, and returns the exit status. It asks for one GPU when the cluster has GPUs, otherwise for
``cpus_per_training`` CPUs; Ray places the tasks and runs as many at once as the resources allow. A task
lost with its worker or node surfaces here as a Ray error: the study marks the attempt's run KILLED (it
cannot check a pid on another machine) and the training is submitted again, up to ``retries`` times. A
training that fails on its own (exit status not 0) is not retried: a re-run of the study retries it, as with
the local executor. The training dies with its worker (parent-death signal), so a killed worker does not
leave a training running unseen. A cluster whose head stops answering is watched for (:class:`HeadWatch`):
the study then ends at once, its runs and the running trainings' KILLED, with one line.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from thread_bench import lifecycle
from thread_bench.progress import duration

log = logging.getLogger(__name__)

#: Seconds a probe of a Ray head's address may take.
PROBE_TIMEOUT_S = 3.0
#: Seconds between two looks at the running tasks (the driver stays interruptible meanwhile).
_POLL_S = 1.0


@dataclass(frozen=True)
class Job:
    """One training of a study, as a process to run."""

    #: (framework, variant, seed): what the training is, for the study's bookkeeping.
    key: tuple[str, str, int]
    #: For people: ``torch (default) seed 0``.
    label: str
    #: ``command[0]`` is the interpreter; a Ray worker puts its own in its place.
    command: tuple[str, ...]


@dataclass(frozen=True)
class Ending:
    """How one attempt at a job ended."""

    job: Job
    #: 1 for the first attempt.
    attempt: int
    #: The training process's exit status; None when it never ended by itself (lost, or the task failed).
    status: int | None
    #: The machine it ran on.
    host: str
    duration_s: float
    #: Why, when it did not succeed and the exit status does not say (lost with its worker, a task error).
    reason: str | None = None
    #: Lost with its worker or node (then retried, while retries are left).
    lost: bool = False

    @property
    def succeeded(self) -> bool:
        return self.status == 0

    def describe(self) -> str:
        if self.succeeded:
            return f"{self.job.label} finished on {self.host} in {duration(self.duration_s)}"
        why = self.reason or f"exit status {self.status}"
        return f"{self.job.label} (attempt {self.attempt}) on {self.host}: {why}"


#: The study's variables for one attempt of a job (the run context carries the attempt).
EnvironmentOf = Callable[[Job, int], Mapping[str, str]]
#: The study's bookkeeping after each attempt (called in the driver's main thread).
EndedCallback = Callable[[Ending], None]


class Executor(Protocol):
    """Runs a study's trainings. ``connect`` checks that it can (one-line ``ValueError`` otherwise, before any
    work); ``run`` runs every job to an end and returns each job's last :class:`Ending`, in the jobs' order."""

    name: str

    def connect(self, tracking_uri: str) -> None: ...

    def describe(self) -> str: ...

    def run(self, jobs: Sequence[Job], environment: EnvironmentOf, ended: EndedCallback) -> list[Ending]: ...

    def close(self) -> None: ...


# ----------------------------------------------------------------------------------------------- progress


@dataclass
class Progress:
    """finished/total, failures, retries and an estimate of the time left, logged after each training."""

    total: int
    #: Trainings that can run at once.
    slots: int
    finished: int = 0
    failed: int = 0
    retried: int = 0
    durations: list[float] = field(default_factory=list)
    started_at: float = field(default_factory=time.monotonic)

    def record(self, ending: Ending) -> None:
        self.durations.append(ending.duration_s)
        if ending.lost:
            self.retried += 1
            return
        self.finished += 1
        self.failed += not ending.succeeded

    def remaining_s(self) -> float | None:
        """Seconds left: the trainings to go at the mean duration so far, ``slots`` at a time."""
        left = self.total - self.finished
        if not self.durations or left <= 0:
            return None if left > 0 else 0.0
        mean = sum(self.durations) / len(self.durations)
        waves = -(-left // max(1, min(self.slots, left)))
        return mean * waves

    def line(self) -> str:
        remaining = self.remaining_s()
        parts = [f"{self.finished}/{self.total} trainings ended", f"{self.failed} failed"]
        if self.retried:
            parts.append(f"{self.retried} lost and retried")
        parts.append(f"{duration(time.monotonic() - self.started_at)} elapsed")
        if remaining is not None and self.finished < self.total:
            parts.append(f"about {duration(remaining)} left")
        return "progress: " + ", ".join(parts)


# ------------------------------------------------------------------------------------------------- local


class LocalExecutor:
    """Today's study: one training after another, each in a fresh process of this machine."""

    name = "local"

    def __init__(self, *, grace_s: float) -> None:
        self.grace_s = grace_s

    def connect(self, tracking_uri: str) -> None:
        pass

    def describe(self) -> str:
        return f"one at a time on {socket.gethostname()}"

    def run(self, jobs: Sequence[Job], environment: EnvironmentOf, ended: EndedCallback) -> list[Ending]:
        progress = Progress(total=len(jobs), slots=1)
        endings = []
        for job in jobs:
            log.info("training %s: %s", job.label, " ".join(job.command[1:]))
            started = time.monotonic()
            variables = {**lifecycle.child_environment(os.environ), **environment(job, 1)}
            variables.pop("MLFLOW_RUN_ID", None)
            try:
                status = lifecycle.run_child(job.command, variables, grace_s=self.grace_s)
            except BaseException:  # interrupted: the study's bookkeeping still runs, then the interrupt goes on
                with lifecycle.deferred_signals():
                    ended(Ending(job, 1, None, socket.gethostname(), time.monotonic() - started, "interrupted"))
                raise
            ending = Ending(job, 1, status, socket.gethostname(), time.monotonic() - started)
            ended(ending)
            progress.record(ending)
            log.log(logging.INFO if ending.succeeded else logging.ERROR, "%s; %s", ending.describe(), progress.line())
            endings.append(ending)
        return endings

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------------------------------- Ray


def run_training_task(
    command: Sequence[str], variables: Mapping[str, str], cwd: str | None, grace_s: float
) -> tuple[int, str, float]:
    """The body of a Ray task: run a training's command in a subprocess of this worker; returns (exit status,
    host, seconds). The interpreter is this worker's, the environment the worker's plus the study's variables;
    the training dies with this worker. Cancelled (the study was interrupted), the training gets SIGTERM and
    ``grace_s`` to end its run."""
    environment = {**os.environ, **variables}
    environment.pop("MLFLOW_RUN_ID", None)
    environment = lifecycle.child_environment(environment)  # the parent-death signal names this worker
    workdir = cwd if cwd and Path(cwd).is_dir() else None
    started = time.monotonic()
    status = lifecycle.run_child([sys.executable, *command[1:]], environment, grace_s=grace_s, cwd=workdir)
    return status, socket.gethostname(), time.monotonic() - started


class RayExecutor:
    """Trainings as Ray tasks on a cluster (see the module docstring)."""

    name = "ray"

    def __init__(self, address: str, *, retries: int, cpus_per_training: int, grace_s: float) -> None:
        self.address = address.strip()
        self.retries = retries
        self.cpus_per_training = cpus_per_training
        self.grace_s = grace_s
        self.slots = 1
        self._resources: dict[str, Any] = {}
        self._remote: Any = None
        self._connected = False
        self._head = HeadWatch("", "")

    def describe(self) -> str:
        where = self.address or os.environ.get("RAY_ADDRESS") or "a new local Ray instance"
        unit = "1 GPU" if "num_gpus" in self._resources else f"{self.cpus_per_training} CPU"
        return f"Ray cluster {where}: {self.slots} at a time, {unit} each"

    def connect(self, tracking_uri: str) -> None:
        """Connect to the cluster and size the tasks.

        Raises:
            ValueError: the address is unreachable or no Ray cluster answers there (one line, within seconds);
                the cluster has no node with the CPUs a training asks for; a cluster of several machines
                with a tracking store that only this machine can reach.
        """
        probe_address(self.address or os.environ.get("RAY_ADDRESS", ""))
        # Ray's C++ core would otherwise catch SIGTERM in this process and abort it (exit 134, a stack dump)
        # instead of letting the study stop its trainings and end its runs (lifecycle.stop_on_signals).
        os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
        import ray

        where = self.address or os.environ.get("RAY_ADDRESS") or "a new local Ray instance"
        options: dict[str, Any] = {"logging_level": logging.WARNING, "ignore_reinit_error": True}
        if not (self.address or os.environ.get("RAY_ADDRESS")):
            options["include_dashboard"] = False
        # ray.init sets a SIGTERM handler of its own (sys.exit): the study's (lifecycle.stop_on_signals) is put
        # back, so that SIGTERM stops the trainings and ends every run, as with the local executor.
        handlers = {signum: signal.getsignal(signum) for signum in lifecycle.STOP_SIGNALS}
        try:
            ray.init(address=self.address or None, **options)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as error:
            first = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
            raise ValueError(
                f"Ray cluster {where}: cannot connect ({first.strip()[:200]}); a cluster with token authentication "
                "(Ray's default) needs its token here too: RAY_AUTH_TOKEN, or ~/.ray/auth_token"
            ) from None
        finally:
            if threading.current_thread() is threading.main_thread():
                for signum, handler in handlers.items():
                    if handler is not None:
                        signal.signal(signum, handler)
        self._connected = True
        nodes = [node for node in ray.nodes() if node.get("Alive")]
        gpus = int(sum(node["Resources"].get("GPU", 0) for node in nodes))
        node_cpus = [int(node["Resources"].get("CPU", 0)) for node in nodes]
        if gpus:
            self._resources = {"num_gpus": 1, "num_cpus": min(self.cpus_per_training, max(node_cpus, default=1))}
            self.slots = gpus
        else:
            if self.cpus_per_training > max(node_cpus, default=0):
                raise ValueError(
                    f"--cpus_per_training {self.cpus_per_training}: no node of Ray cluster {where} has that many "
                    f"CPUs (nodes: {node_cpus})"
                )
            self._resources = {"num_cpus": self.cpus_per_training}
            self.slots = max(1, sum(cpus // self.cpus_per_training for cpus in node_cpus))
        scheme = urlparse(tracking_uri).scheme
        if len(nodes) > 1 and scheme not in ("http", "https"):
            raise ValueError(
                f"Ray cluster {where} has {len(nodes)} nodes but the tracking store {tracking_uri} is local to this "
                "machine: start a tracking server (scripts/team_server.sh) and set MLFLOW_TRACKING_URI=http://…"
            )
        self._remote = ray.remote(max_retries=0, retry_exceptions=False)(run_training_task)
        self._head = HeadWatch(where, ray.get_runtime_context().gcs_address)
        log.info("%s (%d nodes)", self.describe(), len(nodes))

    def run(self, jobs: Sequence[Job], environment: EnvironmentOf, ended: EndedCallback) -> list[Ending]:
        import ray

        assert self._remote is not None, "connect() first"
        progress = Progress(total=len(jobs), slots=self.slots)
        attempts = {job.key: 0 for job in jobs}
        running: dict[Any, tuple[Job, int, float]] = {}
        last: dict[tuple[str, str, int], Ending] = {}
        cwd = os.getcwd()

        def submit(job: Job) -> None:
            attempts[job.key] += 1
            attempt = attempts[job.key]
            task = self._remote.options(**self._resources, name=f"train {job.label} #{attempt}")
            reference = task.remote(list(job.command), dict(environment(job, attempt)), cwd, self.grace_s)
            running[reference] = (job, attempt, time.monotonic())

        for job in jobs:
            submit(job)  # Ray queues them; the cluster's resources decide how many run at once
        try:
            while running:
                self._head.check(running, ended)
                ready, _ = ray.wait(list(running), num_returns=1, timeout=_POLL_S)
                for reference in ready:
                    job, attempt, started = running.pop(reference)
                    ending = self._ending(ray, reference, job, attempt, started)
                    ended(ending)
                    progress.record(ending)
                    if ending.lost and attempt <= self.retries:
                        log.warning(
                            "%s; retrying it (attempt %d of %d)", ending.describe(), attempt + 1, 1 + self.retries
                        )
                        submit(job)
                        continue
                    last[job.key] = ending
                    level = logging.INFO if ending.succeeded else logging.ERROR
                    log.log(level, "%s; %s", ending.describe(), progress.line())
        except lifecycle.WorkLost:
            raise  # nothing left to cancel: the cluster and its tasks are gone
        except BaseException:
            self._cancel(ray, running)
            raise
        return [last[job.key] for job in jobs]

    @staticmethod
    def _ending(ray: Any, reference: Any, job: Job, attempt: int, started: float) -> Ending:
        from ray.exceptions import RayError, RayTaskError

        elapsed = time.monotonic() - started
        try:
            status, host, seconds = ray.get(reference)
            return Ending(job, attempt, int(status), str(host), float(seconds))
        except RayTaskError as error:  # the task itself raised (the command could not be started, …)
            cause = getattr(error, "cause", None)  # the exception raised on the worker; Ray's traceback is not said
            said = f"{type(cause).__name__}: {cause}" if cause is not None else str(error).strip().splitlines()[-1]
            message = " ".join(said.split())[:300]
            return Ending(job, attempt, None, "?", elapsed, reason=f"the Ray task failed: {message}")
        except RayError as error:  # the worker or its node is gone
            message = " ".join(str(error).split())[:200]
            reason = f"lost with its Ray worker or node ({type(error).__name__}: {message})"
            return Ending(job, attempt, None, "?", elapsed, reason=reason, lost=True)

    def _cancel(self, ray: Any, running: Mapping[Any, tuple[Job, int, float]]) -> None:
        """Interrupted: each running training gets SIGTERM (through the task) and the grace to end its run."""
        if not running:
            return
        log.warning("stopping %d running trainings (SIGTERM, %.0f s grace)", len(running), self.grace_s)
        for reference in running:
            ray.cancel(reference)
        with lifecycle.deferred_signals():
            ray.wait(list(running), num_returns=len(running), timeout=self.grace_s + 5)

    def close(self) -> None:
        if self._connected and not self._head.lost:  # a lost cluster: nothing to disconnect from
            import ray

            ray.shutdown()
        self._connected = False


#: Consecutive failed probes of a Ray head, one per poll, after which its cluster is taken for lost: Ray's own
#: core would wait for it 60 s (``gcs_rpc_server_reconnect_timeout_s``), then end the process with a C++ message.
HEAD_PROBES = 3
#: Seconds one probe of the head may take.
HEAD_PROBE_TIMEOUT_S = 2.0


class HeadWatch:
    """Watches a Ray cluster's head (its GCS address) while a study's tasks run; when it stops accepting
    connections, the running attempts are ended as lost (the study marks their runs KILLED) and the study stops
    with one line (:class:`lifecycle.WorkLost`), within seconds, not when Ray's core gives up."""

    def __init__(self, where: str, gcs_address: str) -> None:
        self.where, self.address = where, gcs_address
        self.failures, self.lost = 0, False

    def check(self, running: Mapping[Any, tuple[Job, int, float]], ended: EndedCallback) -> None:
        cause = self._probe()
        self.failures = self.failures + 1 if cause else 0
        if self.failures < HEAD_PROBES:
            return
        self.lost = True
        reason = f"lost with Ray cluster {self.where}, whose head {self.address} is gone ({cause})"
        for job, attempt, started in running.values():
            ended(Ending(job, attempt, None, "?", time.monotonic() - started, reason=reason, lost=True))
        raise lifecycle.WorkLost(
            f"Ray cluster {self.where} is gone: its head {self.address} does not answer ({cause}); "
            f"{_count(len(running), 'running training')} ended KILLED; start the cluster again and re-run the same "
            "command to resume the study"
        )

    def _probe(self) -> str | None:
        """None when the head accepts a connection; else the operating system's words."""
        host, _, port = self.address.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=HEAD_PROBE_TIMEOUT_S):
                return None
        except OSError as error:
            return f"[Errno {error.errno}] {error.strerror}" if error.errno else "no answer"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def probe_address(address: str) -> None:
    """A Ray head's ``host:port`` (or ``ray://host:port``) must accept a connection and a gRPC handshake, each
    within :data:`PROBE_TIMEOUT_S`; ``""`` and ``auto`` are left to Ray (which fails fast without a cluster).

    Raises:
        ValueError: one line naming the address and what was tried.
    """
    if address in ("", "auto", "local"):
        return
    parsed = urlparse(address if "://" in address else f"ray-gcs://{address}")
    if not parsed.hostname or parsed.port is None:
        raise ValueError(f"--ray_address {address!r}: expected host:port (the head's `ray start --head --port`), auto")
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as error:
        cause = (
            f"[Errno {error.errno}] {error.strerror}" if error.errno else f"no answer within {PROBE_TIMEOUT_S:.0f} s"
        )
        raise ValueError(
            f"Ray cluster {address} is unreachable (TCP connect to {parsed.hostname}:{parsed.port}: {cause}); start "
            "it with `ray start --head --port PORT` or pass another --ray_address"
        ) from None
    # Something listens; a Ray head speaks gRPC there. Anything else would keep ray.init retrying for minutes.
    import grpc

    channel = grpc.insecure_channel(f"{parsed.hostname}:{parsed.port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=PROBE_TIMEOUT_S)
    except grpc.FutureTimeoutError:
        raise ValueError(
            f"Ray cluster {address}: {parsed.hostname}:{parsed.port} accepts connections but does not answer as a Ray "
            f"head (no gRPC handshake within {PROBE_TIMEOUT_S:.0f} s); is it the port of `ray start --head --port`?"
        ) from None
    finally:
        channel.close()


def _local(*, ray_address: str, retries: int, cpus_per_training: int, grace_s: float) -> Executor:
    return LocalExecutor(grace_s=grace_s)


def _ray(*, ray_address: str, retries: int, cpus_per_training: int, grace_s: float) -> Executor:
    return RayExecutor(ray_address, retries=retries, cpus_per_training=cpus_per_training, grace_s=grace_s)


#: The executors by name (``-P executor=…``): how each is made from the study's options.
EXECUTORS: dict[str, Callable[..., Executor]] = {"local": _local, "ray": _ray}
DEFAULT = "local"


def make(name: str, *, ray_address: str, retries: int, cpus_per_training: int, grace_s: float) -> Executor:
    """The executor called ``name``.

    Raises:
        ValueError: an unknown name.
    """
    if name not in EXECUTORS:
        raise ValueError(f"--executor must be one of {list(EXECUTORS)}, got {name!r}")
    return EXECUTORS[name](
        ray_address=ray_address, retries=retries, cpus_per_training=cpus_per_training, grace_s=grace_s
    )
