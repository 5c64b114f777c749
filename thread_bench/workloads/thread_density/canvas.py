"""Synthetic whole-canvas radiographs with exact per-pixel thread-density maps (docs/DESIGN.md §2.2).

The patch generator (:mod:`.synthetic`) draws 1.5 cm squares; this module draws a whole painting's
radiograph (24 x 18 cm at 100 px/cm by default) with the same physics, and the ground truth of a map:

- **Bolt.** Canvas was woven in bolts ~1.5 m wide. The warp (vertical threads) runs along the bolt, so its
  spacing across the bolt -- the *warp stripes*, smooth structure on 0.5-5 cm scales plus thread-scale
  irregularity -- is the same all along the bolt: the bolt's fingerprint. Two paintings cut from one bolt
  share it at their offsets across the bolt (a canvas may be mounted turned, ``reversed``); that is how
  same-bolt matching works on real collections.
- **Weft.** The weft (horizontal threads) was beaten up shot by shot: its density varies smoothly along the
  canvas' height, plus irregularity.
- **Canvas.** Both families tilt slightly and wave (smooth 2-D displacement); tacking edges on all four sides
  show cusping (garlands towards nails 3-6 cm apart, decaying a few mm to ~2 cm into the canvas); a seam
  joins two pieces of cloth; stretcher bars, paint (1/f^2 layer and strokes) and nails add attenuation;
  a blank margin with no canvas surrounds it, as where a canvas edge lies inside the film.
- **Imaging** as in :mod:`.synthetic` (blur, photon and read noise, window, gamma, 8 or 16 bit).

Ground truth, exact as in :mod:`.synthetic`: a family's phase ``phi`` counts threads (centre lines at its
integers); per pixel, ``density = px_per_cm * |grad phi|`` [threads/cm], from the same fields that draw the
image, float32, NaN outside the canvas. The truth of a window is the mean of the field over the window.
``density_v`` is the vertical family (warp, counted along a horizontal line), ``density_h`` the horizontal
one (weft).

Rendering works in horizontal strips (memory); every per-pixel quantity is a pointwise function of global
fields, so strip boundaries do not change the result.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import os
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

from thread_bench import cli
from thread_bench.workloads.thread_density.synthetic import (
    ImagingParams,
    _exposure,
    _Family,
    _ground_from_heights,
    _nail,
    _quantise,
    _smooth_field,
    _thread_height,
    _window,
    _wood,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Nominal densities of a random bolt, threads/cm.
BOLT_DENSITY_RANGE_THREADS_PER_CM = (8.0, 20.0)
#: Sampling step of the 1-D density profiles (warp across the bolt, weft along the height).
PROFILE_STEP_CM = 0.005
#: Rows rendered at once: bounds the memory of the per-pixel thread fields.
STRIP_ROWS = 256
#: Width of the overlapped band of a seam.
SEAM_WIDTH_CM = 0.5
#: Attenuation of the bare cloth (size, fibres) relative to a full ground layer: the canvas is never clear.
CLOTH_ATTENUATION = 0.15
#: Pixels of a rendered canvas at most (a typo in px_per_cm should fail, not swap).
MAX_PIXELS = 60_000_000
#: A canvas' edge lies this far inside the bolt's selvedges at least (profile padding for waviness).
BOLT_EDGE_PAD_CM = 1.0
DEFAULT_BOLT_WIDTH_CM = 150.0
TRUTH_KEYS = ("density_v", "density_h", "px_per_cm", "spec")


# ------------------------------------------------------------------------------------------------ bolt


@dataclass(frozen=True)
class Bolt:
    """A bolt of canvas: nominal densities and the warp-stripe fingerprint across its width (from ``seed``)."""

    #: Nominal warp density (vertical threads, counted along a horizontal line), threads/cm.
    density_v_threads_per_cm: float
    #: Nominal weft density (horizontal threads), threads/cm.
    density_h_threads_per_cm: float
    seed: int = 0
    width_cm: float = DEFAULT_BOLT_WIDTH_CM
    #: Relative standard deviation of the warp stripes (0.5-5 cm structure across the bolt).
    stripe_std: float = 0.04
    #: Relative standard deviation of the thread-scale irregularity of each family.
    irregularity_v: float = 0.03
    irregularity_h: float = 0.05

    def __post_init__(self) -> None:
        for name in ("density_v_threads_per_cm", "density_h_threads_per_cm"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and 2.0 <= value <= 60.0):
                raise ValueError(f"Bolt.{name} must be in [2, 60] threads/cm, got {value!r}")
        if not (isinstance(self.seed, int) and self.seed >= 0):
            raise ValueError(f"Bolt.seed must be a non-negative integer, got {self.seed!r}")
        if not (math.isfinite(self.width_cm) and 10.0 <= self.width_cm <= 1000.0):
            raise ValueError(f"Bolt.width_cm must be in [10, 1000] cm, got {self.width_cm!r}")
        for name in ("stripe_std", "irregularity_v", "irregularity_h"):
            value = getattr(self, name)
            if not 0.0 <= value <= 0.15:
                raise ValueError(f"Bolt.{name} must be a relative deviation in [0, 0.15], got {value!r}")

    @classmethod
    def random(cls, rng: np.random.Generator) -> Bolt:
        """A plausible bolt: nominal densities in 8-20 threads/cm, weft near the warp, 3-5 % warp stripes."""
        low, high = BOLT_DENSITY_RANGE_THREADS_PER_CM
        density_v = float(rng.uniform(low, high))
        density_h = float(np.clip(density_v * math.exp(rng.normal(0.0, 0.15)), low, high))
        irregularity_v = float(rng.uniform(0.02, 0.04))
        return cls(
            density_v_threads_per_cm=density_v,
            density_h_threads_per_cm=density_h,
            seed=int(rng.integers(2**31)),
            stripe_std=float(rng.uniform(0.03, 0.05)),
            irregularity_v=irregularity_v,
            irregularity_h=float(rng.uniform(irregularity_v + 0.01, 0.07)),
        )

    def warp_profile(self, x_cm: np.ndarray) -> np.ndarray:
        """The warp's relative frequency multiplier (mean ~1) at positions ``x_cm`` across the bolt."""
        grid = _warp_grid(self)
        return np.interp(np.asarray(x_cm, dtype=np.float64), grid.positions_cm, grid.relative)


