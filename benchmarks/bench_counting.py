"""Accuracy and speed of the thread counters on the default synthetic corpus (seed 0, 240 patches).

Run: ``python benchmarks/bench_counting.py``. Prints the corpus generation time, the relative errors of
spatial counting (on the masks) and of the spectral counter (on the images) against the generator's exact
densities, and the time per call. Targets: generation <= 10 s, spatial counting mean relative error
<= 2 %, FFT <= 5 %, count_threads <= 1 ms on a 200x200 mask pair.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

import numpy as np

from thread_bench.workloads.thread_density.counting import ThreadDensity, count_threads, fft_count
from thread_bench.workloads.thread_density.synthetic import SyntheticPatch, generate_corpus

#: The preprocessing counts 1 cm sub-patches: here a centred 200x200 crop of each 300x300 patch.
CROP_PX = 200


def relative_errors(estimates: Sequence[ThreadDensity], patches: Sequence[SyntheticPatch]) -> dict[str, np.ndarray]:
    pairs = list(zip(estimates, patches, strict=True))
    return {
        "vertical": np.array([abs(e.vertical / p.density_v - 1.0) for e, p in pairs]),
        "horizontal": np.array([abs(e.horizontal / p.density_h - 1.0) for e, p in pairs]),
    }


def best_time_per_item_s(function: Callable[[object], object], items: Sequence[object], repeats: int = 5) -> float:
    """Best of ``repeats`` passes over ``items``: the pass least disturbed by other processes."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            function(item)
        best = min(best, (time.perf_counter() - start) / len(items))
    return best


def centre_crop(array: np.ndarray) -> np.ndarray:
    top = (array.shape[0] - CROP_PX) // 2
    left = (array.shape[1] - CROP_PX) // 2
    return np.ascontiguousarray(array[top : top + CROP_PX, left : left + CROP_PX])


def main() -> None:
    start = time.perf_counter()
    patches = list(generate_corpus(n_paintings=36, n_patches=240, seed=0))
    generation_s = time.perf_counter() - start
    print(f"generated {len(patches)} patches of 300x300 px in {generation_s:.2f} s")

    spatial = [count_threads(p.h_mask, p.v_mask, p.px_per_cm) for p in patches]
    spectral = [fft_count(p.image, p.px_per_cm) for p in patches]
    print(f"\nrelative error vs ground truth on the {len(patches)} full patches (mean / median / max):")
    for name, estimates in (("count_threads", spatial), ("fft_count", spectral)):
        for family, errors in relative_errors(estimates, patches).items():
            print(
                f"  {name:13s} {family:10s} {100 * errors.mean():5.2f} % / {100 * np.median(errors):5.2f} % "
                f"/ {100 * errors.max():5.2f} %"
            )

    masks = [(centre_crop(p.h_mask), centre_crop(p.v_mask), p.px_per_cm) for p in patches]
    images = [(centre_crop(p.image), p.px_per_cm) for p in patches]
    densest = sorted(masks, key=lambda m: -int(np.count_nonzero(m[0] & m[1])))[:20]
    print(f"\ntime per call on {CROP_PX}x{CROP_PX} crops (best of 5 passes):")
    spatial_s = best_time_per_item_s(lambda m: count_threads(*m), masks)  # type: ignore[misc]
    densest_s = best_time_per_item_s(lambda m: count_threads(*m), densest)  # type: ignore[misc]
    spectral_s = best_time_per_item_s(lambda i: fft_count(*i), images)  # type: ignore[misc]
    full_s = best_time_per_item_s(lambda p: fft_count(p.image, p.px_per_cm), patches[:40])  # type: ignore[attr-defined]
    print(f"  count_threads {1e3 * spatial_s:6.3f} ms   (the 20 densest canvases: {1e3 * densest_s:.3f} ms)")
    print(f"  fft_count     {1e3 * spectral_s:6.3f} ms   (full 300x300 patches: {1e3 * full_s:.3f} ms)")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nload average during the run: {load} on {os.cpu_count()} CPUs (timings assume an idle machine)")


if __name__ == "__main__":
    main()
