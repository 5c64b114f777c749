"""The compute backends — PyTorch, TensorFlow, JAX — behind one interface, :class:`Backend`.

Everything that depends on which library runs the kernels lives in one module per backend: the device sync,
the allocator's memory peak, the GPU's name, capability and memory, deterministic kernels, the float32
precision rules, thread limits, the environment a backend needs before it starts, and the versions logged.
Shared code (``measure``, ``training.common``, the trainers, the analysis) asks :func:`get` for a backend by
name and imports no framework itself. A backend is PyTorch for the PyTorch trainer and the Keras backend for
Keras.

Adding a backend is one module implementing :class:`Backend` plus one line in ``_MODULES``; mypy checks every
module listed there against the protocol.

The modules import their framework inside each function, not at the top: ``startup_environment`` must run
before the framework's first import (JAX and Keras read their environment variables once).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

#: A function that waits until the device has finished the work queued so far.
Sync = Callable[[], None]

#: Backend name -> its module. The one place a backend is registered.
_MODULES = {
    "torch": "thread_bench.backends.torch_backend",
    "tensorflow": "thread_bench.backends.tensorflow_backend",
    "jax": "thread_bench.backends.jax_backend",
}
NAMES = tuple(_MODULES)


class Backend(Protocol):
    """What the suite needs from a compute backend; implemented by a module (see ``_MODULES``)."""

    NAME: str
    #: The params :meth:`prepare_memory` logs (its knobs: the analysis groups runs by them).
    KNOBS: tuple[str, ...]

    def startup_environment(self, deterministic: bool, threads: int) -> dict[str, str]:
        """Environment variables to set before the framework is first imported in this process."""
        ...

    def versions(self) -> dict[str, str]:
        """Package name -> version of what does the work (logged as a tag)."""
        ...

    def environment(self) -> dict[str, Any]:
        """Version and thread settings, for the run's ``config.json``."""
        ...

    def gpu_available(self) -> bool: ...

    def gpu_count(self) -> int:
        """The GPUs the backend sees (``0`` on a CPU)."""
        ...

    def gpu_name(self) -> str | None:
        """The first GPU's name; ``None`` on a CPU."""
        ...

    def gpu_compute_capability(self) -> tuple[int, int] | None:
        """``(major, minor)`` of the first GPU; ``None`` on a CPU or when the backend cannot tell."""
        ...

    def device_memory_bytes(self) -> int | None:
        """The first GPU's memory; ``None`` on a CPU or when the backend does not report it."""
        ...

    def device_sync(self) -> Sync:
        """A function that waits for the device's queued work (a no-op where work is synchronous)."""
        ...

    def reset_gpu_peak(self) -> None:
        """Start a new allocator peak (where the backend can reset it)."""
        ...

    def gpu_peak_bytes(self) -> int:
        """The allocator's peak since :meth:`reset_gpu_peak` (JAX: since the process started)."""
        ...

    def prepare_memory(self) -> dict[str, Any]:
        """Make GPU memory figures describe the model (no up-front reservation); returns the params to log,
        with the knobs the backend read at start-up (:attr:`KNOBS`). Call before anything touches the GPU."""
        ...

    def set_threads(self, threads: int) -> None:
        """Limit CPU kernels to ``threads`` threads; 0 keeps the backend's default."""
        ...

    def set_deterministic(self, enabled: bool) -> None: ...

    def set_precision(self, precision: str) -> dict[str, Any]:
        """Apply ``precision``'s float32 rules (TF32 only under ``tf32``); returns the settings read back."""
        ...


def get(name: str) -> Backend:
    """The backend called ``name`` (imports its module, not yet its framework)."""
    if name not in _MODULES:
        raise ValueError(f"backend must be one of {list(NAMES)}, got {name!r}")
    return cast(Backend, importlib.import_module(_MODULES[name]))


def no_sync() -> None:
    """CPU work is finished when the call returns; nothing to wait for."""


if TYPE_CHECKING:  # mypy checks each registered module against the protocol
    from thread_bench.backends import jax_backend, tensorflow_backend, torch_backend

    _REGISTERED: tuple[Backend, ...] = (torch_backend, tensorflow_backend, jax_backend)