@dataclass(frozen=True, eq=False)
class _Profile:
    """A 1-D thread frequency on a uniform grid and its phase; evaluated exactly between grid points.

    Between samples the frequency is linear and the phase its exact integral (quadratic), so the phase's
    derivative *is* the interpolated frequency: the truth and the drawn threads agree to float rounding.
    """

    start_cm: float
    step_cm: float
    frequency: np.ndarray  # threads/cm at start_cm + i * step_cm (float64)
    phase: np.ndarray  # threads at the same points (float64), phase[0] = phase offset

    @property
    def positions_cm(self) -> np.ndarray:
        return self.start_cm + self.step_cm * np.arange(self.frequency.size)

    @property
    def relative(self) -> np.ndarray:
        return self.frequency / self.frequency.mean()

    @classmethod
    def integrate(cls, start_cm: float, step_cm: float, frequency: np.ndarray, phase0: float) -> _Profile:
        steps = 0.5 * (frequency[1:] + frequency[:-1]) * step_cm  # trapezoid: exact for a linear frequency
        return cls(start_cm, step_cm, frequency, phase0 + np.concatenate(([0.0], np.cumsum(steps))))

    def window(self, low_cm: float, high_cm: float) -> tuple[_Profile, int]:
        """The part covering ``[low_cm, high_cm]``, its phase shifted by an integer (returned) to start in [0, 1):
        float32 then keeps ~1e-5 thread precision, and thread indices stay the bolt's minus that integer."""
        first = max(0, math.floor((low_cm - self.start_cm) / self.step_cm) - 1)
        last = min(self.frequency.size, math.ceil((high_cm - self.start_cm) / self.step_cm) + 2)
        if first >= last - 1:
            raise ValueError(f"[{low_cm}, {high_cm}] cm is outside the profile")
        shift = math.floor(self.phase[first])
        return _Profile(
            self.start_cm + first * self.step_cm,
            self.step_cm,
            self.frequency[first:last],
            self.phase[first:last] - shift,
        ), shift

    def evaluate(self, position_cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Phase (threads) and frequency (threads/cm) at ``position_cm`` (float32 arrays)."""
        where = (position_cm - np.float32(self.start_cm)) * np.float32(1.0 / self.step_cm)
        cell = np.clip(where.astype(np.int32), 0, self.frequency.size - 2)
        weight = where - cell.astype(np.float32)
        f0 = self.frequency.astype(np.float32)
        slope = np.diff(self.frequency).astype(np.float32)
        frequency = f0[cell] + weight * slope[cell]
        phase = self.phase.astype(np.float32)[cell] + np.float32(self.step_cm) * weight * (
            f0[cell] + np.float32(0.5) * weight * slope[cell]
        )
        return phase, frequency


def _band_noise(rng: np.random.Generator, n: int, step_cm: float, scales_cm: tuple[float, float]) -> np.ndarray:
    """Unit-std 1-D noise with structure between ``scales_cm`` (wavelengths), smooth band edges."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    k = np.fft.rfftfreq(n, d=step_cm)  # cycles/cm
    low_k, high_k = 1.0 / scales_cm[1], 1.0 / scales_cm[0]
    gain = 1.0 / (1.0 + (low_k / np.maximum(k, 1e-12)) ** 4) * np.exp(-((k / high_k) ** 2))
    noise = np.fft.irfft(spectrum * gain, n)
    noise -= noise.mean()
    return noise / max(float(noise.std()), 1e-12)


def _irregularity(rng: np.random.Generator, n: int, step_cm: float, density: float) -> np.ndarray:
    """Unit-std noise correlated over ~1.5 threads, as :func:`.synthetic._family`."""
    noise = gaussian_filter1d(rng.standard_normal(n), sigma=1.5 / density / step_cm, mode="reflect")
    noise -= noise.mean()
    return noise / max(float(noise.std()), 1e-12)


@functools.lru_cache(maxsize=8)
def _warp_grid(bolt: Bolt) -> _Profile:
    """The warp across the whole bolt (cached: two canvases of one bolt share it)."""
    rng = np.random.default_rng(np.random.SeedSequence([bolt.seed, 0x801]))
    n = math.ceil(bolt.width_cm / PROFILE_STEP_CM) + 1
    stripes = _band_noise(rng, n, PROFILE_STEP_CM, (0.5, 5.0))
    irregular = _irregularity(rng, n, PROFILE_STEP_CM, bolt.density_v_threads_per_cm)
    relative = np.clip(1.0 + bolt.stripe_std * stripes + bolt.irregularity_v * irregular, 0.5, 1.5)
    return _Profile.integrate(0.0, PROFILE_STEP_CM, bolt.density_v_threads_per_cm * relative, 0.0)


# ------------------------------------------------------------------------------------------------ spec


@dataclass(frozen=True)
class CanvasSpec:
    """A whole radiograph to render. Positions are in cm; x from the left, y from the top.

    The image is ``width_cm`` x ``height_cm``; the canvas fills it but for ``margin_cm`` on each side. Canvas
    position ``x`` (cm from the canvas' left edge) lies at ``bolt_offset_cm + x`` across the bolt, or at
    ``bolt_offset_cm + canvas width - x`` when ``reversed``. Left of ``seam_cm`` (cm from the image's left
    edge) is that cloth; right of it another piece of the same bolt (another offset, drawn from ``seed``).
    ``None`` for ``bolt`` / ``bolt_offset_cm`` / ``imaging`` draws them from ``seed``.
    """

    width_cm: float = 24.0
    height_cm: float = 18.0
    px_per_cm: float = 100.0
    seed: int = 0
    bolt: Bolt | None = None
    bolt_offset_cm: float | None = None
    reversed: bool = False
    seam_cm: float | None = None
    margin_cm: float = 0.5
    cusping: bool = True
    nails: bool = True
    stretcher_bars: bool = True
    paint: bool = True
    #: Amplitude of the smooth displacement of the threads, as a fraction of the spacing.
    waviness: float = 0.08
    #: Each family is tilted uniformly within +-this angle.
    max_angle_deg: float = 0.5
    bit_depth: int = 8
    imaging: ImagingParams | None = None

    def __post_init__(self) -> None:
        for name in ("width_cm", "height_cm"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and 2.0 <= value <= 400.0):
                raise ValueError(f"CanvasSpec.{name} must be in [2, 400] cm, got {value!r}")
        if not (isinstance(self.px_per_cm, int | float) and math.isfinite(self.px_per_cm) and self.px_per_cm >= 20):
            raise ValueError(
                f"CanvasSpec.px_per_cm must be a finite number >= 20 (threads need pixels), got {self.px_per_cm!r}"
            )
        if self.shape_px[0] * self.shape_px[1] > MAX_PIXELS:
            raise ValueError(
                f"CanvasSpec: {self.shape_px[1]} x {self.shape_px[0]} px exceeds {MAX_PIXELS} pixels; "
                "lower px_per_cm or the size"
            )
        if not (isinstance(self.seed, int) and self.seed >= 0):
            raise ValueError(f"CanvasSpec.seed must be a non-negative integer, got {self.seed!r}")
        if not (math.isfinite(self.margin_cm) and 0.0 <= self.margin_cm <= min(self.width_cm, self.height_cm) / 4):
            raise ValueError(
                f"CanvasSpec.margin_cm must be in [0, a quarter of the smaller side], got {self.margin_cm!r}"
            )
        if self.bolt is not None and not isinstance(self.bolt, Bolt):
            raise ValueError(f"CanvasSpec.bolt must be a Bolt or None, got {type(self.bolt).__name__}")
        canvas_width = self.width_cm - 2 * self.margin_cm
        bolt_width = self.bolt.width_cm if self.bolt is not None else DEFAULT_BOLT_WIDTH_CM
        if self.bolt_offset_cm is not None:
            low, high = BOLT_EDGE_PAD_CM, bolt_width - BOLT_EDGE_PAD_CM - canvas_width
            if not (math.isfinite(self.bolt_offset_cm) and low <= self.bolt_offset_cm <= high):
                raise ValueError(
                    f"CanvasSpec.bolt_offset_cm must put the {canvas_width:g} cm wide canvas inside the "
                    f"{bolt_width:g} cm bolt, in [{low:g}, {high:g}], got {self.bolt_offset_cm!r}"
                )
        elif canvas_width > bolt_width - 2 * BOLT_EDGE_PAD_CM:
            raise ValueError(f"CanvasSpec: a {canvas_width:g} cm wide canvas does not fit a {bolt_width:g} cm bolt")
        if self.seam_cm is not None:
            low, high = self.margin_cm + 1.0, self.width_cm - self.margin_cm - 1.0
            if not (math.isfinite(self.seam_cm) and low <= self.seam_cm <= high):
                raise ValueError(
                    f"CanvasSpec.seam_cm must lie on the canvas at least 1 cm from its edges, in [{low:g}, {high:g}], "
                    f"got {self.seam_cm!r}"
                )
        if not 0.0 <= self.waviness <= 0.5:
            raise ValueError(
                f"CanvasSpec.waviness must be in [0, 0.5] (fraction of the spacing), got {self.waviness!r}"
            )
        if not 0.0 <= self.max_angle_deg <= 5.0:
            raise ValueError(f"CanvasSpec.max_angle_deg must be in [0, 5], got {self.max_angle_deg!r}")
        if self.bit_depth not in (8, 16):
            raise ValueError(f"CanvasSpec.bit_depth must be 8 or 16, got {self.bit_depth!r}")
        if self.imaging is not None and self.imaging.bit_depth != self.bit_depth:
            raise ValueError(
                f"CanvasSpec.imaging.bit_depth ({self.imaging.bit_depth}) must equal bit_depth ({self.bit_depth})"
            )

    @property
    def shape_px(self) -> tuple[int, int]:
        """(rows, columns) of the image."""
        return round(self.height_cm * self.px_per_cm), round(self.width_cm * self.px_per_cm)

    @property
    def margin_px(self) -> int:
        return round(self.margin_cm * self.px_per_cm)

    def to_json(self) -> str:
        """The spec as JSON (nested Bolt and ImagingParams as objects)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


DEFAULT_CANVAS = CanvasSpec(seam_cm=15.5)


@dataclass(frozen=True, eq=False)
class WholeCanvas:
    """A rendered radiograph and its exact per-pixel truth. ``eq=False``: compare arrays explicitly."""

    #: uint8 or uint16, rows x columns; bright = more attenuation.
    image: np.ndarray
    #: float32 threads/cm of the vertical (warp) family per pixel; NaN outside the canvas.
    density_v: np.ndarray
    #: float32 threads/cm of the horizontal (weft) family per pixel; NaN outside the canvas.
    density_h: np.ndarray
    px_per_cm: float
    spec: CanvasSpec
    bolt: Bolt
    #: The canvas' pixels: rows [top, bottom), columns [left, right).
    canvas_box_px: tuple[int, int, int, int]
    #: First column right of the seam, or None.
    seam_x_px: int | None
    #: Per column, the bolt position (cm) of the warp at the canvas' mid-height before tilt and waviness;
    #: NaN in the margin. Right of a seam it is the other piece's position.
    bolt_x_cm: np.ndarray
    #: With ``render_canvas(..., with_phases=True)``: float32 phases (threads) of each family, NaN outside
    #: the canvas; a piece right of a seam has its own phase.
    phase_v: np.ndarray | None = None
    phase_h: np.ndarray | None = None

    @property
    def canvas_mask(self) -> np.ndarray:
        return np.isfinite(self.density_v)


# ---------------------------------------------------------------------------------------------- render


@dataclass(frozen=True)
class _Piece:
    """One piece of cloth: columns [start, stop) of the canvas, its warp along the bolt and its weft."""

    start_px: int
    stop_px: int
    warp: _Profile  # indexed by bolt position, cm
    warp_shift: int
    bolt_origin_cm: float  # bolt position at the piece's column origin_px
    origin_px: float  # canvas x (px) where the piece's bolt mapping starts
    direction: float  # +1: bolt x grows with canvas x; -1: reversed
    weft: _Profile  # indexed by canvas y, cm
    warp_threads: tuple[np.ndarray, np.ndarray]  # widths, thicknesses of threads -1, 0, 1, ...
    weft_threads: tuple[np.ndarray, np.ndarray]


def render_canvas(spec: CanvasSpec, *, with_phases: bool = False) -> WholeCanvas:
    """Render ``spec``: the same spec gives identical arrays.

    ``with_phases`` also keeps each family's phase (threads; centre lines at integers): for checking the
    truth, or drawing centre lines.
    """
    streams = np.random.SeedSequence([spec.seed, 0xCA9]).spawn(8)
    bolt_rng, layout_rng, weft_rng, wave_rng, edge_rng, paint_rng, imaging_rng, cloth_rng = (
        np.random.default_rng(s) for s in streams
    )
    bolt = spec.bolt if spec.bolt is not None else Bolt.random(bolt_rng)
    rows, columns = spec.shape_px
    ppc = float(spec.px_per_cm)
    margin = spec.margin_px
    top, bottom, left, right = margin, rows - margin, margin, columns - margin
    height_px, width_px = bottom - top, right - left

    pieces = _pieces(spec, bolt, layout_rng, weft_rng, cloth_rng, (height_px, width_px))
    angle_v, angle_h = np.deg2rad(layout_rng.uniform(-spec.max_angle_deg, spec.max_angle_deg, size=2))
    spacing_v_px = ppc / bolt.density_v_threads_per_cm
    spacing_h_px = ppc / bolt.density_h_threads_per_cm
    # Smooth displacement (px) of each family: thread-scale waviness plus a slow bow over a few cm.
    shape = (height_px, width_px)
    displacement_v = (
        spec.waviness
        * spacing_v_px
        * (
            _smooth_field(wave_rng, shape, correlation_px=2.5 * spacing_h_px)
            + 2.0 * _smooth_field(wave_rng, shape, correlation_px=3.0 * ppc)
        )
    )
    displacement_h = (
        spec.waviness
        * spacing_h_px
        * (
            _smooth_field(wave_rng, shape, correlation_px=2.5 * spacing_v_px)
            + 2.0 * _smooth_field(wave_rng, shape, correlation_px=3.0 * ppc)
        )
    )
    nails: list[tuple[float, float]] = []
    if spec.cusping:
        nails = _cusping(edge_rng, displacement_v, displacement_h, ppc)
    grad_v = _gradient_norm(displacement_v, (math.cos(angle_v), -math.sin(angle_v)))
    grad_h = _gradient_norm(displacement_h, (math.sin(angle_h), math.cos(angle_h)))

    opacity = float(cloth_rng.uniform(0.6, 1.4))
    weave_amplitude = float(cloth_rng.uniform(0.2, 0.6))
    attenuation = np.zeros((rows, columns), np.float32)
    density_v = np.full((rows, columns), np.nan, np.float32)
    density_h = np.full((rows, columns), np.nan, np.float32)
    phase_v = np.full((rows, columns), np.nan, np.float32) if with_phases else None
    phase_h = np.full((rows, columns), np.nan, np.float32) if with_phases else None
    for row0 in range(0, height_px, STRIP_ROWS):
        row1 = min(height_px, row0 + STRIP_ROWS)
        y = (np.arange(row0, row1, dtype=np.float32) + np.float32(0.5))[:, None]
        for piece in pieces:
            cols = slice(piece.start_px, piece.stop_px)
            x = (np.arange(piece.start_px, piece.stop_px, dtype=np.float32) + np.float32(0.5))[None, :]
            u_v = (
                x * np.float32(math.cos(angle_v)) - y * np.float32(math.sin(angle_v)) + displacement_v[row0:row1, cols]
            )
            u_h = (
                y * np.float32(math.cos(angle_h)) + x * np.float32(math.sin(angle_h)) + displacement_h[row0:row1, cols]
            )
            bolt_x = np.float32(piece.bolt_origin_cm) + np.float32(piece.direction / ppc) * (
                u_v - np.float32(piece.origin_px)
            )
            warp = _family(piece.warp, bolt_x, grad_v[row0:row1, cols], ppc)
            weft = _family(piece.weft, u_h * np.float32(1.0 / ppc), grad_h[row0:row1, cols], ppc)
            heights = (
                _thread_height(warp, weft, *piece.warp_threads, -1, weave_amplitude, 1.0),
                _thread_height(weft, warp, *piece.weft_threads, -1, weave_amplitude, -1.0),
            )
            ground = _ground_from_heights(*heights, weave_amplitude)
            out_rows, out_cols = slice(top + row0, top + row1), slice(left + piece.start_px, left + piece.stop_px)
            attenuation[out_rows, out_cols] = np.float32(opacity) * (np.float32(CLOTH_ATTENUATION) + ground)
            density_v[out_rows, out_cols] = warp.frequency * np.float32(ppc)
            density_h[out_rows, out_cols] = weft.frequency * np.float32(ppc)
            if phase_v is not None and phase_h is not None:
                phase_v[out_rows, out_cols] = warp.phase
                phase_h[out_rows, out_cols] = weft.phase
    del displacement_v, displacement_h, grad_v, grad_h

    canvas_view = attenuation[top:bottom, left:right]
    seam_x_px = None
    if len(pieces) > 1:
        seam_x_px = left + pieces[1].start_px
        _seam(canvas_view, pieces[1].start_px, ppc, opacity)
    if spec.stretcher_bars:
        canvas_view += _stretcher_bars(edge_rng, canvas_view.shape, ppc)
    if spec.paint:
        canvas_view += _canvas_paint(paint_rng, canvas_view.shape, ppc)
    if spec.nails:
        for centre in nails:
            _add_nail(edge_rng, canvas_view, centre, ppc)
    imaging = spec.imaging if spec.imaging is not None else ImagingParams.random(imaging_rng, bit_depth=spec.bit_depth)
    shown = _exposure(imaging_rng, attenuation, imaging)
    # The window from the canvas only (the blank margin would set the black point); a subsample is enough.
    low, high = _window(shown[top:bottom:3, left:right:3], imaging)
    image = _quantise(shown, low, high, imaging)

    bolt_x_cm = np.full(columns, np.nan)
    for piece in pieces:
        x = np.arange(piece.start_px, piece.stop_px) + 0.5
        shifted = x * math.cos(angle_v) - height_px / 2 * math.sin(angle_v)  # the warp at mid-height
        bolt_x_cm[left + piece.start_px : left + piece.stop_px] = (
            piece.bolt_origin_cm + piece.direction * (shifted - piece.origin_px) / ppc
        )
    return WholeCanvas(
        image=image,
        density_v=density_v,
        density_h=density_h,
        px_per_cm=ppc,
        spec=spec,
        bolt=bolt,
        canvas_box_px=(top, bottom, left, right),
        seam_x_px=seam_x_px,
        bolt_x_cm=bolt_x_cm,
        phase_v=phase_v,
        phase_h=phase_h,
    )


def _pieces(
    spec: CanvasSpec,
    bolt: Bolt,
    layout_rng: np.random.Generator,
    weft_rng: np.random.Generator,
    cloth_rng: np.random.Generator,
    shape: tuple[int, int],
) -> list[_Piece]:
    """The canvas' pieces of cloth: one, or two either side of the seam."""
    width_px = shape[1]
    ppc = float(spec.px_per_cm)
    canvas_width_cm = width_px / ppc
    bounds = [0, width_px]
    if spec.seam_cm is not None:
        bounds.insert(1, round(spec.seam_cm * ppc) - spec.margin_px)
    duty_v, duty_h = (float(d) for d in cloth_rng.uniform(0.5, 0.85, size=2))
    jitter = float(cloth_rng.uniform(0.02, 0.08))
    pieces = []
    for number, (start, stop) in enumerate(itertools.pairwise(bounds)):
        piece_width_cm = (stop - start) / ppc
        span = (BOLT_EDGE_PAD_CM, bolt.width_cm - BOLT_EDGE_PAD_CM - piece_width_cm)
        drawn_offset = float(layout_rng.uniform(*span))
        if number == 0:
            offset = spec.bolt_offset_cm if spec.bolt_offset_cm is not None else drawn_offset
            direction = -1.0 if spec.reversed else 1.0
            # The spec's offset is the bolt position of the canvas' left edge (or of its right edge, reversed).
            bolt_origin = offset + (canvas_width_cm if spec.reversed else 0.0)
        else:
            direction = float(layout_rng.choice([-1.0, 1.0]))
            bolt_origin = drawn_offset + (piece_width_cm if direction < 0 else 0.0)
        covered = sorted((bolt_origin, bolt_origin + direction * piece_width_cm))
        warp, warp_shift = _warp_grid(bolt).window(covered[0] - BOLT_EDGE_PAD_CM, covered[1] + BOLT_EDGE_PAD_CM)
        weft = _weft_profile(weft_rng, bolt, spec.height_cm)
        pieces.append(
            _Piece(
                start_px=start,
                stop_px=stop,
                warp=warp,
                warp_shift=warp_shift,
                bolt_origin_cm=bolt_origin,
                origin_px=float(start),
                direction=direction,
                weft=weft,
                warp_threads=_threads(cloth_rng, warp, duty_v, jitter),
                weft_threads=_threads(cloth_rng, weft, duty_h, jitter),
            )
        )
    return pieces


def _threads(rng: np.random.Generator, profile: _Profile, duty: float, jitter: float) -> tuple[np.ndarray, np.ndarray]:
    """Relative widths and yarn thicknesses of the threads -1, 0, 1, ... of ``profile`` (-1 first)."""
    n_threads = math.ceil(float(profile.phase[-1])) + 3
    widths = np.clip(duty + jitter * rng.standard_normal(n_threads), 0.2, 0.95)
    thickness = np.clip(1.0 + 0.1 * rng.standard_normal(n_threads), 0.7, 1.3)
    return widths, thickness


def _weft_profile(rng: np.random.Generator, bolt: Bolt, height_cm: float) -> _Profile:
    """The weft along the canvas' height: smooth beat-up variation (1-8 cm) plus irregularity."""
    start = -BOLT_EDGE_PAD_CM
    n = math.ceil((height_cm + 2 * BOLT_EDGE_PAD_CM) / PROFILE_STEP_CM) + 1
    beat_up = _band_noise(rng, n, PROFILE_STEP_CM, (1.0, 8.0))
    irregular = _irregularity(rng, n, PROFILE_STEP_CM, bolt.density_h_threads_per_cm)
    relative = np.clip(1.0 + 0.03 * beat_up + bolt.irregularity_h * irregular, 0.5, 1.5)
    return _Profile.integrate(start, PROFILE_STEP_CM, bolt.density_h_threads_per_cm * relative, rng.uniform())


def _family(profile: _Profile, position_cm: np.ndarray, gradient_norm: np.ndarray, px_per_cm: float) -> _Family:
    """A family on a strip; ``frequency`` is |grad phase| in threads per pixel (exact, module docstring)."""
    phase, frequency_per_cm = profile.evaluate(position_cm)
    index = np.floor(phase + np.float32(0.5))
    return _Family(
        phase=phase,
        frequency=frequency_per_cm * gradient_norm * np.float32(1.0 / px_per_cm),
        index=index.astype(np.int32),
        offset=(phase - index).astype(np.float32),
    )


def _gradient_norm(displacement: np.ndarray, grad_u: tuple[float, float]) -> np.ndarray:
    """|grad (u + displacement)| for the undisplaced coordinate's gradient ``grad_u`` (central differences)."""
    d_dx = cv2.Sobel(displacement, cv2.CV_32F, 1, 0, ksize=1, borderType=cv2.BORDER_REPLICATE)
    grad_x = np.float32(grad_u[0]) + np.float32(0.5) * d_dx
    del d_dx
    d_dy = cv2.Sobel(displacement, cv2.CV_32F, 0, 1, ksize=1, borderType=cv2.BORDER_REPLICATE)
    grad_y = np.float32(grad_u[1]) + np.float32(0.5) * d_dy
    del d_dy
    norm: np.ndarray = np.sqrt(grad_x * grad_x + grad_y * grad_y)
    return norm


def _cusping(
    rng: np.random.Generator, displacement_v: np.ndarray, displacement_h: np.ndarray, px_per_cm: float
) -> list[tuple[float, float]]:
    """Add the tacking edges' cusping to the displacements (in place); return the nails (row, column).

    Along each edge nails sit 3-6 cm apart; threads parallel to the edge are drawn towards it most at the
    nails (garlands), threads running into the edge fan towards the nails; both decay into the canvas over
    a few mm to ~2 cm, as :func:`.synthetic._cusping` but along whole edges.
    """
    rows, columns = displacement_v.shape
    nails: list[tuple[float, float]] = []
    for side in ("left", "right", "top", "bottom"):
        vertical_edge = side in ("left", "right")
        length = rows if vertical_edge else columns
        depth = columns if vertical_edge else rows
        spacing_px = rng.uniform(3.0, 6.0) * px_per_cm
        count = math.ceil(length / spacing_px) + 3
        positions = rng.uniform(-1.0, 0.0) * spacing_px + spacing_px * np.arange(count)
        positions += rng.uniform(-0.1, 0.1, size=count) * spacing_px
        decay_px = rng.uniform(0.2, 0.6) * px_per_cm
        amplitude_px = rng.uniform(0.04, 0.1) * decay_px
        along = np.arange(length) + 0.5
        cycle = np.interp(along, positions, np.arange(count))  # 0, 1, 2, ... at the nails
        garland = (0.5 + 0.5 * np.cos(2 * np.pi * cycle)).astype(np.float32)
        fan = (0.5 * np.sin(2 * np.pi * cycle)).astype(np.float32)
        reach = min(depth, math.ceil(8.0 * decay_px))
        envelope = (amplitude_px * np.exp(-(np.arange(reach) + 0.5) / decay_px)).astype(np.float32)
        toward_edge = np.float32(-1.0 if side in ("left", "top") else 1.0)
        if side == "right" or side == "bottom":
            envelope = envelope[::-1]
        near = slice(0, reach) if side in ("left", "top") else slice(depth - reach, depth)
        if vertical_edge:  # the warp runs parallel to the edge, the weft into it
            displacement_v[:, near] += toward_edge * garland[:, None] * envelope[None, :]
            displacement_h[:, near] += fan[:, None] * envelope[None, :]
        else:
            displacement_h[near, :] += toward_edge * envelope[:, None] * garland[None, :]
            displacement_v[near, :] += envelope[:, None] * fan[None, :]
        inset = rng.uniform(0.1, 0.3, size=count) * px_per_cm
        for position, distance in zip(positions, inset, strict=True):
            if not 0 <= position < length:
                continue
            across = distance if side in ("left", "top") else depth - 1 - distance
            nails.append((float(position), float(across)) if vertical_edge else (float(across), float(position)))
    return nails


def _add_nail(rng: np.random.Generator, attenuation: np.ndarray, centre: tuple[float, float], px_per_cm: float) -> None:
    """Add a nail head at ``centre`` (row, column), drawn in a small window around it."""
    half = math.ceil(0.5 * px_per_cm)
    row, column = round(centre[0]), round(centre[1])
    layer = _nail(rng, (2 * half + 1, 2 * half + 1), (centre[0] - row + half, centre[1] - column + half), px_per_cm)
    r0, c0 = row - half, column - half
    rows, columns = attenuation.shape
    clip_r0, clip_c0 = max(r0, 0), max(c0, 0)
    clip_r1, clip_c1 = min(r0 + layer.shape[0], rows), min(c0 + layer.shape[1], columns)
    attenuation[clip_r0:clip_r1, clip_c0:clip_c1] += layer[clip_r0 - r0 : clip_r1 - r0, clip_c0 - c0 : clip_c1 - c0]


def _seam(attenuation: np.ndarray, column: int, px_per_cm: float, opacity: float) -> None:
    """The overlapped band of a seam: two layers of cloth and ground, brighter, with stitches."""
    half = SEAM_WIDTH_CM / 2 * px_per_cm
    soft = 0.03 * px_per_cm
    c0, c1 = (
        max(0, math.floor(column - half - 4 * soft)),
        min(attenuation.shape[1], math.ceil(column + half + 4 * soft)),
    )
    x = np.arange(c0, c1) + 0.5 - column
    band = (0.25 * (1 + np.tanh((x + half) / soft)) * (1 + np.tanh((half - x) / soft))).astype(np.float32)
    rows = np.arange(attenuation.shape[0])
    stitches = 0.5 + 0.5 * np.cos(2 * np.pi * rows / (0.35 * px_per_cm))  # thread of the seam
    stitch_line = np.exp(-((x / (0.06 * px_per_cm)) ** 2))
    extra = np.float32(0.25 * opacity) * band[None, :] + np.float32(0.15 * opacity) * (
        stitches[:, None] * stitch_line[None, :]
    ).astype(np.float32)
    # The doubled cloth repeats the weave's texture: scale the band by the local ground.
    attenuation[:, c0:c1] = attenuation[:, c0:c1] * (1 + np.float32(0.5) * band[None, :]) + extra


def _stretcher_bars(rng: np.random.Generator, shape: tuple[int, int], px_per_cm: float) -> np.ndarray:
    """Four wooden bars 4-6 cm wide behind the canvas' edges, mitred at the corners (the max of two bars)."""
    rows, columns = shape
    bars = np.zeros(shape, np.float32)
    for side in ("left", "right", "top", "bottom"):
        vertical = side in ("left", "right")
        depth = columns if vertical else rows
        length = rows if vertical else columns
        bar_px = min(depth / 2, rng.uniform(4.0, 6.0) * px_per_cm)
        edge_width_px = rng.uniform(0.03, 0.12) * px_per_cm
        grain_period_px = rng.uniform(0.1, 0.4) * px_per_cm
        strength = rng.uniform(0.2, 0.5)
        reach = min(depth, math.ceil(bar_px + 4 * edge_width_px))
        across = (np.arange(reach, dtype=np.float32) + np.float32(0.5))[:, None]  # from the canvas edge
        along = (np.arange(length, dtype=np.float32) + np.float32(rng.uniform(0, 1000)))[None, :]
        band = 0.5 * (1.0 + np.tanh((bar_px - across) / edge_width_px))
        layer = _wood(band, across, along, grain_period_px, strength, px_per_cm)  # (reach, length)
        if side in ("right", "bottom"):
            layer = layer[::-1]
        if vertical:
            layer = layer.T
        region = (
            (slice(None), slice(0, reach))
            if side == "left"
            else (slice(None), slice(depth - reach, depth))
            if side == "right"
            else (slice(0, reach), slice(None))
            if side == "top"
            else (slice(depth - reach, depth), slice(None))
        )
        np.maximum(bars[region], layer, out=bars[region])
    return bars


def _canvas_paint(rng: np.random.Generator, shape: tuple[int, int], px_per_cm: float) -> np.ndarray:
    """Paint at canvas scale: a 1/f^2 layer (structure above ~3 mm) plus bright brush strokes of a few cm."""
    rows, columns = shape
    coarse_step_cm = 0.1
    coarse = (max(8, round(rows / px_per_cm / coarse_step_cm)), max(8, round(columns / px_per_cm / coarse_step_cm)))
    white = rng.standard_normal(coarse)
    ky = np.fft.fftfreq(coarse[0], d=coarse_step_cm)[:, None]
    kx = np.fft.rfftfreq(coarse[1], d=coarse_step_cm)[None, :]
    radius = np.hypot(ky, kx)  # cycles/cm
    # Amplitude 1/k, rolled off above ~3 cycles/cm: the paint stays below the canvas band (8-20 /cm).
    gain = np.where(radius > 0, 1.0 / np.maximum(radius, 0.02), 0.0) * np.exp(-((radius / 3.0) ** 2))
    field = np.fft.irfft2(np.fft.rfft2(white) * gain, s=coarse).astype(np.float32)
    paint: np.ndarray = cv2.resize(field, (columns, rows), interpolation=cv2.INTER_CUBIC)
    std = float(rng.uniform(0.04, 0.15))
    paint *= np.float32(std / max(float(paint.std()), 1e-12))
    paint += np.float32(2.0 * std)
    strokes = np.zeros(shape, np.float32)
    area_cm2 = rows * columns / px_per_cm**2
    for _ in range(int(rng.poisson(area_cm2 / 25.0))):
        start = rng.uniform(0, 1, size=2) * (columns, rows)
        direction = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(1.0, 8.0) * px_per_cm
        bend = rng.normal(0.0, 0.4)
        t = np.linspace(0.0, 1.0, 16)[:, None]
        angles = direction + bend * t
        points = start + length * t * np.hstack((np.cos(angles), np.sin(angles)))
        cv2.polylines(
            strokes,
            [np.round(points).astype(np.int32)],
            isClosed=False,
            color=float(rng.uniform(0.1, 0.4)),
            thickness=max(1, round(rng.uniform(0.1, 0.6) * px_per_cm)),
            lineType=cv2.LINE_AA,
        )
    paint += cv2.GaussianBlur(strokes, (0, 0), sigmaX=0.04 * px_per_cm)
    return paint


# ---------------------------------------------------------------------------------------------- pairs


def same_bolt_pair(seed: int, **spec_overrides: Any) -> tuple[CanvasSpec, CanvasSpec]:
    """Two canvases cut from one bolt, overlapping by >= 8 cm across it (the second sometimes reversed),
    with different seeds (weft, paint, imaging). ``spec_overrides`` go to both specs (e.g. a small size)."""
    bolt, first, second = _pair_layout(seed, spec_overrides)
    return dataclasses.replace(first, bolt=bolt), dataclasses.replace(second, bolt=bolt)


def different_bolt_pair(seed: int, **spec_overrides: Any) -> tuple[CanvasSpec, CanvasSpec]:
    """As :func:`same_bolt_pair` (same layout), but from two independent bolts of the same nominal densities."""
    bolt, first, second = _pair_layout(seed, spec_overrides)
    other = dataclasses.replace(bolt, seed=bolt.seed + 1)
    return dataclasses.replace(first, bolt=bolt), dataclasses.replace(second, bolt=other)


MIN_PAIR_OVERLAP_CM = 8.0


def _pair_layout(seed: int, overrides: dict[str, Any]) -> tuple[Bolt, CanvasSpec, CanvasSpec]:
    chosen = sorted({"bolt", "bolt_offset_cm", "reversed", "seed"} & overrides.keys())
    if chosen:
        raise ValueError(f"a pair chooses {', '.join(chosen)} itself; do not override it")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xB017]))
    bolt = Bolt.random(rng)
    template = CanvasSpec(**overrides)
    canvas_width = template.width_cm - 2 * template.margin_cm
    if canvas_width < MIN_PAIR_OVERLAP_CM:
        raise ValueError(
            f"a pair needs canvases at least {MIN_PAIR_OVERLAP_CM:g} cm wide inside the margins, "
            f"got {canvas_width:g} cm"
        )
    low, high = BOLT_EDGE_PAD_CM, bolt.width_cm - BOLT_EDGE_PAD_CM - canvas_width
    first_offset = float(rng.uniform(low, high))
    slack = canvas_width - MIN_PAIR_OVERLAP_CM
    second_offset = float(np.clip(first_offset + rng.uniform(-slack, slack), low, high))
    seeds = rng.choice(2**31, size=2, replace=False)
    first = dataclasses.replace(template, seed=int(seeds[0]), bolt_offset_cm=first_offset)
    second = dataclasses.replace(
        template, seed=int(seeds[1]), bolt_offset_cm=second_offset, reversed=bool(rng.random() < 0.4)
    )
    return bolt, first, second


