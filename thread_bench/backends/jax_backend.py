"""JAX as a compute backend (Keras on JAX; see :mod:`thread_bench.backends`)."""

from __future__ import annotations

import os
from typing import Any

from thread_bench import tracking
from thread_bench.backends import Sync

NAME = "jax"
KNOBS: tuple[str, ...] = (tracking.PARAM_XLA_PREALLOCATE,)


def startup_environment(deterministic: bool, threads: int) -> dict[str, str]:
    """JAX reads these once, when it starts.

    Like TensorFlow without memory growth, JAX grabs 75 % of the GPU at start; allocating on demand makes GPU
    memory figures describe the model (docs/DESIGN.md §7). Deterministic GPU kernels and single-threaded CPU
    kernels are XLA flags (JAX has no other way to set its CPU threads).

    Raises:
        ValueError: ``threads`` above 1.
    """
    if threads > 1:
        raise ValueError("--threads: the jax backend supports 0 (its default) or 1")
    flags = os.environ.get("XLA_FLAGS", "")
    if deterministic and "--xla_gpu_deterministic_ops" not in flags:
        flags = f"{flags} --xla_gpu_deterministic_ops=true"
    if threads == 1 and "--xla_cpu_multi_thread_eigen" not in flags:
        flags = f"{flags} --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    return {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "XLA_FLAGS": flags.strip()}


def versions() -> dict[str, str]:
    import jax

    return {"jax": jax.__version__}


def environment() -> dict[str, Any]:
    import jax

    return {"jax_version": jax.__version__}


def _gpu() -> Any | None:
    import jax

    return next((device for device in jax.devices() if device.platform == "gpu"), None)


def gpu_available() -> bool:
    return _gpu() is not None


def gpu_count() -> int:
    import jax

    return sum(device.platform == "gpu" for device in jax.devices())


def gpu_name() -> str | None:
    gpu = _gpu()
    return None if gpu is None else str(gpu.device_kind)


def gpu_compute_capability() -> tuple[int, int] | None:
    gpu = _gpu()
    if gpu is None:
        return None
    first, _, second = str(getattr(gpu, "compute_capability", "")).partition(".")
    return (int(first), int(second or 0)) if first.isdigit() else None


def device_memory_bytes() -> int | None:
    gpu = _gpu()
    stats = (gpu.memory_stats() or {}) if gpu is not None else {}
    return int(stats["bytes_limit"]) if "bytes_limit" in stats else None


def device_sync() -> Sync:
    """JAX dispatches asynchronously on every device, the CPU included."""
    import jax

    def sync_jax() -> None:
        jax.block_until_ready(jax.live_arrays())

    return sync_jax


def reset_gpu_peak() -> None:
    """JAX's ``peak_bytes_in_use`` cannot be reset: its value is the peak since the process started."""


def gpu_peak_bytes() -> int:
    gpu = _gpu()
    stats = (gpu.memory_stats() or {}) if gpu is not None else {}
    return int(stats.get("peak_bytes_in_use", 0))


def prepare_memory() -> dict[str, Any]:
    # Set by startup_environment before JAX started; logged as what was in force.
    return {tracking.PARAM_XLA_PREALLOCATE: os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE", "true")}


def set_threads(threads: int) -> None:
    """JAX takes its CPU threads from ``XLA_FLAGS`` at start-up (:func:`startup_environment`)."""


def set_deterministic(enabled: bool) -> None:
    """JAX's CPU kernels are deterministic; on a GPU the XLA flag of :func:`startup_environment` decides."""


def set_precision(precision: str) -> dict[str, Any]:
    import jax

    # Applies to every dot and convolution XLA compiles without an explicit precision (Keras' layers).
    jax.config.update("jax_default_matmul_precision", "tensorfloat32" if precision == "tf32" else "highest")
    value = str(jax.config.jax_default_matmul_precision)  # type: ignore[attr-defined]
    reduced = value not in ("highest", "float32")
    return {
        tracking.PARAM_TF32_MATMUL: reduced,
        tracking.PARAM_TF32_CONV: reduced,
        tracking.PARAM_JAX_MATMUL_PRECISION: value,
    }
