"""Synthetic weave maps for the weave comparison's tests: canvases cut from simulated bolts.

A bolt's warp density varies across its width in stripes (smoothed noise on 0.5-5 cm scales, ~4 % relative std
around a nominal density) and stays constant along its length. A canvas is a rectangle cut from it at some offset
across the warp, possibly mounted turned (the warp horizontal: warp ``h``) or the other way round (reversed), and
its weave map holds that profile along the warp family's rows, plus measurement noise and invalid windows, written
as ``weave_map.csv`` in the weave_map entry point's layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

#: The bolt is simulated this finely (cm) and averaged over each 1 cm window.
FINE_STEP_CM = 0.05
WINDOW_CM = 1.0
STEP_CM = 0.5
NOMINAL_DENSITY = 14.0
RELATIVE_STD = 0.04
MEASUREMENT_NOISE = 0.3
WEFT_DENSITY = 16.0


@dataclass(frozen=True)
class Bolt:
    """A warp profile across a bolt's width, sampled every FINE_STEP_CM from 0."""

    density: np.ndarray

    @property
    def width_cm(self) -> float:
        return len(self.density) * FINE_STEP_CM

    def window_mean(self, position_cm: np.ndarray) -> np.ndarray:
        """The profile averaged over a WINDOW_CM window centred at each position."""
        half = round(WINDOW_CM / 2 / FINE_STEP_CM)
        centre = np.round(np.asarray(position_cm) / FINE_STEP_CM).astype(int)
        cumulative = np.concatenate([[0.0], np.cumsum(self.density)])
        return (cumulative[centre + half] - cumulative[centre - half]) / (2 * half)


def _smoothed(rng: np.random.Generator, n: int, sigma_cm: float) -> np.ndarray:
    sigma = sigma_cm / FINE_STEP_CM
    radius = int(4 * sigma)
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    noise = rng.normal(size=n + 2 * radius)
    smooth = np.convolve(noise, kernel / kernel.sum(), mode="valid")
    return (smooth - smooth.mean()) / smooth.std()


def make_bolt(rng: np.random.Generator, width_cm: float = 80.0, nominal: float = NOMINAL_DENSITY) -> Bolt:
    """Stripes on 0.5-5 cm scales: the sum of noise smoothed at 0.5, 1.5 and 4 cm, scaled to RELATIVE_STD."""
    n = round(width_cm / FINE_STEP_CM)
    stripes = sum(_smoothed(rng, n, sigma) for sigma in (0.5, 1.5, 4.0))
    stripes = (stripes - stripes.mean()) / stripes.std()
    return Bolt(nominal * (1 + RELATIVE_STD * stripes))


@dataclass(frozen=True)
class Canvas:
    """Where a canvas was cut from its bolt and how it is mounted."""

    #: Across the warp, from the bolt's edge to the canvas's edge, cm.
    offset_cm: float
    #: Across the warp (its warp profile's extent) and along it, cm.
    width_cm: float
    length_cm: float
    #: ``v``: warp vertical in the radiograph; ``h``: turned a quarter.
    warp: str = "v"
    #: Mounted the other way round: the profile runs from the far edge.
    reversed: bool = False


def window_centres(extent_cm: float) -> np.ndarray:
    return np.arange(WINDOW_CM / 2, extent_cm - WINDOW_CM / 2 + 1e-9, STEP_CM)


def weave_map_table(
    bolt: Bolt,
    canvas: Canvas,
    rng: np.random.Generator,
    *,
    invalid_share: float = 0.05,
    failed_share: float = 0.02,
    noise: float = MEASUREMENT_NOISE,
) -> pd.DataFrame:
    """The weave map of ``canvas`` in weave_map.csv's columns (cnn and fft densities, no truth)."""
    across, along = window_centres(canvas.width_cm), window_centres(canvas.length_cm)
    bolt_position = canvas.offset_cm + (canvas.width_cm - across if canvas.reversed else across)
    warp = bolt.window_mean(bolt_position)
    # Grid of (along, across), then placed: warp v = the profile runs along x, h = along y.
    warp_grid = np.broadcast_to(warp, (len(along), len(across)))
    if canvas.warp == "v":
        x_cm, y_cm, density_v_true = across, along, warp_grid
    else:
        x_cm, y_cm, density_v_true = along, across, None
    yy, xx = np.meshgrid(y_cm, x_cm, indexing="ij")
    shape = yy.shape
    if density_v_true is not None:
        v_true, h_true = density_v_true, np.full(shape, WEFT_DENSITY)
    else:
        v_true, h_true = np.full(shape, WEFT_DENSITY), warp_grid.T
    table = pd.DataFrame({"x_cm": xx.ravel(), "y_cm": yy.ravel()})
    for method in ("cnn", "fft"):
        table[f"density_v_{method}"] = (v_true + rng.normal(0, noise, shape)).ravel()
        table[f"density_h_{method}"] = (h_true + rng.normal(0, noise, shape)).ravel()
    table["angle_v_deg"] = 90.0
    table["angle_h_deg"] = 0.0
    valid = rng.uniform(size=len(table)) >= invalid_share
    table["valid"] = valid.astype(int)
    density_columns = [c for c in table.columns if c.startswith("density_")]
    table.loc[~valid, density_columns] = np.nan
    failed = valid & (rng.uniform(size=len(table)) < failed_share)  # one method failed in a valid window
    table.loc[failed, "density_v_cnn"] = np.nan
    return table


def write_weave_map(directory: Path, table: pd.DataFrame) -> Path:
    """``directory/weave_map.csv`` (NaN as empty fields, as the weave map writes them); returns the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    table.to_csv(directory / "weave_map.csv", index=False)
    return directory


def expected_shift_cm(a: Canvas, b: Canvas) -> float:
    """Where b's first profile column (its last when b is reversed) lies along a's profile, from a's first column:
    the offset, across the bolt, of the bolt positions of those two columns (with a as is; a reversed measures
    along a's reversed direction)."""
    first_a = window_centres(a.width_cm)
    first_b = window_centres(b.width_cm)
    # Bolt position of a's first profile column, and of b's first compared column.
    a0 = a.offset_cm + (a.width_cm - first_a[0] if a.reversed else first_a[0])
    b_relative = b.reversed != a.reversed  # b compared reversed when the two run opposite ways
    b0 = b.offset_cm + (b.width_cm - first_b[0] if b.reversed else first_b[0])
    if b_relative:
        b0 = b.offset_cm + (first_b[-1] if not b.reversed else b.width_cm - first_b[-1])
    return float(b0 - a0) if not a.reversed else float(a0 - b0)