# ----------------------------------------------------------------------------------------- the files


def write_canvas(canvas: WholeCanvas, out_dir: Path, name: str = "canvas") -> tuple[Path, Path]:
    """Write ``<name>.png`` (8 bit) or ``<name>.tiff`` (16 bit) and ``<name>_truth.npz``; return both paths.

    Each file is written to a temporary file in ``out_dir`` and renamed into place, so a reader never sees
    half a file.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    image_path = out_dir / (name + (".png" if canvas.image.dtype == np.uint8 else ".tiff"))
    truth_path = out_dir / f"{name}_truth.npz"
    ok, encoded = cv2.imencode(image_path.suffix, canvas.image)
    if not ok:
        raise OSError(f"could not encode {image_path.name} ({canvas.image.dtype}, {canvas.image.shape})")
    _write_atomically(image_path, lambda handle: handle.write(encoded.tobytes()))
    _write_atomically(
        truth_path,
        lambda handle: np.savez_compressed(
            handle,
            density_v=canvas.density_v,
            density_h=canvas.density_h,
            px_per_cm=np.float64(canvas.px_per_cm),
            spec=np.array(canvas.spec.to_json()),
        ),
    )
    return image_path, truth_path


def _write_atomically(path: Path, write: Any) -> None:
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
        os.chmod(temporary, 0o644)  # mkstemp makes it private; the radiograph is ordinary data
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@dataclass(frozen=True, eq=False)
class Truth:
    """A canvas' truth as read back: per-pixel float32 threads/cm, NaN outside the canvas."""

    density_v: np.ndarray
    density_h: np.ndarray
    px_per_cm: float
    #: The spec as written (JSON), for reference.
    spec_json: str = ""


