"""How fast ``weave_map`` maps a whole radiograph, and how much memory it takes.

    python benchmarks/weave_map_speed.py                 # the 24 x 18 cm synthetic canvas at 100 px/cm, 3 repeats
    python benchmarks/weave_map_speed.py --repeats 1 --model_uri models:/thread-density@champion
    python benchmarks/weave_map_speed.py --mosaic 3 4    # the canvas tiled into a 96 x 54 cm radiograph: TIFF vs PNG

The canvas (``canvas.DEFAULT_CANVAS``: 47 x 35 = 1,645 windows of 1 cm, 0.5 cm apart) is rendered once, before any
clock starts. Each repeat is the real command, ``python -m thread_bench.weave_map``, in a fresh process against a
fresh tracking store, so its peak RSS is the map's own (the canvas was rendered elsewhere) and its wall time
includes the interpreter, the imports and loading the model. The command's own timings (``weave_map.json``) split
the work: reading the radiograph, window statistics, the FFT (one window at a time) and the CNN (batches of 256
windows through the model's pyfunc, which applies its own preprocessing). Goal (issue 21): <= 60 s with the laptop
model on 2 CPU cores, peak RSS <= 2 GB.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from thread_bench import cli
from thread_bench.measure import cpu_model

PARTS = ("read_s", "statistics_s", "fft_s", "cnn_s", "total_s")


def weave_map(radiograph: Path, options: list[str], scratch: Path, name: str) -> dict[str, float]:
    """``python -m thread_bench.weave_map`` in a fresh process and a fresh store: its wall time and its metrics."""
    out = scratch / name
    environment = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{scratch}/{name}.db"}
    command = [sys.executable, "-m", "thread_bench.weave_map", "--radiograph", str(radiograph), "--out", str(out)]
    started = time.perf_counter()
    done = subprocess.run([*command, *options], env=environment, cwd=scratch, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"weave_map failed ({done.returncode}):\n{done.stderr[-3000:]}")
    wall = time.perf_counter() - started
    metrics = json.loads((out / "weave_map.json").read_text())["metrics"]
    print(
        f"{name}: wall {wall:.1f} s, "
        + ", ".join(f"{part} {metrics.get(part, float('nan')):.2f}" for part in PARTS)
        + f", peak RSS {metrics['rss_peak_gib']:.2f} GiB",
        flush=True,
    )
    return {"wall_s": wall, **metrics}


def main() -> int:
    parser = cli.Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model_uri", default="shipped", help="the model (default: the one shipped with thread_bench)")
    parser.add_argument(
        "--mosaic",
        type=int,
        nargs=2,
        metavar=("ROWS", "COLS"),
        help="instead: the canvas tiled ROWS x COLS into one large 16-bit radiograph, mapped once as a tiled TIFF "
        "(decoded into a mapped file) and once as a PNG (decoded into memory), to compare their peak RSS",
    )
    args = parser.parse_args()

    from thread_bench.workloads.thread_density import canvas

    spec = canvas.DEFAULT_CANVAS
    with tempfile.TemporaryDirectory(prefix="weave-bench-") as folder:
        scratch = Path(folder)
        started = time.perf_counter()
        rendered = canvas.render_canvas(spec)
        image, truth = canvas.write_canvas(rendered, scratch, "canvas")
        print(f"canvas rendered in {time.perf_counter() - started:.1f} s: {image.name}", flush=True)
        options = ["--px_per_cm", str(spec.px_per_cm), "--model_uri", args.model_uri]
        if args.mosaic:
            return mosaic(rendered.image, args.mosaic, options, scratch)
        rows = [
            weave_map(image, [*options, "--truth", str(truth)], scratch, f"repeat{r + 1}") for r in range(args.repeats)
        ]
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


def mosaic(image: np.ndarray, shape: list[int], options: list[str], scratch: Path) -> int:
    import cv2
    import tifffile

    large = np.tile(image.astype(np.uint16) * 257, shape)
    tiff, png = scratch / "mosaic.tiff", scratch / "mosaic.png"
    tifffile.imwrite(tiff, large, tile=(512, 512), compression="zlib")
    cv2.imwrite(str(png), large)
    megabytes = large.nbytes / 2**20
    print(f"mosaic {large.shape[1]} x {large.shape[0]} px, {megabytes:.0f} MiB of 16-bit pixels", flush=True)
    del large
    rows = {name: weave_map(path, options, scratch, name) for name, path in (("tiff", tiff), ("png", png))}
    print(f"\nweave_map on {cpu_model()}, {os.cpu_count()} CPUs, {rows['tiff']['n_windows']:.0f} windows:")
    for name, row in rows.items():
        print(f"{name}: wall {row['wall_s']:.1f} s, map {row['total_s']:.1f} s, peak RSS {row['rss_peak_gib']:.2f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
