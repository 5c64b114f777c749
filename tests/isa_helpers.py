"""For tests that must also hold on a smaller processor, emulated by capping every kernel library's instruction set
(README, "Same numbers on any processor": the whole suite runs under each cap)."""

from __future__ import annotations

import os

import pytest

from thread_bench import cpu_isa


def skip_unless_bf16_runs(backend: str) -> None:
    """Skip where ``backend`` cannot compute in bfloat16 under the cap this process runs under: TensorFlow below
    AVX-512, an artefact of the emulation (``cpu_isa.TENSORFLOW_BF16_CAPS``)."""
    try:
        cpu_isa.check_precision(cpu_isa.NATIVE, "bf16", backend)
    except ValueError as error:
        pytest.skip(f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA')}: {error}")
