"""The ``held_out`` entry point: ``python -m thread_bench.held_out [--model_uri URI ...] [--styles held_out]``.

Models and the FFT on canvases of styles training never saw, by difficulty
(:mod:`thread_bench.workloads.thread_density.held_out`).
"""

from __future__ import annotations

from thread_bench.workloads.thread_density.held_out import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