def read_truth(path: Path) -> Truth:
    """Read a ``*_truth.npz`` written by :func:`write_canvas`; ``ValueError`` names the file and what is wrong."""
    path = Path(path)
    expected = f"a truth file from write_canvas (an .npz with {', '.join(TRUTH_KEYS)})"
    if not path.is_file():
        raise ValueError(f"{path}: no such file; expected {expected}")
    # np.load would try anything that is not a zip archive as a pickle (and refuse it with a pickle message).
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a readable .npz (not a zip archive); expected {expected}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in TRUTH_KEYS if key not in archive.files]
            if missing:
                raise ValueError(f"{path}: lacks {', '.join(missing)}; expected {expected}")
            density_v, density_h = archive["density_v"], archive["density_h"]
            px_per_cm, spec_json = float(archive["px_per_cm"]), str(archive["spec"])
    except ValueError:
        raise
    except (OSError, EOFError, zipfile.BadZipFile) as error:  # a damaged archive
        raise ValueError(f"{path}: not a readable .npz ({error}); expected {expected}") from error
    if density_v.ndim != 2 or density_v.shape != density_h.shape:
        raise ValueError(
            f"{path}: density_v {density_v.shape} and density_h {density_h.shape} must be 2-D of one shape"
        )
    if not (math.isfinite(px_per_cm) and px_per_cm > 0):
        raise ValueError(f"{path}: px_per_cm must be a positive number, got {px_per_cm!r}")
    return Truth(
        density_v=density_v.astype(np.float32, copy=False),
        density_h=density_h.astype(np.float32, copy=False),
        px_per_cm=px_per_cm,
        spec_json=spec_json,
    )


