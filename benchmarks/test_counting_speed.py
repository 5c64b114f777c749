"""pytest-benchmark timings of the thread counters on a 1 cm (200x200 px) sub-patch.

Run with ``pytest benchmarks/`` (not part of the test run). Targets: count_threads <= 1 ms per mask pair,
since the preprocessing calls it ~30,000 times.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from thread_bench.workloads.thread_density.counting import count_threads, fft_count
from thread_bench.workloads.thread_density.synthetic import SyntheticPatch, generate_corpus


@pytest.fixture(scope="module")
def patch() -> SyntheticPatch:
    # A dense canvas (~20 threads/cm both ways, ~400 crossings per cm^2): the slow end for counting.
    return max(generate_corpus(n_paintings=12, n_patches=12, seed=0), key=lambda p: p.density_v * p.density_h)


def _crop(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array[50:250, 50:250])


def test_count_threads_200px(benchmark: Any, patch: SyntheticPatch) -> None:
    h_mask, v_mask = _crop(patch.h_mask), _crop(patch.v_mask)
    density = benchmark(count_threads, h_mask, v_mask, patch.px_per_cm)
    assert density.vertical == pytest.approx(patch.density_v, rel=0.05)


def test_fft_count_200px(benchmark: Any, patch: SyntheticPatch) -> None:
    density = benchmark(fft_count, _crop(patch.image), patch.px_per_cm)
    assert density.vertical == pytest.approx(patch.density_v, rel=0.1)
