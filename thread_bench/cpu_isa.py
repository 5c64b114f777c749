"""``cpu_isa``: which instruction sets the frameworks' CPU kernels may use.

The same code, seed and data give different float32 numbers on different x86-64 processors, because each
kernel library picks its code path (and with it the order of its sums) from the instructions the processor
has: oneDNN (PyTorch's and TensorFlow's convolutions), MKL (PyTorch's matrix products), ATen's vectorised
loops and XLA's generated code (JAX, and TensorFlow under ``jit_compile``). One epoch's rounding difference
grows, over a run that has not converged, into a visibly different loss (README, "Same numbers on any
processor").

``native`` (the default) leaves every library free to use all the processor has. A cap sets each library's
own documented limit, so that any two processors that have the cap's instructions run the same code paths:

============  =====================  ====================  ==========  ========================
cap           ``ONEDNN_MAX_CPU_ISA``  ``ATEN_CPU_CAPABILITY``  ``MKL_CBWR``  ``--xla_cpu_max_isa``
============  =====================  ====================  ==========  ========================
``avx512``    ``AVX512_CORE``        ``avx512``            ``AVX512``  ``AVX512``
``avx2``      ``AVX2``               ``avx2``              ``AVX2``    ``AVX2``
``sse41``     ``SSE41``              ``default``           ``SSE4_2``  ``SSE4_2``
============  =====================  ====================  ==========  ========================

``avx2`` is the portable setting: every x86-64-v3 processor (Intel since Haswell, AMD since Zen) has it.
``MKL_CBWR`` is MKL's conditional numerical reproducibility mode: it fixes the code path *and* the choices MKL
would otherwise make from the cache sizes. TensorFlow's convolutions go through oneDNN on every processor (the
suite turns its oneDNN kernels on: ``tensorflow_backend.startup_environment``), so the cap reaches them. What a
cap cannot pin: TensorFlow's Eigen kernels for the rest (compiled for one instruction set already, but blocked by
the cache sizes they detect), oneDNN's and XLA's blocking by cache size and thread count, and the thread count
itself. So a cap promises equal numbers across processors with the same thread count, as far as README's drift
table measured it, not bit-equality everywhere.

Every library reads its variable once, when it starts; so a cap is put into the environment before the first
framework import (the training entry points do it: ``startup_environment``), and refused in a process where a
framework already runs without it.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import sys
from dataclasses import dataclass

#: ``cpu_isa`` when none is given: each library uses everything the processor has.
NATIVE = "native"


@dataclass(frozen=True)
class Cap:
    """One instruction-set cap: the processor flags it needs and each library's setting."""

    name: str
    #: ``/proc/cpuinfo`` flags a processor needs to run under this cap.
    flags: tuple[str, ...]
    onednn: str
    aten: str
    mkl: str
    xla: str