# ------------------------------------------------------------------------------------------ the preview


def preview_figure(canvas: WholeCanvas) -> Figure:
    """The radiograph and the two truth maps, with colour bars in threads/cm."""
    from matplotlib.figure import Figure  # keep matplotlib out of the generator's import

    figure = Figure(figsize=(15.0, 4.2), layout="constrained")
    axes = figure.subplots(1, 3)
    rows, columns = canvas.image.shape
    extent = (0.0, columns / canvas.px_per_cm, rows / canvas.px_per_cm, 0.0)
    axes[0].imshow(canvas.image, cmap="gray", extent=extent, interpolation="antialiased")
    axes[0].set_title(f"radiograph ({canvas.image.dtype})")
    finite = canvas.density_v[np.isfinite(canvas.density_v)]
    for ax, field, label in (
        (axes[1], canvas.density_v, "vertical threads (warp)"),
        (axes[2], canvas.density_h, "horizontal threads (weft)"),
    ):
        finite = field[np.isfinite(field)]
        low, high = np.percentile(finite, (1, 99)) if finite.size else (0.0, 1.0)
        shown = ax.imshow(field, cmap="viridis", vmin=low, vmax=high, extent=extent, interpolation="antialiased")
        ax.set_title(f"{label}: mean {float(finite.mean()):.2f} /cm")
        figure.colorbar(shown, ax=ax, label="threads/cm", shrink=0.8)
    for ax in axes:
        ax.set_xlabel("x (cm)")
    axes[0].set_ylabel("y (cm)")
    return figure


