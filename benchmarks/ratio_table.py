"""Side-by-side table of a saved model-benchmark run: time per framework relative to Keras on TensorFlow.

    python benchmarks/ratio_table.py benchmarks/results/<run>/        # a run directory, or
    python benchmarks/ratio_table.py a.json b.json ...                 # pytest-benchmark JSON files

Each cell is ``median ms · ratio × · GFLOP/s``; ratio = framework median / Keras-TF median of the same case
(> 1: slower than Keras on TensorFlow). The last rows give the geometric mean of the ratios per operation.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from thread_bench import cli

BASELINE = "keras-tensorflow"
FRAMEWORK_ORDER = ("keras-tensorflow", "keras-jax", "keras-torch", "torch-eager", "torch-channels_last")
OP_ORDER = ("inception_forward", "inception_train", "model_train_step")
#: Cores that other processes may use during a case before the table warns.
FOREIGN_LOAD_CAUTION_CORES = 0.2


def load_results(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Benchmarks with ``extra_info`` from the model benchmarks, from JSON files or directories of them."""
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(path.glob("*.json")) if path.is_dir() else [path])
    if not files:
        raise FileNotFoundError(f"no benchmark JSON files in {[str(p) for p in paths]}")
    results = []
    for file in files:
        document = json.loads(file.read_text())
        machine = document.get("machine_info", {})
        for bench in document.get("benchmarks", []):
            info = bench.get("extra_info", {})
            if "framework" in info and "op" in info:
                results.append(
                    {
                        **info,
                        "median_s": bench["stats"]["median"],
                        "iqr_s": bench["stats"]["iqr"],
                        "rounds": bench["stats"]["rounds"],
                        "machine": machine,
                    }
                )
    return results


def _case_sort_key(case: str) -> tuple[int, ...]:
    return tuple(-int("".join(ch for ch in part if ch.isdigit()) or 0) for part in case.split("-"))


def format_table(results: Sequence[dict[str, Any]]) -> str:
    by_case: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    for result in results:
        by_case[(result["op"], result["case"])][result["framework"]] = result
    frameworks = [f for f in FRAMEWORK_ORDER if any(f in row for row in by_case.values())]
    frameworks += sorted({f for row in by_case.values() for f in row} - set(frameworks))
    header = ["op", "case", *frameworks]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    ratios: dict[tuple[str, str], list[float]] = defaultdict(list)
    ops = sorted({op for op, _ in by_case}, key=lambda op: (OP_ORDER.index(op) if op in OP_ORDER else 99, op))
    for op in ops:
        for case in sorted((c for o, c in by_case if o == op), key=_case_sort_key):
            row = by_case[(op, case)]
            baseline = row.get(BASELINE)
            cells = []
            for framework in frameworks:
                if framework not in row:
                    cells.append("—")
                    continue
                result = row[framework]
                cell = f"{result['median_s'] * 1e3:,.1f} ms"
                if baseline is not None:
                    ratio = result["median_s"] / baseline["median_s"]
                    ratios[(op, framework)].append(ratio)
                    cell += f" · {ratio:.2f}×"
                cell += f" · {result['gflops_per_s']:.0f} GF/s"
                if (result.get("other_processes_cores") or 0.0) > FOREIGN_LOAD_CAUTION_CORES:
                    cell += " ⚠"
                cells.append(cell)
            lines.append("| " + " | ".join([op, case, *cells]) + " |")
    for op in ops:
        means = []
        for framework in frameworks:
            values = ratios.get((op, framework), [])
            means.append(f"**{math.exp(sum(map(math.log, values)) / len(values)):.2f}×**" if values else "—")
        lines.append("| " + " | ".join([f"**{op}**", "geometric mean of ratios", *means]) + " |")
    return "\n".join(lines)


def format_machine_notes(results: Sequence[dict[str, Any]]) -> str:
    """CPU and threads, and how many cores other processes used meanwhile (they distort the timings)."""
    foreign = [float(r["other_processes_cores"]) for r in results if r.get("other_processes_cores") is not None]
    cpus = sorted({str(r["machine"].get("cpu", {}).get("brand_raw", "?")) for r in results})
    cores = int(results[0]["machine"].get("cpu_count") or 1)
    threads = sorted({int(r["machine"]["torch_num_threads"]) for r in results if "torch_num_threads" in r["machine"]})
    notes = [f"CPU: {', '.join(cpus)}; cores: {cores}"]
    if threads:
        notes.append(f"torch threads: {threads}")
    if foreign:
        notes.append(f"cores used by other processes during a case: median {statistics.median(foreign):.2f}, "
                     f"max {max(foreign):.2f}")  # fmt: skip
    text = "; ".join(notes)
    if foreign and max(foreign) > FOREIGN_LOAD_CAUTION_CORES:
        text += "\nCAUTION: ⚠ marks cases during which other processes used the cores; their timings are distorted."
    return text


def main(argv: Sequence[str] | None = None) -> None:
    parser = cli.Parser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run directory or pytest-benchmark JSON files")
    args = parser.parse_args(argv)
    results = load_results(args.paths)
    print(format_table(results))
    print()
    print(format_machine_notes(results))


if __name__ == "__main__":
    main()
