"""How much of the CPU other processes took while a benchmark ran (they distort its timings)."""

from __future__ import annotations

import os
import resource
import time


def system_busy_cpu_s() -> float | None:
    """CPU seconds all processes have spent busy since boot (Linux ``/proc/stat``); None elsewhere."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class ForeignLoad:
    """Cores used by *other* processes while the block runs: system busy time minus this process's CPU time.

    The load average cannot tell: a 2-thread benchmark alone puts it at 2 or more.
    """

    def __enter__(self) -> ForeignLoad:
        self._system, self._own, self._wall = system_busy_cpu_s(), time.process_time(), time.perf_counter()
        self.cores: float | None = None
        return self

    def __exit__(self, *exc: object) -> None:
        system = system_busy_cpu_s()
        if system is not None and self._system is not None:
            foreign_s = (system - self._system) - (time.process_time() - self._own)
            self.cores = max(0.0, foreign_s) / max(time.perf_counter() - self._wall, 1e-9)


class ChildrenLoad:
    """Cores used by processes other than this one's children (the benchmarked trainings) since :meth:`start`:
    system busy time minus the children's CPU time, over the wall time."""

    def start(self) -> ChildrenLoad:
        self._system, self._wall = system_busy_cpu_s(), time.perf_counter()
        self._children = self._children_cpu_s()
        return self

    def foreign_cores(self) -> float | None:
        """Average cores others used so far; None where the system's busy time cannot be read."""
        system = system_busy_cpu_s()
        if system is None or self._system is None:
            return None
        own = self._children_cpu_s() - self._children
        return max(0.0, (system - self._system) - own) / max(time.perf_counter() - self._wall, 1e-9)

    @staticmethod
    def _children_cpu_s() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime


def wait_until_quiet(timeout_s: float, threshold_cores: float = 0.1, sample_s: float = 1.0) -> float | None:
    """Sample until other processes use less than ``threshold_cores`` or ``timeout_s`` passes.

    Returns the last sample (cores used by others), None where it cannot be measured.
    """
    deadline = time.perf_counter() + timeout_s
    while True:
        with ForeignLoad() as foreign:
            time.sleep(sample_s)
        if foreign.cores is None or foreign.cores < threshold_cores or time.perf_counter() >= deadline:
            return foreign.cores
