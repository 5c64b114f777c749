"""Measurement as context managers (docs/DESIGN.md §7): synced timers, host and GPU memory peaks.

Each meter resets on entry, so one object can measure several regions in turn (``start()``/``stop()`` do the
same as entering and leaving, for callback-driven code such as Keras' ``fit``). None of them logs anything:
the caller collects the numbers and logs them outside the timed region.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import resource
import sys
import threading
import time
import tracemalloc
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import psutil

from thread_bench import backends, cpu_isa
from thread_bench.backends import Sync


class _Meter:
    """``with meter:`` is ``meter.start()`` ... ``meter.stop()``."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> _Meter:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


class Timer(_Meter):
    """Wall-clock seconds of a region; ``sync`` waits for queued device work before each clock reading,
    so the region contains exactly the work launched inside it."""

    def __init__(self, sync: Sync | None = None) -> None:
        self.sync = sync or backends.no_sync
        self.elapsed_s = 0.0
        self._started: float | None = None

    def start(self) -> None:
        self.sync()
        self.elapsed_s = 0.0
        self._started = time.perf_counter()

    def stop(self) -> None:
        assert self._started is not None, "Timer.stop() before start()"
        self.sync()
        self.elapsed_s = time.perf_counter() - self._started
        self._started = None

    def __enter__(self) -> Timer:
        self.start()
        return self


class PeakHostMemory(_Meter):
    """Peak resident set size (RSS) of this process over a region, sampled by a background thread.

    RSS counts every allocation the frameworks make in native code (tracemalloc sees only the Python heap).
    Sampling can miss a spike shorter than ``interval_s``; ``maxrss_bytes`` (the kernel's lifetime peak of
    the process, which cannot be reset) is an upper bound to cross-check against.
    """

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.peak_bytes = self._rss()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name="PeakHostMemory", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        assert self._thread is not None, "PeakHostMemory.stop() before start()"
        self._stop.set()
        self._thread.join()
        self._thread = None
        self.peak_bytes = max(self.peak_bytes, self._rss())

    def __enter__(self) -> PeakHostMemory:
        self.start()
        return self

    @property
    def maxrss_bytes(self) -> int:
        """The kernel's peak RSS of the process since it started (``ru_maxrss``, KiB on Linux)."""
        scale = 1 if sys.platform == "darwin" else 1024
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale)

    def _rss(self) -> int:
        return int(self._process.memory_info().rss)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_bytes = max(self.peak_bytes, self._rss())


class PeakGpuMemory(_Meter):
    """GPU memory of a region: the backend allocator's peak and NVML's per-process figure.

    ``available`` is False when the backend sees no GPU; the meter then measures nothing and both values
    stay ``None`` (a CPU run is reported as such, not as an error).

    Args:
        backend: a name in ``backends.NAMES`` (for Keras: its backend).
    """

    def __init__(self, backend: str) -> None:
        self.backend = backends.get(backend)
        self.available = self.backend.gpu_available()
        self.peak_bytes: int | None = None
        self.nvml_bytes: int | None = None

    def start(self) -> None:
        self.peak_bytes = None
        self.nvml_bytes = None
        if self.available:
            self.backend.reset_gpu_peak()

    def stop(self) -> None:
        if not self.available:
            return
        self.peak_bytes = self.backend.gpu_peak_bytes()
        self.nvml_bytes = nvml_process_bytes()

    def __enter__(self) -> PeakGpuMemory:
        self.start()
        return self


class PythonAllocPeak(_Meter):
    """Peak of Python-heap allocations (``tracemalloc``) over a region.

    Only an optional extra: tracemalloc does not see the frameworks' native allocations
    (docs/DESIGN.md §7), and tracing slows Python code down, so it is off unless asked for.
    """

    def __init__(self) -> None:
        self.peak_bytes = 0
        self._was_tracing = False

    def start(self) -> None:
        self._was_tracing = tracemalloc.is_tracing()
        if not self._was_tracing:
            tracemalloc.start()
        tracemalloc.reset_peak()
        self.peak_bytes = 0

    def stop(self) -> None:
        self.peak_bytes = int(tracemalloc.get_traced_memory()[1])
        if not self._was_tracing:
            tracemalloc.stop()

    def __enter__(self) -> PythonAllocPeak:
        self.start()
        return self


def nvml_process_bytes() -> int | None:
    """Device memory used by this process on all GPUs, as NVML reports it; ``None`` without NVML."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        total = 0
        pid = os.getpid()
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            for process in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if process.pid == pid and process.usedGpuMemory is not None:
                    total += int(process.usedGpuMemory)
        return total
    except pynvml.NVMLError:
        return None
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def cpu_has_bf16() -> bool:
    """Whether the CPU has bfloat16 instructions (x86 ``avx512_bf16`` or AMX ``amx_bf16``; Arm ``bf16``)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith(("flags", "Features")):
                return bool({"avx512_bf16", "amx_bf16", "bf16"} & set(line.split(":", 1)[1].split()))
    return False


