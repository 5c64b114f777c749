"""Thread counting: spatial counting from centre-line masks, and the spectral (FFT) baseline.

Spatial counting (Delgado et al. 2023a; docs/DESIGN.md §2.3 step 3) works on the labels: the crossing
points of horizontal and vertical thread centre lines form a (distorted) lattice. For every crossing point
the nearest crossing point to its left and right lies on the same horizontal thread, one vertical thread
away; the mean of those distances ``d`` gives the vertical-thread density ``px_per_cm / d``. Above and below
likewise give the horizontal-thread density.

The spectral counter (Johnson et al.) works on the image: a canvas is two nearly orthogonal sinusoids, so
the power spectrum peaks at the thread frequency of each family.

Conventions: arrays are (row, column); *vertical* threads run top to bottom and are counted along a
horizontal line (their density is the regression target); *horizontal* threads are counted along a
vertical line. Densities are in threads per cm.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np
import scipy.fft
import scipy.signal
from scipy.spatial import cKDTree

#: Neighbours queried per crossing point (self included). Enough to reach the left/right neighbours
#: when the horizontal spacing is ~4x the vertical (6 vs 23 threads/cm) and the ~6 points above and
#: below come first, or when a local gap is ~1.4x the spacing and the diagonals come first.
NEIGHBOURS_QUERIED = 13
#: About this many crossing points (a uniform, flip- and rotation-invariant subset) look up their
#: neighbours: the KD-tree query costs ~1 us per point and a 1 cm patch of a dense canvas has ~500
#: crossings, while 128 points give ~250 distances per direction (on the synthetic corpus' 200 px crops:
#: 0.2 % mean, 1.2 % max deviation from querying every point, at ~2/3 of the time).
MAX_QUERIED_POINTS = 128
#: A neighbour counts as "right" if its direction is within this angle of the +x axis (etc.). Narrow
#: enough to exclude diagonal neighbours of a square lattice (45 deg), wide enough for threads tilted by
#: the canvas (+-3 deg) plus the augmentation rotation (<= 6 deg) and waviness.
SECTOR_HALF_ANGLE_DEG = 30.0
#: Neighbour distances outside [low, high] x the median are dropped: a missing crossing point makes the
#: nearest candidate in the sector the one after it (a skipped thread, ~2x the spacing).
DISTANCE_INLIER_RANGE = (0.5, 1.5)
#: Fewer crossing points than this cannot give a spacing in both directions.
MIN_CROSSING_POINTS = 4
#: Fewer neighbour distances per direction than this are too few to average.
MIN_DISTANCES = 2
#: Spectral counter search band, threads/cm (a little wider than the 6-35 of the synthetic canvases).
FFT_BAND_THREADS_PER_CM = (4.0, 40.0)
#: Spectral counter: only peaks within this angle of the family's axis are considered.
FFT_SECTOR_HALF_ANGLE_DEG = 12.0
#: The coarse peak search weights the power by |k|^this: the paint, lead white and illumination background
#: falls roughly as 1/k^2, and 2 flattens it. Measured on the varied corpus (``benchmarks/fft_variants.py``,
#: README): exponent 1 left low-frequency paint winning on 11 % mean error, 2 brought it to 4-7 %, 2.5 and 3 worse.
FFT_WHITENING_EXPONENT = 2.0
#: A second-harmonic check (see ``_prefer_fundamental``): off by default (ratio infinite), because on the varied
#: corpus it moved more right peaks to a wrong half frequency than it rescued (with whitening 2: 4.9 % -> 4.3 %
#: mean error on held-out styles when off). A finite ratio turns it on.
FFT_HARMONIC_SEARCH_BINS = 2
FFT_HARMONIC_RATIO = math.inf
#: The image is zero-padded to at least this many times its size before the transform (finer bins).
FFT_PADDING = 2
#: How the peak's frequency is refined between bins: ``parabolic`` (a parabola through the log power at the
#: peak and its neighbours, exact for a Gaussian peak) or ``centroid`` (the power-weighted mean wave vector of
#: the bins around the peak, ``FFT_CENTROID_BINS`` each way).
FFT_REFINEMENTS = ("parabolic", "centroid")
FFT_WINDOWS = ("hann", "tukey", "none")
FFT_CENTROID_BINS = 2


@dataclass(frozen=True)
class FftSettings:
    """The spectral counter's knobs; the defaults (the module constants) are the counter as the project uses it.
    Other values exist to measure the counter against its variants (``benchmarks/fft_variants.py``)."""

    band_threads_per_cm: tuple[float, float] = FFT_BAND_THREADS_PER_CM
    sector_half_angle_deg: float = FFT_SECTOR_HALF_ANGLE_DEG
    whitening_exponent: float = FFT_WHITENING_EXPONENT
    harmonic_ratio: float = FFT_HARMONIC_RATIO
    harmonic_search_bins: int = FFT_HARMONIC_SEARCH_BINS
    padding: int = FFT_PADDING
    #: ``none`` (the default: every pixel weighs the same, as in the truth, a mean over the window; the mean is
    #: removed first, and the whitening keeps the edges' leakage, which falls as 1/k, from winning), ``hann``
    #: (measured: it weights the window's centre, and doubled the error on the classic corpus, 1.3 % -> 2.6 %)
    #: or ``tukey`` (flat over the middle, cosine tapers over ``tukey_alpha`` of the side in all).
    window: str = "none"
    tukey_alpha: float = 0.25
    refinement: str = FFT_REFINEMENTS[0]

    def __post_init__(self) -> None:
        low, high = self.band_threads_per_cm
        if not 0 < low < high:
            raise ValueError(f"band_threads_per_cm must be (low, high) with 0 < low < high, got {(low, high)}")
        if not 0 < self.sector_half_angle_deg < 45:
            raise ValueError(f"sector_half_angle_deg must be in (0, 45), got {self.sector_half_angle_deg}")
        if self.padding < 1:
            raise ValueError(f"padding must be >= 1, got {self.padding}")
        if self.window not in FFT_WINDOWS:
            raise ValueError(f"window must be one of {FFT_WINDOWS}, got {self.window!r}")
        if not 0 < self.tukey_alpha <= 1:
            raise ValueError(f"tukey_alpha must be in (0, 1], got {self.tukey_alpha}")
        if self.refinement not in FFT_REFINEMENTS:
            raise ValueError(f"refinement must be one of {FFT_REFINEMENTS}, got {self.refinement!r}")


DEFAULT_FFT = FftSettings()


@dataclass(frozen=True)
class ThreadDensity:
    """Thread densities of a patch, threads per cm."""

    #: Horizontal threads per cm, counted along a vertical line.
    horizontal: float
    #: Vertical threads per cm, counted along a horizontal line.
    vertical: float


class CountingError(ValueError):
    """The patch is valid input but cannot be counted (too few crossing points or neighbours).

    The message starts with a short reason, then ``:`` and the details, so that reasons aggregate.
    """


# ------------------------------------------------------------------------------------ input validation


def _as_binary_mask(mask: np.ndarray, name: str) -> np.ndarray:
    """``mask`` as a uint8 0/1 array; accepts bool, {0, 1} and {0, 255} of any integer or float dtype."""
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D mask, got shape {array.shape}")
    if array.dtype == np.bool_:
        return array.view(np.uint8)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"{name} must be a bool or numeric binary mask, got dtype {array.dtype}")
    high = array.max() if array.size else 0
    if high == 0 and not array.min() < 0:
        return np.zeros(array.shape, np.uint8)  # empty; reported by the caller
    if high not in (1, 255):
        raise ValueError(f"{name} must be binary (values {{0, 1}} or {{0, 255}} or bool), found max {high}")
    # One pass: every value must be 0 or the maximum.
    if np.count_nonzero(array) != np.count_nonzero(array == high):
        values = np.unique(array)
        shown = ", ".join(str(v) for v in values[:6]) + (", ..." if values.size > 6 else "")
        raise ValueError(f"{name} must be binary (values {{0, 1}} or {{0, 255}} or bool), found values {shown}")
    return (array != 0).view(np.uint8)


def _check_masks(h_mask: np.ndarray, v_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h = _as_binary_mask(h_mask, "h_mask")
    v = _as_binary_mask(v_mask, "v_mask")
    if h.shape != v.shape:
        raise ValueError(f"h_mask and v_mask must have the same shape, got {h.shape} and {v.shape}")
    for name, mask in (("h_mask", h), ("v_mask", v)):
        if not mask.any():
            raise ValueError(f"{name} is empty (no centre-line pixels set); expected thread centre lines")
    return h, v


def check_px_per_cm(px_per_cm: float) -> float:
    try:
        value = float(px_per_cm)
    except (TypeError, ValueError):
        raise ValueError(f"px_per_cm must be a positive finite number, got {px_per_cm!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"px_per_cm must be a positive finite number, got {px_per_cm!r}")
    return value


# ---------------------------------------------------------------------------------- spatial counting


def crossing_points(h_mask: np.ndarray, v_mask: np.ndarray) -> np.ndarray:
    """Crossing points of the horizontal and vertical centre lines, as (row, col) float centroids.

    Each mask is dilated by one pixel (3x3) before intersecting: two thin lines warped with
    nearest-neighbour interpolation can pass through each other diagonally without sharing a pixel, and a
    crossing can break into pieces; dilation makes each crossing one 8-connected blob. Blobs touching the
    image border are dropped: their centroids are biased towards the inside.

    Returns:
        (K, 2) float64 array of centroids, rows then columns; K may be 0.

    Raises:
        ValueError: masks not 2-D, not binary, of different shapes, or empty.
    """
    h, v = _check_masks(h_mask, v_mask)
    return _crossing_points(h, v)


_DILATION_KERNEL = np.ones((3, 3), np.uint8)


def _crossing_points(h: np.ndarray, v: np.ndarray) -> np.ndarray:
    both = np.bitwise_and(cv2.dilate(h, _DILATION_KERNEL), cv2.dilate(v, _DILATION_KERNEL))
    n_labels, labels = cv2.connectedComponents(both, connectivity=8, ltype=cv2.CV_32S)
    if n_labels <= 1:
        return np.empty((0, 2), np.float64)
    # Centroids by summing the coordinates of the set pixels per label. About 5x faster than
    # connectedComponentsWithStats, whose statistics pass dominates on these sparse masks.
    width = both.shape[1]
    flat = np.flatnonzero(both.view(np.bool_))
    owner = labels.ravel()[flat]
    # Row of each pixel without integer division (slow in numpy); +0.5 keeps floor() off exact integers.
    rows = np.floor((flat + 0.5) * (1.0 / width))
    n_pixels = np.bincount(owner, minlength=n_labels)
    row_sum = np.bincount(owner, weights=rows, minlength=n_labels)
    col_sum = np.bincount(owner, weights=flat, minlength=n_labels) - width * row_sum  # flat = width*row + col
    keep = n_pixels > 0
    keep[0] = False  # background
    keep[labels[0]] = keep[labels[-1]] = keep[labels[:, 0]] = keep[labels[:, -1]] = False  # cut by the border
    return np.column_stack((row_sum[keep] / n_pixels[keep], col_sum[keep] / n_pixels[keep]))


def count_threads(h_mask: np.ndarray, v_mask: np.ndarray, px_per_cm: float) -> ThreadDensity:
    """Thread densities by spatial counting of the crossing points of the centre-line masks.

    For each crossing point (:func:`crossing_points`) its ``NEIGHBOURS_QUERIED - 1`` nearest others are
    found with a KD-tree; the nearest one whose direction lies within ``SECTOR_HALF_ANGLE_DEG`` of the
    +x, -x, +y or -y axis is its right, left, lower or upper neighbour. Left/right distances are pooled,
    distances outside ``DISTANCE_INLIER_RANGE`` x their median are dropped (a missing crossing point makes
    the sector's nearest candidate skip a thread), and the mean ``d`` of the rest gives
    ``vertical = px_per_cm / d``; above/below gives ``horizontal`` the same way. Above
    ``MAX_QUERIED_POINTS`` crossing points only a uniform subset of them looks up its neighbours (for
    speed); the subset is invariant to flips and quarter turns, so the result is too.

    Args:
        h_mask, v_mask: binary centre-line masks of the horizontal and vertical threads (bool, {0, 1} or
            {0, 255}), same 2-D shape.
        px_per_cm: resolution of the masks.

    Raises:
        ValueError: invalid input (see :func:`crossing_points`; ``px_per_cm`` not positive and finite).
        CountingError: too few crossing points, or too few neighbours in a direction, to count.
    """
    resolution = check_px_per_cm(px_per_cm)
    h, v = _check_masks(h_mask, v_mask)
    points = _crossing_points(h, v)
    if len(points) < MIN_CROSSING_POINTS:
        raise CountingError(
            f"too few crossing points: found {len(points)}, need at least {MIN_CROSSING_POINTS} (mask shape {h.shape})"
        )
    spacing_x_px, spacing_y_px = _lattice_spacings(points, h.shape)
    return ThreadDensity(horizontal=resolution / spacing_y_px, vertical=resolution / spacing_x_px)


def _query_subset(points: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A spatially uniform subset of about ``MAX_QUERIED_POINTS`` points that flips and 90-degree rotations
    map onto itself (so the augmentation's labels do not change with them).

    A point is kept when its squared distance from the image centre, modulo ``_ANNULUS_AREA_PX2``, falls in
    the first ``MAX_QUERIED_POINTS / len(points)`` of the period: thin annuli of equal area, hence uniform
    in space, and depending on nothing but the distance from the centre.
    """
    centre = (np.asarray(shape[:2], np.float64) - 1.0) / 2.0
    squared_radius = ((points - centre) ** 2).sum(axis=1)
    phase = np.modf(squared_radius / _ANNULUS_AREA_PX2)[0]
    return np.flatnonzero(phase < MAX_QUERIED_POINTS / len(points))


#: Much smaller than the area per crossing point (>= 75 px^2 at 23 threads/cm and 200 px/cm), so the
#: annuli cut through every cell of the lattice.
_ANNULUS_AREA_PX2 = 16.0


def _lattice_spacings(points: np.ndarray, shape: tuple[int, ...]) -> tuple[float, float]:
    """Robust mean distance to the left/right and to the upper/lower neighbours, pixels."""
    # An unbalanced, non-compact tree builds ~2x faster and queries as fast at these sizes.
    tree = cKDTree(points, balanced_tree=False, compact_nodes=False)
    queried = points if len(points) <= MAX_QUERIED_POINTS else points[_query_subset(points, shape)]
    distances, indices = tree.query(queried, k=min(NEIGHBOURS_QUERIED, len(points)))
    # Column 0 is the point itself; the rest come sorted by distance.
    distances, indices = distances[:, 1:], indices[:, 1:]
    d_row = points[:, 0][indices] - queried[:, 0:1]
    d_col = points[:, 1][indices] - queried[:, 1:2]
    tan_limit = math.tan(math.radians(SECTOR_HALF_ANGLE_DEG))
    abs_row, abs_col = np.abs(d_row), np.abs(d_col)
    # Sector of each candidate: 0 right, 1 left, 2 below, 3 above, 4 none (diagonal, or the point itself).
    sector = np.where(
        abs_row <= tan_limit * abs_col,
        (d_col < 0).view(np.int8),
        np.where(abs_col <= tan_limit * abs_row, 2 + (d_row < 0).view(np.int8), 4),
    )
    sector[(abs_row == 0) & (abs_col == 0)] = 4
    # Nearest candidate per sector: write the columns from the farthest to the nearest, the last write wins.
    nearest = np.full((len(queried), 5), np.inf)
    rows = np.arange(len(queried))
    for column in range(distances.shape[1] - 1, -1, -1):
        nearest[rows, sector[:, column]] = distances[:, column]
    spacings = []
    for columns, direction in (((0, 1), "left/right"), ((2, 3), "above/below")):
        pooled = nearest[:, columns].ravel()
        pooled = pooled[np.isfinite(pooled)]
        if pooled.size < MIN_DISTANCES:
            raise CountingError(
                f"too few {direction} neighbours: found {pooled.size} among {len(points)} crossing points, "
                f"need at least {MIN_DISTANCES}"
            )
        median = float(np.partition(pooled, pooled.size // 2)[pooled.size // 2])
        low, high = DISTANCE_INLIER_RANGE
        inliers = pooled[(pooled >= low * median) & (pooled <= high * median)]
        spacings.append(float(inliers.mean()))  # the median itself is an inlier, so never empty
    return spacings[0], spacings[1]


# -------------------------------------------------------------------------------------- spectral count


@dataclass(frozen=True)
class SpectralCount:
    """What the spectral counter reads from an image: the two families' densities (threads/cm) and angles.

    An angle is the tilt of the family's threads from their nominal direction (vertical threads from the
    vertical, horizontal threads from the horizontal), in degrees, positive clockwise as the image is shown
    (rows down): a vertical thread whose top leans right, a horizontal thread whose right end is lower.
    """

    horizontal: float
    vertical: float
    angle_h_deg: float
    angle_v_deg: float


def fft_count(image: np.ndarray, px_per_cm: float, settings: FftSettings = DEFAULT_FFT) -> ThreadDensity:
    """Thread densities from the peaks of the image's 2-D power spectrum (:func:`fft_measure`)."""
    measured = fft_measure(image, px_per_cm, settings)
    return ThreadDensity(horizontal=measured.horizontal, vertical=measured.vertical)


def fft_measure(image: np.ndarray, px_per_cm: float, settings: FftSettings = DEFAULT_FFT) -> SpectralCount:
    """Thread densities and angles from the peaks of the image's 2-D power spectrum (Johnson et al.).

    The image (mean removed, unwindowed by default, zero-padded to at least twice its size) is Fourier
    transformed; the vertical threads give the strongest peak near the horizontal frequency axis (within
    ``FFT_SECTOR_HALF_ANGLE_DEG``) in the band ``FFT_BAND_THREADS_PER_CM``, the horizontal threads near the
    vertical axis. The coarse peak is found on the spectrum weighted by ``|k|^FFT_WHITENING_EXPONENT``
    (which flattens the low-frequency paint and illumination background), optionally moved to half its
    frequency when it looks like the second harmonic (``_prefer_fundamental``; off by default), then refined on
    the unweighted log-spectrum by fitting a parabola through the peak and its neighbours along each axis.
    :class:`FftSettings` holds every knob; ``benchmarks/fft_variants.py`` measures the variants. A peak at
    offset ``(k_row, k_col)`` bins of an ``N``-point transform is ``sqrt(k_row^2 + k_col^2) * px_per_cm / N``
    threads/cm, i.e. the frequency perpendicular to the threads.

    Args:
        image: 2-D grayscale image of any numeric dtype; at least 16 px on each side.
        px_per_cm: resolution.
        settings: the knobs named above (:class:`FftSettings`; the defaults are the module constants).

    Raises:
        ValueError: image not 2-D, too small, not finite, or constant; ``px_per_cm`` invalid.
        CountingError: no frequency of the band fits in the image.
    """
    resolution = check_px_per_cm(px_per_cm)
    array = np.asarray(image)
    if array.ndim != 2:
        raise ValueError(f"image must be a 2-D grayscale array, got shape {array.shape}")
    if min(array.shape) < 16:
        raise ValueError(f"image must be at least 16x16 px, got {array.shape}")
    if array.dtype == np.bool_ or not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    ):
        raise ValueError(f"image must have a numeric dtype, got {array.dtype}")
    pixels = array.astype(np.float32)
    if not np.isfinite(pixels).all():
        raise ValueError("image contains non-finite values")
    pixels -= pixels.mean()
    if not pixels.any():
        raise ValueError("image is constant; a thread pattern needs contrast")
    geometry = _spectral_geometry(pixels.shape, resolution, settings)
    if geometry.window is not None:
        pixels *= geometry.window
    spectrum = scipy.fft.rfft2(pixels, s=geometry.fft_shape)
    power = spectrum.real**2 + spectrum.imag**2
    n_rows, n_cols = geometry.fft_shape
    peaks = []
    for region in (geometry.vertical, geometry.horizontal):
        scores = power.ravel()[region.indices] * region.weights
        best = int(region.indices[int(np.argmax(scores))])
        peak_row, peak_col = divmod(best, power.shape[1])
        row, col = _prefer_fundamental(power, geometry.whitening, region.mask, peak_row, peak_col, settings)
        if settings.refinement == "centroid":
            row_bin, col_bin = _centroid(power, row, col)
        else:
            row_bin = (row if row <= n_rows // 2 else row - n_rows) + _parabolic_offset(power, row, col, axis=0)
            col_bin = col + _parabolic_offset(power, row, col, axis=1)
        # The peak's wave vector in cycles per cm (rows down, columns right), perpendicular to the threads.
        peaks.append((row_bin * resolution / n_rows, col_bin * resolution / n_cols))
    (v_row, v_col), (h_row, h_col) = peaks
    if h_row < 0:  # the same peak, point-symmetric: the one below the axis keeps the angle's sign rule simple
        h_row, h_col = -h_row, -h_col
    return SpectralCount(
        horizontal=math.hypot(h_row, h_col),
        vertical=math.hypot(v_row, v_col),
        # A vertical thread turned by +a has the wave vector (cos a, sin a) in (column, row); a horizontal
        # thread turned by +a has (-sin a, cos a), taken with its row component positive.
        angle_h_deg=math.degrees(math.atan2(-h_col, h_row)),
        angle_v_deg=math.degrees(math.atan2(v_row, v_col)),
    )


@dataclass(frozen=True)
class _SpectralRegion:
    """Where one family's peak is searched: band x sector, as a mask and as flat indices with weights."""

    mask: np.ndarray
    indices: np.ndarray
    weights: np.ndarray


@dataclass(frozen=True)
class _SpectralGeometry:
    window: np.ndarray | None
    fft_shape: tuple[int, int]
    whitening: np.ndarray
    vertical: _SpectralRegion
    horizontal: _SpectralRegion


@functools.lru_cache(maxsize=16)
def _spectral_geometry(shape: tuple[int, int], px_per_cm: float, settings: FftSettings) -> _SpectralGeometry:
    """Window, padded size and search regions for an image shape, resolution and settings (cached: reused per
    call)."""
    rows, cols = shape
    n_rows, n_cols = (int(cv2.getOptimalDFTSize(settings.padding * n)) for n in shape)
    # Frequencies in threads/cm of each bin: rows signed (fftfreq order), columns non-negative (rfft).
    freq_row = (np.fft.fftfreq(n_rows) * px_per_cm)[:, None]
    freq_col = (np.fft.rfftfreq(n_cols) * px_per_cm)[None, :]
    radius = np.hypot(freq_row, freq_col)
    low, high = settings.band_threads_per_cm
    in_band = (radius >= low) & (radius <= high)
    tan_limit = math.tan(math.radians(settings.sector_half_angle_deg))
    whitening = radius**settings.whitening_exponent
    regions = []
    for sector in (np.abs(freq_row) <= tan_limit * freq_col, freq_col <= tan_limit * np.abs(freq_row)):
        mask = in_band & sector
        if not mask.any():
            raise CountingError(
                f"band outside the image: no {low}-{high} threads/cm frequencies near an axis fit a "
                f"{rows}x{cols} px image at {px_per_cm} px/cm"
            )
        indices = np.flatnonzero(mask)
        regions.append(_SpectralRegion(mask=mask, indices=indices, weights=whitening.ravel()[indices]))
    window = _window(rows, cols, settings)
    return _SpectralGeometry(window, (n_rows, n_cols), whitening, regions[0], regions[1])


def _window(rows: int, cols: int, settings: FftSettings) -> np.ndarray | None:
    """The taper the image is multiplied by before the transform (``None``: none)."""
    if settings.window == "none":
        return None
    if settings.window == "hann":
        return np.outer(np.hanning(rows), np.hanning(cols)).astype(np.float32)
    return np.outer(*(scipy.signal.windows.tukey(n, settings.tukey_alpha) for n in (rows, cols))).astype(np.float32)


def _prefer_fundamental(
    power: np.ndarray, whitening: np.ndarray, region: np.ndarray, row: int, col: int, settings: FftSettings
) -> tuple[int, int]:
    """Move a peak to half its frequency if a comparable peak sits there (the peak was a harmonic).

    Narrow threads (small duty cycle) put much of their power into the second harmonic, which the
    whitening boosts further; the fundamental is the thread frequency. "Comparable" means a whitened
    power of at least ``FFT_HARMONIC_RATIO`` times the peak's within ``FFT_HARMONIC_SEARCH_BINS`` bins of
    the half-frequency bin, inside the search region.
    """
    n_rows, n_cols = power.shape
    signed_row = row if row <= n_rows // 2 else row - n_rows
    half_row, half_col = round(signed_row / 2), round(col / 2)
    threshold = settings.harmonic_ratio * power[row, col] * whitening[row, col]
    best = (threshold, row, col)
    reach = settings.harmonic_search_bins
    for r in range(half_row - reach, half_row + reach + 1):
        for c in range(max(half_col - reach, 0), min(half_col + reach + 1, n_cols)):
            r_wrapped = r % n_rows
            if region[r_wrapped, c]:
                score = power[r_wrapped, c] * whitening[r_wrapped, c]
                if score >= best[0]:
                    best = (score, r_wrapped, c)
    return best[1], best[2]


def _parabolic_offset(power: np.ndarray, row: int, col: int, *, axis: int) -> float:
    """Sub-bin offset of a peak from a parabola through the log power at it and its two neighbours.

    On the log of a Gaussian-like peak the parabola is exact. Rows wrap around (fftfreq order); left of
    column 0 the mirrored bin is used (a real image's spectrum is point-symmetric).
    """
    n_rows, n_cols = power.shape
    if axis == 0:
        values = (power[(row - 1) % n_rows, col], power[row, col], power[(row + 1) % n_rows, col])
    else:
        before = power[(-row) % n_rows, 1] if col == 0 else power[row, col - 1]
        values = (before, power[row, col], power[row, col + 1] if col + 1 < n_cols else power[row, col])
    floor = float(power[row, col]) * 1e-12 + 1e-30  # keeps log finite at exact zeros
    before, centre, after = (math.log(float(v) + floor) for v in values)
    curvature = before - 2.0 * centre + after
    if curvature >= 0:  # not a maximum along this axis (flat or a saddle): keep the bin centre
        return 0.0
    return min(max(0.5 * (before - after) / curvature, -0.5), 0.5)


def _centroid(power: np.ndarray, row: int, col: int) -> tuple[float, float]:
    """The power-weighted mean wave vector, in signed (row, column) bins, of the bins within
    ``FFT_CENTROID_BINS`` of the peak (columns left of 0 mirrored through the origin: the spectrum of a real image
    is point-symmetric)."""
    n_rows, n_cols = power.shape
    signed_row = row if row <= n_rows // 2 else row - n_rows
    reach = FFT_CENTROID_BINS
    total = weighted_row = weighted_col = 0.0
    for d_row in range(-reach, reach + 1):
        for d_col in range(-reach, reach + 1):
            r, c = signed_row + d_row, col + d_col
            value = float(power[(-r) % n_rows, -c]) if c < 0 else float(power[r % n_rows, c]) if c < n_cols else 0.0
            total += value
            weighted_row += value * r
            weighted_col += value * c
    if total <= 0:
        return float(signed_row), float(col)
    return weighted_row / total, weighted_col / total
