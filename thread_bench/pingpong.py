"""The ``pingpong`` entry point: ``python -m thread_bench.pingpong [--model cnn3] [--frameworks torch,keras] ...``.

The weight ping-pong experiment of the digits workload (:mod:`thread_bench.workloads.digits.pingpong`).
"""

from __future__ import annotations

from thread_bench.workloads.digits.pingpong import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
