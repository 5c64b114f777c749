"""PyTorch as a compute backend (see :mod:`thread_bench.backends`)."""

from __future__ import annotations

import os
from typing import Any

from thread_bench import tracking
from thread_bench.backends import Sync, no_sync

NAME = "torch"
KNOBS: tuple[str, ...] = ()


def startup_environment(deterministic: bool, threads: int) -> dict[str, str]:
    # cuBLAS reads its workspace setting when CUDA starts; deterministic matmuls need it.
    return {"CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG", ":4096:8")} if deterministic else {}


def versions() -> dict[str, str]:
    import torch

    return {"torch": torch.__version__}


def environment() -> dict[str, Any]:
    import torch

    return {
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
    }


def gpu_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def gpu_count() -> int:
    import torch

    return int(torch.cuda.device_count())


def gpu_name() -> str | None:
    import torch

    return str(torch.cuda.get_device_name(0)) if gpu_available() else None


def gpu_compute_capability() -> tuple[int, int] | None:
    import torch

    if not gpu_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    return int(major), int(minor)


def device_memory_bytes() -> int | None:
    import torch

    return int(torch.cuda.get_device_properties(0).total_memory) if gpu_available() else None


def device_sync() -> Sync:
    import torch

    return torch.cuda.synchronize if gpu_available() else no_sync


def reset_gpu_peak() -> None:
    import torch

    torch.cuda.reset_peak_memory_stats()


def gpu_peak_bytes() -> int:
    import torch

    return int(torch.cuda.max_memory_allocated())


def prepare_memory() -> dict[str, Any]:
    return {}  # PyTorch's caching allocator reserves nothing up front


def set_threads(threads: int) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def set_deterministic(enabled: bool) -> None:
    """Deterministic kernels; off also lets cuDNN benchmark its convolution algorithms."""
    import torch

    if enabled:
        os.environ.update(startup_environment(enabled, 0))  # a no-op when CUDA already runs with another value
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


def set_precision(precision: str) -> dict[str, Any]:
    import torch

    mode = "tf32" if precision == "tf32" else "ieee"
    backends: Any = torch.backends  # the stubs lack the fp32_precision settings (PyTorch >= 2.9)
    backends.cuda.matmul.fp32_precision = mode
    backends.cudnn.conv.fp32_precision = mode
    # oneDNN (CPU) kernels: TF32 only on CPUs that have it (none of this project's machines do).
    backends.mkldnn.fp32_precision = mode
    matmul, conv, onednn = (
        backends.cuda.matmul.fp32_precision,
        backends.cudnn.conv.fp32_precision,
        backends.mkldnn.fp32_precision,
    )
    return {
        tracking.PARAM_TF32_MATMUL: matmul == "tf32",
        tracking.PARAM_TF32_CONV: conv == "tf32",
        tracking.PARAM_TORCH_FP32_PRECISION: f"cuda.matmul={matmul} cudnn.conv={conv} mkldnn={onednn}",
    }