#: The caps, highest first.
CAPS: dict[str, Cap] = {
    cap.name: cap
    for cap in (
        Cap(
            "avx512",
            ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"),
            "AVX512_CORE",
            "avx512",
            "AVX512",
            "AVX512",
        ),
        Cap("avx2", ("avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "movbe"), "AVX2", "avx2", "AVX2", "AVX2"),
        Cap("sse41", ("sse4_1", "sse4_2"), "SSE41", "default", "SSE4_2", "SSE4_2"),
    )
}
CHOICES = (NATIVE, *CAPS)

#: The environment variables a cap sets (``XLA_FLAGS`` gains ``--xla_cpu_max_isa``).
VARIABLES = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_CBWR", "XLA_FLAGS")
_XLA_FLAG = re.compile(r"\s*--xla_cpu_max_isa=\S*")

#: Packages that read the variables when they start.
_FRAMEWORK_PACKAGES = ("torch", "tensorflow", "jax")


def check_choice(cpu_isa: str) -> None:
    """Raises ValueError unless ``cpu_isa`` names a setting."""
    if cpu_isa not in CHOICES:
        raise ValueError(f"cpu_isa must be one of {list(CHOICES)}, got {cpu_isa!r}")


def processor_flags() -> frozenset[str]:
    """The processor's instruction-set flags from ``/proc/cpuinfo`` (empty where there is none)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def missing_flags(cap: str, flags: frozenset[str] | None = None) -> list[str]:
    """The flags the processor lacks for ``cap`` (all of them off x86-64)."""
    needed = CAPS[cap].flags
    if not is_x86():
        return list(needed)
    have = processor_flags() if flags is None else flags
    return [flag for flag in needed if flag not in have]


def available_caps(flags: frozenset[str] | None = None) -> list[str]:
    """The caps this processor (or one with ``flags``) can run under, highest first: the ones it can emulate a
    smaller machine with."""
    return [name for name in CAPS if not missing_flags(name, flags)]


def native_level(flags: frozenset[str] | None = None) -> str:
    """The highest cap this processor (or one with ``flags``) has (``native`` off x86-64 or when it has none)."""
    return next(iter(available_caps(flags)), NATIVE)


def check_available(cpu_isa: str) -> None:
    """Raises ValueError, naming what is missing, when this processor cannot run under ``cpu_isa``."""
    check_choice(cpu_isa)
    if cpu_isa == NATIVE:
        return
    if not is_x86():
        raise ValueError(f"cpu_isa={cpu_isa} caps x86-64 kernels; this machine is {platform.machine()}: use native")
    missing = missing_flags(cpu_isa)
    if missing:
        usable = [name for name in CHOICES if name == NATIVE or not missing_flags(name)]
        raise ValueError(f"cpu_isa={cpu_isa}: this processor lacks {', '.join(missing)}; choose one of {usable}")


#: Caps under which TensorFlow cannot run ``precision=bf16``: its oneDNN has no bfloat16 convolution below
#: AVX-512, and TensorFlow picks oneDNN from the processor's own flags, so under the cap creating the primitive
#: fails ("could not create a primitive descriptor for the convolution"); on a real AVX2 processor TensorFlow
#: would have taken its slower Eigen kernels instead.
TENSORFLOW_BF16_CAPS = ("avx512",)


def effective(cpu_isa: str) -> str:
    """The cap a process with setting ``cpu_isa`` runs under: that cap, or for ``native`` the one already in the
    environment (oneDNN's variable set from outside, as the tests do to emulate a smaller processor)."""
    if cpu_isa != NATIVE:
        return cpu_isa
    onednn = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if onednn in ("", "ALL", "DEFAULT"):
        return NATIVE
    if onednn.startswith(("AVX512", "AVX10")) or "AMX" in onednn:
        return "avx512"
    return "avx2" if onednn.startswith("AVX2") else "sse41"  # oneDNN's SSE41, AVX, AVX2, AVX2_VNNI(_2)


def check_precision(cpu_isa: str, precision: str, backend: str) -> None:
    """Raises ValueError for a cap the backend cannot run ``precision`` under (see ``TENSORFLOW_BF16_CAPS``);
    ``cpu_isa`` is the setting, and a cap already in the environment counts (:func:`effective`)."""
    cpu_isa = effective(cpu_isa)
    if backend == "tensorflow" and precision == "bf16" and cpu_isa not in (NATIVE, *TENSORFLOW_BF16_CAPS):
        raise ValueError(
            f"cpu_isa={cpu_isa} with precision=bf16: TensorFlow's oneDNN has no bfloat16 convolution below AVX-512; "
            "use cpu_isa=native or avx512, precision=fp32, or another backend"
        )


def environment(cpu_isa: str, current: dict[str, str] | None = None) -> dict[str, str]:
    """The variables to set for ``cpu_isa`` (none for ``native``), merged into ``current``'s ``XLA_FLAGS``."""
    check_choice(cpu_isa)
    if cpu_isa == NATIVE:
        return {}
    cap = CAPS[cpu_isa]
    flags = _XLA_FLAG.sub("", (current if current is not None else os.environ).get("XLA_FLAGS", ""))
    return {
        "ONEDNN_MAX_CPU_ISA": cap.onednn,
        "ATEN_CPU_CAPABILITY": cap.aten,
        "MKL_CBWR": cap.mkl,
        "XLA_FLAGS": f"{flags} --xla_cpu_max_isa={cap.xla}".strip(),
    }


def check_can_apply(cpu_isa: str) -> None:
    """Raises ValueError when a framework already runs in this process under other settings than
    ``cpu_isa``'s (its libraries read them when they started, so a cap now would be silently ignored)."""
    if all(os.environ.get(name) == value for name, value in environment(cpu_isa).items()):
        return  # native, or the cap is in the environment already (set before the process started)
    running = [package for package in _FRAMEWORK_PACKAGES if package in sys.modules]
    if running:
        raise ValueError(
            f"cpu_isa={cpu_isa}: {', '.join(running)} already started in this process under other instruction-set "
            "settings, which it read when it started; start a fresh process"
        )


def uncapped(environment: dict[str, str]) -> dict[str, str]:
    """``environment`` without any cap's variables: what a child process needs to run ``native`` (or the cap
    its ``--cpu_isa`` sets) whatever this process was started under."""
    return {name: value for name, value in environment.items() if name not in VARIABLES}


def in_effect() -> dict[str, str]:
    """What this process runs under: the requested caps (variables, ``-`` when unset) and, where PyTorch is
    loaded, the ATen capability it actually uses."""
    values = {name: os.environ.get(name, "-") for name in VARIABLES[:3]}
    match = re.search(r"--xla_cpu_max_isa=(\S+)", os.environ.get("XLA_FLAGS", ""))
    values["xla_cpu_max_isa"] = match.group(1) if match else "-"
    if "torch" in sys.modules:
        values["aten_capability_used"] = str(sys.modules["torch"].backends.cpu.get_cpu_capability())
    return values


def describe() -> str:
    """One line for a tag: the caps in effect and the processor's own level, e.g.
    ``avx2, processor avx512 (oneDNN AVX2, ATen AVX2, MKL AVX2, XLA AVX2)``."""
    values = in_effect()
    level = effective(NATIVE)
    aten = values.get("aten_capability_used", values["ATEN_CPU_CAPABILITY"])
    detail = (
        f"oneDNN {values['ONEDNN_MAX_CPU_ISA']}, ATen {aten}, MKL {values['MKL_CBWR']}, XLA {values['xla_cpu_max_isa']}"
    )
    return f"{level}, processor {native_level()} ({detail})"