# ------------------------------------------------------------------------------------------ the command


def main(argv: Sequence[str] | None = None) -> int:
    defaults = CanvasSpec()
    parser = cli.Parser(
        prog="python -m thread_bench.workloads.thread_density.canvas",
        description="Render a synthetic whole-canvas radiograph and its exact thread-density maps.",
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for the image and the truth")
    parser.add_argument("--seed", type=int, default=DEFAULT_CANVAS.seed)
    parser.add_argument("--width_cm", type=float, default=DEFAULT_CANVAS.width_cm)
    parser.add_argument("--height_cm", type=float, default=DEFAULT_CANVAS.height_cm)
    parser.add_argument("--px_per_cm", type=float, default=DEFAULT_CANVAS.px_per_cm)
    parser.add_argument("--bit_depth", type=int, choices=(8, 16), default=DEFAULT_CANVAS.bit_depth)
    parser.add_argument("--name", default="canvas")
    parser.add_argument("--preview", type=Path, help="also save a figure of the radiograph and its truth here")
    args = parser.parse_args(argv)
    # The default canvas' seam only where it fits: a smaller canvas gets none.
    seam = DEFAULT_CANVAS.seam_cm
    if seam is not None and not defaults.margin_cm + 1.0 <= seam <= args.width_cm - defaults.margin_cm - 1.0:
        seam = None
    try:
        spec = dataclasses.replace(
            DEFAULT_CANVAS,
            seed=args.seed,
            width_cm=args.width_cm,
            height_cm=args.height_cm,
            px_per_cm=args.px_per_cm,
            bit_depth=args.bit_depth,
            seam_cm=seam,
        )
    except ValueError as error:
        parser.error(str(error))
    canvas = render_canvas(spec)
    for path in write_canvas(canvas, args.out, args.name):
        print(path)
    if args.preview is not None:
        import matplotlib

        matplotlib.use("Agg")
        args.preview.parent.mkdir(parents=True, exist_ok=True)
        preview_figure(canvas).savefig(args.preview, dpi=90)
        print(args.preview)
    return 0


if __name__ == "__main__":
    sys.exit(main())
