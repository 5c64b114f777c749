"""Weave maps of whole radiographs: thread density window by window, by the CNN and by the FFT, on one grid.

The convention of technical art history (the weave maps of van Gogh's and Vermeer's canvases): windows 1 cm wide,
0.5 cm apart by default, over the whole radiograph; per window the density of the vertical and of the horizontal
threads (threads/cm) and, from the spectrum, the threads' angle. The grid's coordinates are window centres in cm
from the image's top-left corner, x to the right and y down (:func:`make_grid`).

Per window:

* **validity** (:func:`window_statistics`): a window is not counted when it is *blank* (the spread of its gray
  levels is a small fraction of the image's typical window's: a flat, featureless area), *outside* the canvas (a
  share of its pixels at the image's lowest level: nothing in the beam, the film's black) or *saturated* (a share
  at the highest level: lead, nails). It is marked (``valid = 0``, NaN in every map), never filled with a number;
* **the CNN**: the logged model's pyfunc, which applies its own preprocessing to each window as a request row
  (equalisation, resampling to the model's px/cm; :mod:`.serving`), in batches;
* **the FFT**: the spectral counter of :mod:`.counting` on the window's raw gray levels: densities and angles.
  A window it cannot count keeps NaN there while the CNN's numbers stand.

Given the exact truth of a synthetic canvas (:mod:`.canvas`), each window's true density is the mean of the
truth's per-pixel density over the window (windows less than :data:`TRUTH_COVERAGE` on the canvas have none), and
the map's errors against it are the mean absolute errors per family and method, overall and near the canvas'
edges (:data:`EDGE_CM`), where tacking distorts the weave.

Memory: a TIFF radiograph is decoded piece by piece into a memory-mapped file (:func:`read_radiograph`), a PNG into
memory, each in its stored 8- or 16-bit form; everything else is computed a window (or a batch of windows) at a
time, so no other full-size copy of it is made.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import pandas as pd

from thread_bench.progress import Ticker
from thread_bench.workloads.thread_density.counting import DEFAULT_FFT, FftSettings, check_px_per_cm, fft_measure
from thread_bench.workloads.thread_density.serving import DENSITY_H, DENSITY_V, PX_PER_CM

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from thread_bench.workloads.thread_density.canvas import Truth

#: The weave-map convention: 1 cm windows, 0.5 cm apart.
WINDOW_CM = 1.0
STEP_CM = 0.5
#: The spectral counter needs at least this many pixels on a side.
MIN_WINDOW_PX = 16
#: Blank: the standard deviation of a window's gray levels is below this fraction of the image's typical window's
#: (the 75th percentile over all windows, so that a radiograph mostly of margin still has a canvas reference).
#: A canvas window's weave alone spans a good part of the display range; a blank one shows only noise.
BLANK_RELATIVE_STD = 0.2
BLANK_REFERENCE_QUANTILE = 0.75
#: Outside / saturated: more than this share of a window's pixels at the image's lowest / highest gray level. A
#: canvas window has well under 1 % there (a display window clips only its extremes); the truth of a window asks
#: 90 % of it on the canvas (``TRUTH_COVERAGE``), and a window 10 % off the canvas is no longer a canvas window.
CLIPPED_SHARE = 0.1
#: Windows sent to the model per request (bounds the memory of a request; a progress line per batch or two).
BATCH_WINDOWS = 256
#: The FFT of a weave map tapers each window's edges (Tukey, 25 %): a radiograph's windows cut through canvas
#: edges, stretcher bars and nails, whose sharp edges leak along the very axes the thread peaks are searched on.
#: Measured on the default canvas (benchmarks/fft_variants.py's knobs, README): MAE 0.29 / 0.47 threads/cm
#: (vertical / horizontal) against 0.30 / 0.55 unwindowed and 0.33 / 0.53 with a Hann window; on 1 cm patches
#: without such edges no window is best (``counting.DEFAULT_FFT``).
FFT_SETTINGS: FftSettings = dataclasses.replace(DEFAULT_FFT, window="tukey", tukey_alpha=0.25)
#: A window whose centre lies within this distance of the canvas' edge is "near the edges" (cusping, nails).
EDGE_CM = 2.0
#: A window has a true density when at least this share of it lies on the canvas.
TRUTH_COVERAGE = 0.9

X_CM, Y_CM, VALID = "x_cm", "y_cm", "valid"
CNN_V, CNN_H, FFT_V, FFT_H = "density_v_cnn", "density_h_cnn", "density_v_fft", "density_h_fft"
ANGLE_V, ANGLE_H = "angle_v_deg", "angle_h_deg"
TRUE_V, TRUE_H = "density_v_true", "density_h_true"
#: The measured maps, in the CSV's column order.
MEASURED = (CNN_V, CNN_H, FFT_V, FFT_H, ANGLE_V, ANGLE_H)
COLUMNS = (X_CM, Y_CM, *MEASURED, VALID)
TRUTH_COLUMNS = (TRUE_V, TRUE_H)
CSV_NAME = "weave_map.csv"
GRID_NAME = "grid.json"
SUMMARY_NAME = "weave_map.json"
FIGURE_NAME = "weave_map.png"
MAPS_DIR = "maps"
#: Decimals kept in the CSV: 1e-4 threads/cm and cm are far below what a window can resolve.
CSV_DECIMALS = 4

#: A model as the weave map calls it: a request table (``image``, ``px_per_cm``) in, ``density_v``/``density_h`` out.
Predict = Callable[[pd.DataFrame], pd.DataFrame]

_EXTENSIONS = (".png", ".tif", ".tiff")


# ----------------------------------------------------------------------------------------------- input


def read_radiograph(path: str | Path, scratch: Path | None = None) -> np.ndarray:
    """A radiograph as one 2-D uint8 or uint16 array (PNG or TIFF, 8 or 16 bit, grayscale).

    A TIFF is decoded strip by strip (or tile by tile) by tifffile, every compression included; given ``scratch``,
    into a memory-mapped file there (``np.memmap``), so that a radiograph larger than the memory is paged in and out
    by the kernel as windows need it, not held. A PNG, one compressed stream, is decoded whole into memory.

    Raises:
        ValueError: naming the file: missing, not PNG/TIFF, unreadable, in colour, or of another depth.
    """
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"radiograph {file}: no such file")
    suffix = file.suffix.lower()
    if suffix not in _EXTENSIONS:
        raise ValueError(f"radiograph {file}: expected a PNG or TIFF image ({', '.join(_EXTENSIONS)})")
    image = _read_tiff(file, scratch) if suffix in (".tif", ".tiff") else cv2.imread(str(file), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"radiograph {file}: not a readable PNG or TIFF image")
    if image.ndim == 3:
        channels = image.shape[2]
        colour = image[::7, ::7, : min(channels, 3)]  # a sample: a scan stored as RGB has equal channels throughout
        if not (colour == colour[..., :1]).all():
            raise ValueError(f"radiograph {file}: a radiograph is grayscale, this image has {channels} colour channels")
        image = np.ascontiguousarray(image[..., 0])
    if image.ndim != 2 or image.dtype not in (np.uint8, np.uint16):
        raise ValueError(
            f"radiograph {file}: expected 8- or 16-bit gray levels, got {image.dtype} of shape {image.shape}"
        )
    return image


def _read_tiff(file: Path, scratch: Path | None) -> np.ndarray | None:
    """The first image of a TIFF (``None`` when it is not one tifffile can read)."""
    import tifffile

    try:
        with tifffile.TiffFile(file) as tiff:
            page = tiff.pages.first
            if scratch is None or page.dtype not in (np.uint8, np.uint16):
                return np.asarray(page.asarray())
            return np.asarray(page.asarray(out=str(scratch / f"{file.stem}.decoded")))
    except (tifffile.TiffFileError, ValueError, OSError, IndexError):
        return None


# ------------------------------------------------------------------------------------------------ grid


@dataclass(frozen=True)
class Grid:
    """Where the windows of a weave map lie: square windows of ``window_px`` pixels whose top-left corners are
    ``tops`` x ``lefts`` (rows x columns of the map), centred on the image (the margin left over is split evenly)."""

    px_per_cm: float
    window_cm: float
    step_cm: float
    window_px: int
    tops: np.ndarray
    lefts: np.ndarray
    height_px: int
    width_px: int
    #: Window centres, cm from the image's left and top edges: the nominal, evenly spaced positions (a window's
    #: pixels start at the nearest whole pixel, within half a pixel of them).
    x_cm: np.ndarray
    y_cm: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.tops), len(self.lefts)

    def windows(self) -> list[tuple[int, int]]:
        """(top, left) of every window, row-major (the CSV's order)."""
        return [(int(top), int(left)) for top in self.tops for left in self.lefts]

    def description(self) -> dict[str, Any]:
        return {
            "px_per_cm": self.px_per_cm,
            "window_cm": self.window_cm,
            "step_cm": self.step_cm,
            "window_px": self.window_px,
            "rows": self.shape[0],
            "cols": self.shape[1],
            "height_px": self.height_px,
            "width_px": self.width_px,
            X_CM: [round(float(x), CSV_DECIMALS) for x in self.x_cm],
            Y_CM: [round(float(y), CSV_DECIMALS) for y in self.y_cm],
        }


def make_grid(shape: tuple[int, int], px_per_cm: float, window_cm: float = WINDOW_CM, step_cm: float = STEP_CM) -> Grid:
    """The grid of windows over an image of ``shape`` (rows, columns) pixels.

    Raises:
        ValueError: naming the parameter: a window under :data:`MIN_WINDOW_PX` pixels or larger than the image, a
            step under one pixel.
    """
    resolution = check_px_per_cm(px_per_cm)
    for name, value in (("window_cm", window_cm), ("step_cm", step_cm)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number of centimetres, got {value!r}")
    window_px = round(window_cm * resolution)
    step_px = step_cm * resolution
    height, width = shape
    if window_px < MIN_WINDOW_PX:
        raise ValueError(
            f"window_cm={window_cm:g} is {window_px} px at px_per_cm={resolution:g}; a window needs at least "
            f"{MIN_WINDOW_PX} px on a side"
        )
    if step_px < 1:
        raise ValueError(f"step_cm={step_cm:g} is under one pixel at px_per_cm={resolution:g}")
    if window_px > min(height, width):
        raise ValueError(
            f"the radiograph ({width}x{height} px = {width / resolution:.2f} x {height / resolution:.2f} cm at "
            f"px_per_cm={resolution:g}) is smaller than one window ({window_cm:g} cm = {window_px} px)"
        )

    def starts(length: int) -> np.ndarray:
        count = math.floor((length - window_px) / step_px + 1e-9) + 1
        margin = (length - window_px - (count - 1) * step_px) / 2.0
        return margin + step_px * np.arange(count)

    top, left = starts(height), starts(width)
    return Grid(
        px_per_cm=resolution,
        window_cm=float(window_cm),
        step_cm=float(step_cm),
        window_px=window_px,
        tops=np.floor(top + 0.5).astype(np.int64),
        lefts=np.floor(left + 0.5).astype(np.int64),
        height_px=height,
        width_px=width,
        x_cm=(left + window_px / 2.0) / resolution,
        y_cm=(top + window_px / 2.0) / resolution,
    )


# ------------------------------------------------------------------------------------------------ maps


@dataclass
class WeaveMap:
    """The maps of one radiograph on its grid: each ``(rows, cols)``, NaN where not counted."""

    grid: Grid
    valid: np.ndarray
    maps: dict[str, np.ndarray]
    #: Why windows were not counted: reason -> count.
    invalid_reasons: dict[str, int] = field(default_factory=dict)
    #: Seconds spent: ``statistics_s``, ``fft_s``, ``cnn_s``.
    timings: dict[str, float] = field(default_factory=dict)

    def frame(self) -> pd.DataFrame:
        """One row per window, row-major: the CSV (columns :data:`COLUMNS`, then the truth's when present)."""
        x, y = np.meshgrid(self.grid.x_cm, self.grid.y_cm)
        columns: dict[str, Any] = {X_CM: x.ravel(), Y_CM: y.ravel()}
        for name in (*MEASURED, *TRUTH_COLUMNS):
            if name in self.maps:
                columns[name] = self.maps[name].ravel()
        columns[VALID] = self.valid.ravel().astype(np.int64)
        ordered = [*COLUMNS, *(name for name in TRUTH_COLUMNS if name in self.maps)]
        return pd.DataFrame(columns)[ordered]


def window_statistics(image: np.ndarray, grid: Grid) -> tuple[np.ndarray, dict[str, int]]:
    """Which windows can be counted (module docstring): the ``(rows, cols)`` validity and the count per reason."""
    low, high = int(image.min()), int(image.max())
    rows, cols = grid.shape
    spread, dark, bright = np.zeros((rows, cols)), np.zeros((rows, cols)), np.zeros((rows, cols))
    side = grid.window_px
    for row, top in enumerate(grid.tops):
        band = image[top : top + side]
        for col, left in enumerate(grid.lefts):
            window = band[:, left : left + side]
            spread[row, col] = window.std(dtype=np.float64)
            dark[row, col] = np.count_nonzero(window == low) / window.size
            bright[row, col] = np.count_nonzero(window == high) / window.size
    reference = float(np.quantile(spread, BLANK_REFERENCE_QUANTILE))
    outside = dark > CLIPPED_SHARE
    saturated = (bright > CLIPPED_SHARE) & ~outside
    flat = spread < BLANK_RELATIVE_STD * reference if reference > 0 else np.ones_like(spread, bool)
    blank = flat & ~outside & ~saturated
    reasons = {"blank": int(blank.sum()), "outside": int(outside.sum()), "saturated": int(saturated.sum())}
    return ~(blank | outside | saturated), reasons


def measure(
    image: np.ndarray,
    grid: Grid,
    predict: Predict | None,
    *,
    batch_windows: int = BATCH_WINDOWS,
    progress: bool = True,
) -> WeaveMap:
    """The weave map of ``image`` on ``grid``: validity, then the FFT, then the CNN (``predict``; ``None`` skips
    it) on the valid windows, each timed apart."""
    started = time.perf_counter()
    valid, reasons = window_statistics(image, grid)
    timings = {"statistics_s": time.perf_counter() - started}
    shape = grid.shape
    maps = {name: np.full(shape, np.nan) for name in MEASURED}
    places = [(row, col) for row in range(shape[0]) for col in range(shape[1]) if valid[row, col]]
    side = grid.window_px

    def window(row: int, col: int) -> np.ndarray:
        top, left = grid.tops[row], grid.lefts[col]
        return image[top : top + side, left : left + side]

    started = time.perf_counter()
    failed = 0
    with Ticker("weave_map", "FFT windows", len(places), enabled=progress) as ticker:
        for row, col in places:
            try:
                counted = fft_measure(window(row, col), grid.px_per_cm, FFT_SETTINGS)
            except ValueError:  # a CountingError, or a constant window that passed the blank test: nothing to count
                failed += 1
            else:
                maps[FFT_V][row, col], maps[FFT_H][row, col] = counted.vertical, counted.horizontal
                maps[ANGLE_V][row, col], maps[ANGLE_H][row, col] = counted.angle_v_deg, counted.angle_h_deg
            ticker.advance()
    timings["fft_s"] = time.perf_counter() - started
    reasons["fft_failed"] = failed

    if predict is not None:
        started = time.perf_counter()
        with Ticker("weave_map", "CNN windows", len(places), enabled=progress) as ticker:
            for first in range(0, len(places), batch_windows):
                batch = places[first : first + batch_windows]
                request = pd.DataFrame({"image": [window(row, col) for row, col in batch], PX_PER_CM: grid.px_per_cm})
                answer = predict(request)
                for (row, col), v, h in zip(batch, answer[DENSITY_V], answer[DENSITY_H], strict=True):
                    maps[CNN_V][row, col], maps[CNN_H][row, col] = v, h
                ticker.advance(len(batch))
        timings["cnn_s"] = time.perf_counter() - started
    return WeaveMap(grid=grid, valid=valid, maps=maps, invalid_reasons=reasons, timings=timings)


# ----------------------------------------------------------------------------------------------- truth


def check_truth(truth: Truth, image_shape: tuple[int, int], px_per_cm: float, source: str) -> None:
    """The truth belongs to this radiograph: the same pixel grid and resolution.

    Raises:
        ValueError: naming ``source`` and what differs.
    """
    if truth.density_v.shape != tuple(image_shape):
        raise ValueError(
            f"truth {source}: its density fields are {truth.density_v.shape[1]}x{truth.density_v.shape[0]} px, the "
            f"radiograph {image_shape[1]}x{image_shape[0]} px: not the truth of this radiograph"
        )
    if not math.isclose(truth.px_per_cm, px_per_cm, rel_tol=1e-9):
        raise ValueError(f"truth {source}: made at px_per_cm={truth.px_per_cm:g}, the map uses px_per_cm={px_per_cm:g}")


def add_truth(weave_map: WeaveMap, truth: Truth) -> None:
    """The true density of each window (the truth's per-pixel density averaged over it), into ``weave_map.maps``."""
    grid = weave_map.grid
    side = grid.window_px
    for name, field_ in ((TRUE_V, truth.density_v), (TRUE_H, truth.density_h)):
        values = np.full(grid.shape, np.nan)
        for row, top in enumerate(grid.tops):
            for col, left in enumerate(grid.lefts):
                window = field_[top : top + side, left : left + side]
                finite = np.isfinite(window)
                if finite.mean() >= TRUTH_COVERAGE:
                    values[row, col] = float(window[finite].mean(dtype=np.float64))
        weave_map.maps[name] = values


def near_edges(grid: Grid, truth: Truth) -> np.ndarray:
    """Windows whose centre lies within :data:`EDGE_CM` of the canvas' edge (the box of the truth's finite pixels)."""
    on_canvas = np.isfinite(truth.density_v)
    rows, cols = np.flatnonzero(on_canvas.any(axis=1)), np.flatnonzero(on_canvas.any(axis=0))
    if not len(rows):
        return np.zeros(grid.shape, bool)
    top, bottom = rows[0] / grid.px_per_cm, (rows[-1] + 1) / grid.px_per_cm
    left, right = cols[0] / grid.px_per_cm, (cols[-1] + 1) / grid.px_per_cm
    x, y = np.meshgrid(grid.x_cm, grid.y_cm)
    distance = np.minimum(np.minimum(x - left, right - x), np.minimum(y - top, bottom - y))
    return distance < EDGE_CM


def errors(weave_map: WeaveMap, edges: np.ndarray) -> dict[str, float]:
    """Mean absolute errors against the truth (threads/cm), ``mae_<family>_<method>`` overall, ``…_edge`` near the
    edges and ``…_interior`` elsewhere, each over the valid windows where the method and the truth both have a
    number; and the number of windows scored (``n_truth``, ``n_truth_edge``)."""
    maps = weave_map.maps
    scored = weave_map.valid & np.isfinite(maps[TRUE_V]) & np.isfinite(maps[TRUE_H])
    metrics: dict[str, float] = {"n_truth": int(scored.sum()), "n_truth_edge": int((scored & edges).sum())}
    for family, true in (("v", TRUE_V), ("h", TRUE_H)):
        for method in ("cnn", "fft"):
            measured = maps[f"density_{family}_{method}"]
            error = np.abs(measured - maps[true])
            for suffix, where in (("", scored), ("_edge", scored & edges), ("_interior", scored & ~edges)):
                chosen = error[where & np.isfinite(measured)]
                if chosen.size:
                    metrics[f"mae_{family}_{method}{suffix}"] = float(chosen.mean())
    return metrics


def summary(weave_map: WeaveMap) -> dict[str, float]:
    """What a map says without a truth: window counts, mean densities per method, their mean disagreement."""
    maps = weave_map.maps
    metrics: dict[str, float] = {
        "n_windows": int(weave_map.valid.size),
        "n_valid": int(weave_map.valid.sum()),
        **{f"n_{reason}": count for reason, count in weave_map.invalid_reasons.items()},
    }
    for name in (CNN_V, CNN_H, FFT_V, FFT_H):
        values = maps[name][np.isfinite(maps[name])]
        if values.size:
            metrics[f"mean_{name}"] = float(values.mean())
    for family in ("v", "h"):
        difference = np.abs(maps[f"density_{family}_cnn"] - maps[f"density_{family}_fft"])
        difference = difference[np.isfinite(difference)]
        if difference.size:
            metrics[f"mean_abs_difference_{family}"] = float(difference.mean())
    return metrics


# ------------------------------------------------------------------------------------------------ files


def write(weave_map: WeaveMap, out_dir: Path, metrics: Mapping[str, float], settings: Mapping[str, Any]) -> None:
    """``weave_map.csv``, ``grid.json``, ``weave_map.json`` (settings and metrics) and ``maps/<name>.npy`` (float64
    ``(rows, cols)``, NaN where not counted; ``valid.npy`` bool) into ``out_dir``."""
    maps_dir = out_dir / MAPS_DIR
    maps_dir.mkdir(parents=True, exist_ok=True)
    weave_map.frame().to_csv(out_dir / CSV_NAME, index=False, float_format=f"%.{CSV_DECIMALS}f", na_rep="")
    (out_dir / GRID_NAME).write_text(json.dumps(weave_map.grid.description(), indent=1) + "\n")
    document = {"settings": dict(settings), "metrics": dict(metrics), "invalid": weave_map.invalid_reasons}
    (out_dir / SUMMARY_NAME).write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    for name, values in weave_map.maps.items():
        np.save(maps_dir / f"{name}.npy", values)
    np.save(maps_dir / f"{VALID}.npy", weave_map.valid)


# ----------------------------------------------------------------------------------------------- figure


def figure(weave_map: WeaveMap, image: np.ndarray, title: str, metrics: Mapping[str, float]) -> Figure:
    """The published weave maps' layout: the radiograph and the FFT's angle maps on top, then a row per family:
    CNN, FFT (one colour scale, threads/cm), CNN - FFT, and with a truth the true map and each method's error."""
    from matplotlib.figure import Figure

    maps = weave_map.maps
    has_truth = TRUE_V in maps
    columns = 5 if has_truth else 3
    figure = Figure(figsize=(4.2 * columns, 10.5), layout="constrained")
    axes = figure.subplots(3, columns, squeeze=False)
    grid = weave_map.grid
    half = grid.step_cm / 2.0
    extent = (grid.x_cm[0] - half, grid.x_cm[-1] + half, grid.y_cm[-1] + half, grid.y_cm[0] - half)
    axes[0, 0].imshow(
        _preview(image), cmap="gray", extent=(0, grid.width_px / grid.px_per_cm, grid.height_px / grid.px_per_cm, 0)
    )
    axes[0, 0].set_title(f"radiograph, {grid.width_px / grid.px_per_cm:.1f} x {grid.height_px / grid.px_per_cm:.1f} cm")
    for ax, name, label in ((axes[0, 1], ANGLE_V, "vertical"), (axes[0, 2], ANGLE_H, "horizontal")):
        limit = _symmetric_limit([maps[name]], floor=1.0)
        _show(figure, ax, maps[name], extent, f"FFT: angle of the {label} threads", "degrees", "PuOr", -limit, limit)
    for ax in axes[0, 3:]:
        ax.set_axis_off()
    if has_truth:
        axes[0, 3].text(0.0, 1.0, _error_text(metrics), va="top", family="monospace", fontsize=10)
    for row, family, label in ((1, "v", "vertical"), (2, "h", "horizontal")):
        cnn, fft = maps[f"density_{family}_cnn"], maps[f"density_{family}_fft"]
        shown = [cnn, fft] + ([maps[f"density_{family}_true"]] if has_truth else [])
        low, high = _robust_range(shown)
        _show(figure, axes[row, 0], cnn, extent, f"CNN: {label} threads", "threads/cm", "viridis", low, high)
        _show(figure, axes[row, 1], fft, extent, f"FFT: {label} threads", "threads/cm", "viridis", low, high)
        limit = _symmetric_limit([cnn - fft])
        _show(figure, axes[row, 2], cnn - fft, extent, "CNN - FFT", "threads/cm", "RdBu_r", -limit, limit)
        if has_truth:
            true = maps[f"density_{family}_true"]
            _show(figure, axes[row, 3], true, extent, f"truth: {label} threads", "threads/cm", "viridis", low, high)
            limit = _symmetric_limit([cnn - true, fft - true])
            _show(figure, axes[row, 4], cnn - true, extent, "CNN - truth", "threads/cm", "RdBu_r", -limit, limit)
    for ax in axes.ravel():
        if ax.axison:
            ax.set_xlabel("x, cm")
            ax.set_ylabel("y, cm")
    figure.suptitle(title)
    return figure


def _show(
    figure: Figure,
    ax: Any,
    values: np.ndarray,
    extent: tuple[float, ...],
    title: str,
    unit: str,
    cmap: str,
    low: float,
    high: float,
) -> None:
    import matplotlib

    colours = matplotlib.colormaps[cmap].with_extremes(bad="0.8")
    shown = ax.imshow(
        np.ma.masked_invalid(values), cmap=colours, vmin=low, vmax=high, extent=extent, interpolation="nearest"
    )
    figure.colorbar(shown, ax=ax, label=unit, shrink=0.85)
    ax.set_title(title)


def _robust_range(maps: list[np.ndarray]) -> tuple[float, float]:
    values = np.concatenate([m[np.isfinite(m)] for m in maps])
    if not values.size:
        return 0.0, 1.0
    low, high = np.quantile(values, [0.02, 0.98])
    return float(low), float(max(high, low + 0.1))


def _symmetric_limit(maps: list[np.ndarray], floor: float = 0.1) -> float:
    values = np.concatenate([np.abs(m[np.isfinite(m)]) for m in maps])
    return max(float(np.quantile(values, 0.98)), floor) if values.size else floor


def _preview(image: np.ndarray, max_side: int = 900) -> np.ndarray:
    """The radiograph shrunk for the figure (area interpolation), stretched between its 0.5th and 99.5th percentile."""
    scale = min(1.0, max_side / max(image.shape))
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image
    low, high = np.quantile(small, [0.005, 0.995])
    return np.clip((small.astype(np.float32) - low) / max(float(high - low), 1.0), 0.0, 1.0)


def _error_text(metrics: Mapping[str, float]) -> str:
    """The errors against the truth as a small table (threads/cm; the FFT's error map is not drawn, its MAE is here)."""
    lines = ["mean absolute error,", "threads/cm       CNN    FFT"]
    for family, label in (("v", "vertical"), ("h", "horizontal")):
        for suffix, where in (("", "all"), ("_edge", "edges")):
            cnn = metrics.get(f"mae_{family}_cnn{suffix}", math.nan)
            fft = metrics.get(f"mae_{family}_fft{suffix}", math.nan)
            lines.append(f"{label[:5]:<5} {where:<8} {cnn:6.2f} {fft:6.2f}")
    lines.append(f"{metrics.get('n_truth', 0)} windows scored,")
    lines.append(f"{metrics.get('n_truth_edge', 0)} within {EDGE_CM:g} cm of an edge")
    return "\n".join(lines)