def _cpuinfo_value(key: str) -> str | None:
    """The first ``key`` line's value in ``/proc/cpuinfo``; None where there is none."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    return None


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    return _cpuinfo_value("model name") or platform.processor() or platform.machine()


def cpu_signature() -> str:
    """Vendor, family, model and stepping from ``/proc/cpuinfo`` (``AuthenticAMD 25/17/1``): the model name alone
    (``AMD EPYC``) does not tell processor generations apart; empty where there is no ``/proc/cpuinfo``."""
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("vendor_id", "cpu family", "model", "stepping") and key not in fields:
                fields[key] = value.strip()
            if not line.strip() and fields:
                break
    if not fields:
        return ""
    vendor, family, model, stepping = (fields.get(key, "?") for key in ("vendor_id", "cpu family", "model", "stepping"))
    return f"{vendor} {family}/{model}/{stepping}"


def cpu_description(model: str | None = None, signature: str | None = None) -> str:
    """``AMD EPYC (AuthenticAMD 25/17/1)``: the model name and, where known, the signature that dates it (by
    default this machine's: :func:`cpu_model`, :func:`cpu_signature`)."""
    model = cpu_model() if model is None else model
    signature = cpu_signature() if signature is None else signature
    return f"{model} ({signature})" if signature else model


@dataclass(frozen=True)
class CpuPeak:
    """What one core of this processor can compute at most, from its flags, vendor and family and the clock
    ``/proc/cpuinfo`` reports: a paper figure to hold achieved FLOP/s against, not a measurement."""

    #: ``AMD EPYC (AuthenticAMD 25/1/1)``.
    description: str
    #: ``avx512``, ``avx2``, ``sse41`` or ``native`` (:func:`cpu_isa.native_level`).
    isa: str
    ghz: float
    #: float32 FLOP per cycle per core: FMA units x lanes x 2.
    fp32_flop_per_cycle: int
    #: bfloat16 FLOP per cycle per core where the processor has bfloat16 instructions (AMX, AVX512-BF16); None
    #: where bf16 is converted in software (its speed is then at most float32's).
    bf16_flop_per_cycle: int | None
    #: How the figures were derived, in words.
    basis: str

    def fp32_gflops(self, cores: int) -> float:
        return self.ghz * self.fp32_flop_per_cycle * cores

    def bf16_gflops(self, cores: int) -> float | None:
        return None if self.bf16_flop_per_cycle is None else self.ghz * self.bf16_flop_per_cycle * cores


def cpu_peak(flags: frozenset[str] | None = None, signature: str | None = None, ghz: float | None = None) -> CpuPeak:
    """This processor's peak per core (by default from ``/proc/cpuinfo``).

    float32: two FMA pipes per core on every x86-64 server core since Haswell and Zen; 512-bit wide on Intel's
    AVX-512 cores and AMD's Zen 5, 256-bit on AVX2 cores and on Zen 4, which runs AVX-512 as two 256-bit halves.
    bfloat16: AMX's tile unit does 1,024 FLOP per cycle (16x16x32 products every 16 cycles, x2); AVX512-BF16's
    dot product twice the float32 rate. The clock is the one the (virtual) machine reports, not the turbo.
    """
    flags = cpu_isa.processor_flags() if flags is None else flags
    signature = cpu_signature() if signature is None else signature
    vendor, _, numbers = signature.partition(" ")
    family = int(numbers.split("/")[0]) if numbers.split("/")[0].isdigit() else 0
    if ghz is None:
        mhz = _cpuinfo_value("cpu MHz")
        ghz = float(mhz) / 1000 if mhz else float("nan")
    if {"avx512f"} <= flags and not (vendor == "AuthenticAMD" and family < 26):
        lanes, width = 16, "2 x 512-bit FMA"
    elif {"avx512f"} <= flags:
        lanes, width = 8, "2 x 256-bit FMA (Zen 4 splits AVX-512 in two halves)"
    elif {"avx2", "fma"} <= flags:
        lanes, width = 8, "2 x 256-bit FMA"
    else:
        lanes, width = 4, "2 x 128-bit SSE mul+add"
    fp32 = 2 * lanes * 2
    if "amx_bf16" in flags:
        bf16: int | None = 1024
        bf16_basis = "bf16 on AMX tiles 1024 FLOP/cycle"
    elif "avx512_bf16" in flags:
        bf16 = 2 * fp32
        bf16_basis = "bf16 on AVX512-BF16 at twice the float32 rate"
    else:
        bf16, bf16_basis = None, "no bfloat16 instructions: bf16 is converted in software"
    return CpuPeak(
        description=cpu_description(signature=signature),
        isa=cpu_isa.native_level(flags),
        ghz=ghz,
        fp32_flop_per_cycle=fp32,
        bf16_flop_per_cycle=bf16,
        basis=f"{width} = {fp32} float32 FLOP/cycle at {ghz:.2f} GHz; {bf16_basis}",
    )


def kernel_libraries() -> dict[str, str]:
    """Versions of the CPU kernel libraries PyTorch was built with (oneDNN, MKL), where PyTorch is loaded."""
    if "torch" not in sys.modules:
        return {}
    build = str(sys.modules["torch"].__config__.show())
    found = {
        "onednn": re.search(r"MKL-DNN v([\d.]+)", build),
        "mkl": re.search(r"Math Kernel Library Version ([\d.]+)", build),
    }
    return {f"torch_{name}": match.group(1) for name, match in found.items() if match}


def environment_info(backend: str) -> dict[str, Any]:
    """Device, CPU, versions and thread counts of a run on ``backend`` (a name in ``backends.NAMES``)."""
    import numpy as np

    compute = backends.get(backend)
    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_signature": cpu_signature(),
        "cpu_isa": cpu_isa.describe(),
        "cpu_isa_settings": cpu_isa.in_effect(),
        "kernel_libraries": kernel_libraries(),
        "cpu_count": os.cpu_count() or 0,
        "python_version": platform.python_version(),
        "numpy_version": np.__version__,
        "device": compute.gpu_name() or "cpu",
        **compute.environment(),
    }
    return info
