"""The ``weave_map`` entry point: ``python -m thread_bench.weave_map [--radiograph R --px_per_cm P] [--model_uri M]``.

Weave maps of a whole radiograph, by the CNN and the FFT side by side
(:mod:`thread_bench.workloads.thread_density.weave_map`).
"""

from __future__ import annotations

from thread_bench.workloads.thread_density.weave_map import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
