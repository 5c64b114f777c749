"""How fast ``weave_map`` maps a whole radiograph, and how much memory it takes.

    python benchmarks/weave_map_speed.py                 # the 24 x 18 cm synthetic canvas at 100 px/cm, 3 repeats
    python benchmarks/weave_map_speed.py --repeats 1 --model_uri models:/thread-density@champion

The canvas (``canvas.DEFAULT_CANVAS``: 47 x 35 = 1,645 windows of 1 cm, 0.5 cm apart) is rendered once, before any
clock starts. Each repeat is the real command, ``python -m thread_bench.weave_map``, in a fresh process against a
fresh tracking store, so its peak RSS is the map's own (the canvas was rendered elsewhere) and its wall time
includes the interpreter, the imports and loading the model. The command's own timings (``weave_map.json``) split
the work: reading the radiograph, window statistics, the FFT (one window at a time) and the CNN (batches of 256
windows through the model's pyfunc, which applies its own preprocessing). Goal (issue 21): <= 60 s with the laptop
model on 2 CPU cores, peak RSS <= 2 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from thread_bench.measure import cpu_model

PARTS = ("read_s", "statistics_s", "fft_s", "cnn_s", "total_s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model_uri", default="shipped", help="the model (default: the one shipped with thread_bench)")
    args = parser.parse_args()

    from thread_bench.workloads.thread_density import canvas

    with tempfile.TemporaryDirectory(prefix="weave-bench-") as scratch:
        started = time.perf_counter()
        image, truth = canvas.write_canvas(canvas.render_canvas(canvas.DEFAULT_CANVAS), Path(scratch), "canvas")
        print(f"canvas rendered in {time.perf_counter() - started:.1f} s: {image.name}", flush=True)
        rows = []
        for repeat in range(args.repeats):
            out = Path(scratch) / f"out{repeat}"
            environment = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{scratch}/mlflow{repeat}.db"}
            command = [
                sys.executable, "-m", "thread_bench.weave_map", "--radiograph", str(image), "--truth", str(truth),
                "--px_per_cm", str(canvas.DEFAULT_CANVAS.px_per_cm), "--model_uri", args.model_uri, "--out", str(out),
            ]  # fmt: skip
            started = time.perf_counter()
            done = subprocess.run(command, env=environment, cwd=scratch, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"weave_map failed ({done.returncode}):\n{done.stderr[-3000:]}")
            wall = time.perf_counter() - started
            metrics = json.loads((out / "weave_map.json").read_text())["metrics"]
            rows.append({"wall_s": wall, **{part: metrics.get(part, float("nan")) for part in PARTS}, **metrics})
            print(
                f"repeat {repeat + 1}: wall {wall:.1f} s, "
                + ", ".join(f"{part} {metrics.get(part, float('nan')):.2f}" for part in PARTS)
                + f", peak RSS {metrics['rss_peak_gib']:.2f} GiB",
                flush=True,
            )
    median = {key: statistics.median(row[key] for row in rows) for key in ("wall_s", *PARTS, "rss_peak_gib")}
    last = rows[-1]
    print(f"\nweave_map on {cpu_model()}, {os.cpu_count()} CPUs, {last['n_windows']} windows, model {args.model_uri}")
    print(f"median of {len(rows)}: " + ", ".join(f"{key} {value:.2f}" for key, value in median.items()))
    print(
        f"per window: FFT {1e3 * median['fft_s'] / last['n_valid']:.2f} ms, "
        f"CNN {1e3 * median['cnn_s'] / last['n_valid']:.2f} ms (both families)"
    )
    for family in ("v", "h"):
        print(
            f"MAE {family}: CNN {last.get(f'mae_{family}_cnn', float('nan')):.3f}, "
            f"FFT {last.get(f'mae_{family}_fft', float('nan')):.3f} threads/cm"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
