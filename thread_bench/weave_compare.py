"""The ``weave_compare`` entry point: ``python -m thread_bench.weave_compare --map_a A --map_b B [--method cnn] ...``.

Were two canvases cut from one bolt? Their weave maps' warp profiles compared
(:mod:`thread_bench.workloads.thread_density.weave_compare`).
"""

from __future__ import annotations

from thread_bench.workloads.thread_density.weave_compare import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
