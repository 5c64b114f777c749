"""Analysis of the tracked training runs: best run per framework, test evaluation, report and figures.

The entry point is ``python -m analysis`` (:mod:`analysis.cli`); ``build_parser`` and ``main`` are
re-exported here for it, imported lazily so that ``import analysis.stats`` stays light.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    from analysis.cli import build_parser as build

    return build()


def main(argv: Sequence[str] | None = None) -> int:
    from analysis.cli import main as run

    return run(argv)
