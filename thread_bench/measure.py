"""Measurement as context managers (docs/DESIGN.md §7): synced timers, host and GPU memory peaks.

Each meter resets on entry, so one object can measure several regions in turn (``start()``/``stop()`` do the
same as entering and leaving, for callback-driven code such as Keras' ``fit``). None of them logs anything:
the caller collects the numbers and logs them outside the timed region.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from types import TracebackType
from typing import Any

import psutil

Sync = Callable[[], None]

#: Keras backends and PyTorch; the framework whose allocator a GPU meter reads.
GPU_FRAMEWORKS = ("torch", "tensorflow", "jax")


def _no_sync() -> None:
    """CPU work is finished when the call returns; nothing to wait for."""


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
        self.sync = sync or _no_sync
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
    """GPU memory of a region: the framework allocator's peak and NVML's per-process figure.

    ``available`` is False when the framework sees no GPU; the meter then measures nothing and both values
    stay ``None`` (a CPU run is reported as such, not as an error).

    Args:
        framework: ``torch``, ``tensorflow`` or ``jax`` (for Keras: its backend).
    """

    def __init__(self, framework: str) -> None:
        if framework not in GPU_FRAMEWORKS:
            raise ValueError(f"framework must be one of {GPU_FRAMEWORKS}, got {framework!r}")
        self.framework = framework
        self.available = gpu_available(framework)
        self.peak_bytes: int | None = None
        self.nvml_bytes: int | None = None

    def start(self) -> None:
        self.peak_bytes = None
        self.nvml_bytes = None
        if not self.available:
            return
        if self.framework == "torch":
            import torch

            torch.cuda.reset_peak_memory_stats()
        elif self.framework == "tensorflow":
            import tensorflow as tf

            tf.config.experimental.reset_memory_stats("GPU:0")
        # JAX's peak_bytes_in_use cannot be reset: for JAX the value is the peak since the process started.

    def stop(self) -> None:
        if not self.available:
            return
        if self.framework == "torch":
            import torch

            self.peak_bytes = int(torch.cuda.max_memory_allocated())
        elif self.framework == "tensorflow":
            import tensorflow as tf

            self.peak_bytes = int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
        else:
            import jax

            stats = jax.devices()[0].memory_stats() or {}
            self.peak_bytes = int(stats.get("peak_bytes_in_use", 0))
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


def gpu_available(framework: str) -> bool:
    """Whether ``framework`` (``torch``, ``tensorflow`` or ``jax``) sees a GPU; imports that framework."""
    if framework == "torch":
        import torch

        return bool(torch.cuda.is_available())
    if framework == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if framework == "jax":
        import jax

        return any(device.platform == "gpu" for device in jax.devices())
    raise ValueError(f"framework must be one of {GPU_FRAMEWORKS}, got {framework!r}")


def device_sync(framework: str) -> Sync:
    """A function that waits until the device has finished the work queued so far.

    PyTorch and TensorFlow run CPU work synchronously; JAX dispatches asynchronously on every device.
    """
    if framework == "torch":
        import torch

        return torch.cuda.synchronize if torch.cuda.is_available() else _no_sync
    if framework == "tensorflow":
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            return tf.test.experimental.sync_devices
        return _no_sync
    if framework == "jax":
        import jax

        def sync_jax() -> None:
            jax.block_until_ready(jax.live_arrays())

        return sync_jax
    raise ValueError(f"framework must be one of {GPU_FRAMEWORKS}, got {framework!r}")


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


def gpu_compute_capability(framework: str) -> tuple[int, int] | None:
    """``(major, minor)`` of the first GPU ``framework`` sees; ``None`` on CPU (or when it cannot tell)."""
    if not gpu_available(framework):
        return None
    if framework == "torch":
        import torch

        major, minor = torch.cuda.get_device_capability(0)
        return int(major), int(minor)
    if framework == "tensorflow":
        import tensorflow as tf

        device = tf.config.list_physical_devices("GPU")[0]
        found = tf.config.experimental.get_device_details(device).get("compute_capability")
        return (int(found[0]), int(found[1])) if found else None
    import jax

    text = str(getattr(next(d for d in jax.devices() if d.platform == "gpu"), "compute_capability", ""))
    first, _, second = text.partition(".")
    return (int(first), int(second or 0)) if first.isdigit() else None


def device_memory_bytes(framework: str) -> int | None:
    """Memory of the first GPU ``framework`` (``torch`` or ``jax``) sees, bytes; ``None`` on CPU."""
    if not gpu_available(framework):
        return None
    if framework == "torch":
        import torch

        return int(torch.cuda.get_device_properties(0).total_memory)
    if framework == "jax":
        import jax

        stats = next(d for d in jax.devices() if d.platform == "gpu").memory_stats() or {}
        return int(stats["bytes_limit"]) if "bytes_limit" in stats else None
    # TensorFlow reports no device total, and Keras on TensorFlow never keeps the data on the device.
    raise ValueError(f"framework must be torch or jax, got {framework!r}")


def cpu_has_bf16() -> bool:
    """Whether the CPU has bfloat16 instructions (x86 ``avx512_bf16`` or AMX ``amx_bf16``; Arm ``bf16``)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith(("flags", "Features")):
                return bool({"avx512_bf16", "amx_bf16", "bf16"} & set(line.split(":", 1)[1].split()))
    return False


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def environment_info(framework: str) -> dict[str, Any]:
    """Device, CPU, versions and thread counts for ``framework`` (``torch``, ``tensorflow`` or ``jax``)."""
    import numpy as np

    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count() or 0,
        "python_version": platform.python_version(),
        "numpy_version": np.__version__,
        "device": gpu_name(framework) or "cpu",
    }
    if framework == "torch":
        import torch

        info["torch_version"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["torch_interop_threads"] = torch.get_num_interop_threads()
    elif framework == "tensorflow":
        import tensorflow as tf

        info["tensorflow_version"] = tf.__version__
        info["tf_intra_op_threads"] = tf.config.threading.get_intra_op_parallelism_threads()
        info["tf_inter_op_threads"] = tf.config.threading.get_inter_op_parallelism_threads()
    elif framework == "jax":
        import jax

        info["jax_version"] = jax.__version__
    if "keras" in sys.modules:
        info["keras_version"] = sys.modules["keras"].__version__
    return info


def gpu_name(framework: str) -> str | None:
    """The name of the first GPU ``framework`` sees, ``None`` on CPU."""
    if not gpu_available(framework):
        return None
    if framework == "torch":
        import torch

        return str(torch.cuda.get_device_name(0))
    if framework == "tensorflow":
        import tensorflow as tf

        device = tf.config.list_physical_devices("GPU")[0]
        return str(tf.config.experimental.get_device_details(device).get("device_name", device.name))
    import jax

    return str(next(d for d in jax.devices() if d.platform == "gpu").device_kind)
