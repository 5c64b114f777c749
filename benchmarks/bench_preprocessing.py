"""Time and memory of preprocessing a profile's dataset from scratch (default: the paper profile).

    python benchmarks/bench_preprocessing.py [--profile paper] [--workers N] [--keep DIR]

Prints the corpus generation time, the preparation time (equalisation, augmentation, counting, writing),
the sub-patch counts per split and the peak resident memory of the whole process tree (the parent plus its
worker processes, sampled every 20 ms), against the targets of the foundation issue (paper: <= 30 s,
<= 2.5 GB). The reference study needed 520 s for the same step.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import tempfile
import threading
import time
from pathlib import Path

import psutil

from thread_bench import cli
from thread_bench.config import resolve
from thread_bench.workloads.thread_density.config import PROFILES, DataConfig
from thread_bench.workloads.thread_density.prepare import ensure_prepared, synthetic_corpus_dir
from thread_bench.workloads.thread_density.synthetic import STYLE_MIXES, write_corpus


class TreeRssPeak:
    """Peak of the summed RSS of this process and its children, sampled in a background thread."""

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = me.memory_info().rss
            for child in me.children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    total += child.memory_info().rss
            self.peak_bytes = max(self.peak_bytes, total)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> TreeRssPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the spawned workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = cli.Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--keep", type=Path, default=None, help="data root to keep (default: a temporary one)")
    args = parser.parse_args()
    config = resolve(DataConfig, args.profile, profiles=PROFILES)
    with tempfile.TemporaryDirectory() as scratch:
        root = args.keep or Path(scratch)
        started = time.perf_counter()
        write_corpus(
            synthetic_corpus_dir(config, root),
            n_paintings=config.n_paintings,
            n_patches=config.n_patches,
            seed=config.seed,
            mix=STYLE_MIXES[config.styles],
        )
        corpus_s = time.perf_counter() - started
        with TreeRssPeak() as memory:
            cpu_before = _cpu_seconds()
            started = time.perf_counter()
            result = ensure_prepared(config, root, workers=args.workers)
            prep_s = time.perf_counter() - started
            cpu_s = _cpu_seconds() - cpu_before
        splits = result.dataset.manifest["splits"]
        skipped = result.dataset.manifest["skipped"]
        total = sum(s["n"] for s in splits.values())
        print(
            f"profile {args.profile}: {config.n_patches} patches -> {total} sub-patches "
            f"(train {splits['train']['n']} / val {splits['val']['n']} / test {splits['test']['n']}; "
            f"reference 24360 / 4368 / 1512)"
        )
        print(f"skipped: {len(skipped['patches'])} patches, {skipped['subpatches']} sub-patches")
        print(f"corpus generation: {corpus_s:.1f} s")
        print(
            f"preparation:       {prep_s:.1f} s  ({total / prep_s:.0f} sub-patches/s; target <= 30 s, "
            f"reference 520 s = {520 / prep_s:.0f}x slower)"
        )
        # CPU seconds do not grow when other jobs share the cores (wall time does): cpu_s / cores is the wall
        # time the same work takes on free cores.
        cores = psutil.cpu_count() or 1
        print(
            f"CPU time (process tree): {cpu_s:.1f} s = {cpu_s / cores:.1f} s of wall time on {cores} free cores; "
            f"machine load average during the run: {psutil.getloadavg()[0]:.1f}"
        )
        print(f"peak RSS (process tree): {memory.peak_bytes / 2**30:.2f} GiB (target <= 2.5 GB)")


if __name__ == "__main__":
    main()
