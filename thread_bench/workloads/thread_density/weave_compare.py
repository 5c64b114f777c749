"""Same-bolt matching: were two canvases cut from one bolt? (Johnson, Erdmann et al.'s weave matching.)

A loom lays the warp threads with a density that varies across the bolt's width in stripes a few centimetres wide,
and those stripes run the bolt's whole length; canvases cut from one bolt therefore share them. A weave map
(``weave_map.csv``: thread densities on a grid of windows over a radiograph) gives each canvas's *warp profile*,
the warp family's density averaged along the warp, as a function of the position across it. Two profiles from one
bolt match at some shift, possibly with one reversed (a canvas mounted the other way round).

The two profiles are correlated (Pearson) over their overlap at every shift with at least ``min_overlap_cm`` of
overlap and in both orientations. The alignment kept is the one with the most evidence, Fisher's z of r times the
square root of the overlap's pairs less 3 (the z-score of r under no relation), not the highest r: a short overlap
reaches a high r by chance far more easily than a long one, and on rendered canvases choosing by r let chance fits
of the minimum overlap beat true matches over 16 cm. A maximum over many shifts is high by chance alone, so its
p-value comes from surrogates: phase-randomised copies of b's profile (same power spectrum, so the same stripe
widths, but no relation to a) scored the same way over the same shifts and orientations. The run is logged in the
``weave-maps`` experiment with the figure and a JSON of the profiles.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd

from thread_bench import cli, store, tracking
from thread_bench.workloads.thread_density import keys, weave

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

#: The file a weave map's directory (and its MLflow run's artifact root) holds.
WEAVE_MAP_FILE = weave.CSV_NAME
GRID_COLUMNS = (weave.X_CM, weave.Y_CM, weave.VALID)
METHODS = ("cnn", "fft", "true")
WARPS = ("v", "h")

#: Overlap a match needs by default: stripes are 0.5-5 cm wide, so a shorter overlap holds one or two of them and
#: almost any two profiles line up somewhere over it.
DEFAULT_MIN_OVERLAP_CM = 6.0
#: Surrogates for the p-value: the smallest p it can give is 1/501 = 0.002, and its sampling error at p = 0.01 is
#: about 0.0045, enough to tell 0.01 from 0.05; scoring them all takes well under a second.
N_SURROGATES = 500
#: The surrogates' seed: the same maps always give the same p-value.
SURROGATE_SEED = 0
#: A profile column is the mean of the column's valid windows; with fewer than this many (or than this share of
#: the column) its mean keeps most of one window's measurement noise, which is as large as the stripes themselves.
MIN_VALID_WINDOWS = 3
MIN_VALID_SHARE = 0.25
#: A match is claimed only when chance rarely does as well (p <= 0.01: a collection compared pair by pair makes
#: dozens of comparisons, and 0.05 would call one in twenty unrelated pairs a match) *and* the profiles agree
#: strongly (r >= 0.6: with a long overlap a weak, significant correlation can come from a shared trend, such as a
#: density drifting across both radiographs, rather than from shared stripes).
MATCH_P_VALUE = 0.01
MATCH_CORRELATION = 0.6
#: Below this p-value, but short of a match: worth a look, not a claim.
SUGGESTIVE_P_VALUE = 0.05
#: Two grid coordinates closer than this (cm) are one: CSV round trips leave ~1e-15 cm of noise.
_COORDINATE_TOLERANCE_CM = 1e-6
#: A step may vary by this share of itself and still be one step (coordinates written with few decimals).
_STEP_TOLERANCE = 0.01
_RUN_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class WeaveMap:
    """One method's densities of a weave map on its regular grid (NaN where a window is invalid or failed)."""

    source: str
    x_cm: np.ndarray
    y_cm: np.ndarray
    #: (len(y_cm), len(x_cm)), threads/cm: the vertical threads' density, counted along a horizontal line.
    density_v: np.ndarray
    #: The horizontal threads' density.
    density_h: np.ndarray


@dataclass(frozen=True)
class WarpProfile:
    """The warp's density across the warp: one value per grid column (warp ``v``) or row (``h``)."""

    #: Window centres across the warp, cm, evenly spaced by ``step_cm``.
    position_cm: np.ndarray
    #: threads/cm; NaN where too few windows were valid.
    density: np.ndarray
    step_cm: float

    @property
    def n_finite(self) -> int:
        return int(np.isfinite(self.density).sum())

    @property
    def mean_density(self) -> float:
        return float(np.nanmean(self.density)) if self.n_finite else math.nan


@dataclass(frozen=True)
class Comparison:
    """The best alignment of two warp profiles and how often chance does as well."""

    correlation: float
    shift_cm: float
    overlap_cm: float
    reversed: bool
    p_value: float
    n_surrogates: int
    #: The profiles as compared (on a common step).
    profile_a: WarpProfile
    profile_b: WarpProfile
    #: Every shift tried (cm, as ``shift_cm``) and the correlation there, b forward and b reversed (NaN where the
    #: overlap is shorter than the minimum).
    shifts_cm: np.ndarray
    correlation_forward: np.ndarray
    correlation_reversed: np.ndarray

    @property
    def density_difference(self) -> float:
        return self.profile_a.mean_density - self.profile_b.mean_density

    @property
    def verdict(self) -> str:
        """One line that says what the numbers support, and no more."""
        where = f"shift {self.shift_cm:.1f} cm{', b reversed' if self.reversed else ''}"
        # At the floor, 1/(n+1), no surrogate did as well: the p-value is an upper bound.
        floor = math.isclose(self.p_value, 1 / (1 + self.n_surrogates))
        chance = f"p{'<=' if floor else '='}{self.p_value:.3f} by chance"
        numbers = f"r={self.correlation:.2f}, {chance}, overlap {self.overlap_cm:.1f} cm"
        if self.p_value <= MATCH_P_VALUE and self.correlation >= MATCH_CORRELATION:
            return f"profiles match at {where} ({numbers}): consistent with one bolt"
        if self.p_value <= SUGGESTIVE_P_VALUE:
            return f"weak match at {where} ({numbers}): suggestive, not enough to call it one bolt"
        return (
            f"no match better than chance (best r={self.correlation:.2f} at {where}, p={self.p_value:.2f}): "
            "no evidence of one bolt, which does not show two bolts either"
        )

    def metrics(self) -> dict[str, float]:
        return {
            keys.CORRELATION: self.correlation,
            keys.SHIFT_CM: self.shift_cm,
            keys.OVERLAP_CM: self.overlap_cm,
            keys.REVERSED: float(self.reversed),
            keys.P_VALUE: self.p_value,
            keys.MEAN_WARP_DENSITY_A_THREADS_PER_CM: self.profile_a.mean_density,
            keys.MEAN_WARP_DENSITY_B_THREADS_PER_CM: self.profile_b.mean_density,
            keys.WARP_DENSITY_DIFFERENCE_THREADS_PER_CM: self.density_difference,
        }


# ------------------------------------------------------------------------------------- reading weave maps


def read_weave_map(source: str, *, method: str = "cnn", name: str = "map") -> WeaveMap:
    """A weave map from a directory holding ``weave_map.csv``, the CSV itself, or an MLflow run (``runs:/<run_id>``,
    ``runs:/<run_id>/<folder>`` or a bare 32-hex run id, not also a local path), checked.

    Args:
        method: whose densities to read: ``cnn``, ``fft`` or ``true`` (the map's ``density_*_<method>`` columns).
        name: what the map is called in error messages (the option, ``--map_a``).

    Raises:
        FileNotFoundError: nothing at ``source``, or the run has no weave map.
        ValueError: not a weave map (missing columns, values, an irregular or incomplete grid).
    """
    if method not in METHODS:
        raise ValueError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    label = f"{name} {source!r}"
    run = _run_reference(source)
    if run is None:
        return parse_weave_map(_local_csv(source, label), method=method, label=label)
    folder = tempfile.mkdtemp(prefix="weave-compare-")
    try:
        return parse_weave_map(_downloaded_csv(*run, folder, label), method=method, label=label)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run_reference(source: str) -> tuple[str, str] | None:
    """(run id, artifact path of the CSV) when ``source`` names an MLflow run, else None."""
    if source.startswith("runs:/"):
        run_id, _, folder = source.removeprefix("runs:/").partition("/")
        folder = folder.strip("/")
        if folder.endswith(".csv"):
            return run_id, folder
        return run_id, f"{folder}/{WEAVE_MAP_FILE}" if folder else WEAVE_MAP_FILE
    if _RUN_ID.fullmatch(source) and not Path(source).exists():
        return source, WEAVE_MAP_FILE
    return None


def _local_csv(source: str, label: str) -> Path:
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / WEAVE_MAP_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{label}: the directory has no {WEAVE_MAP_FILE} (is it a weave map's output?)")
    elif not path.is_file():
        raise FileNotFoundError(
            f"{label}: no such file or directory (expected a weave map's directory, its {WEAVE_MAP_FILE}, "
            "or runs:/<run_id>)"
        )
    return path


def _downloaded_csv(run_id: str, artifact: str, folder: str, label: str) -> Path:
    from mlflow.exceptions import MlflowException

    try:
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact, dst_path=folder))
    except (MlflowException, OSError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise FileNotFoundError(
            f"{label}: cannot download {artifact} of run {run_id} from {mlflow.get_tracking_uri()}: {reason[:300]}"
        ) from error


def parse_weave_map(path: Path, *, method: str = "cnn", label: str = "map") -> WeaveMap:
    """Read and check one ``weave_map.csv`` (see :func:`read_weave_map`)."""
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        first = " ".join(str(error).split())[:200]
        raise ValueError(f"{label}: {path} is not a readable CSV ({first})") from error
    columns = [*GRID_COLUMNS, f"density_v_{method}", f"density_h_{method}"]
    missing = [column for column in columns if column not in table.columns]
    if missing:
        hint = (
            " (the map was made without a ground truth: use --method cnn or fft)"
            if method == "true"
            else f" (a weave map has {', '.join(columns)})"
        )
        raise ValueError(f"{label}: {path} lacks the column(s) {', '.join(missing)}{hint}")
    if table.empty:
        raise ValueError(f"{label}: {path} has no windows (no rows)")
    numbers = {column: pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float) for column in columns}
    for column in GRID_COLUMNS:
        bad = ~np.isfinite(numbers[column])
        if column == "valid":
            bad |= ~np.isin(numbers[column], (0.0, 1.0))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{label}: {path}: column {column} must hold "
                f"{'0 or 1' if column == 'valid' else 'a number'} in every row; row {row + 1} has "
                f"{table[column].iloc[row]!r}"
            )
    x_cm, column_of = _axis(numbers["x_cm"], "x_cm", label, path)
    y_cm, row_of = _axis(numbers["y_cm"], "y_cm", label, path)
    cells = row_of * len(x_cm) + column_of
    if len(np.unique(cells)) != len(cells) or len(cells) != len(x_cm) * len(y_cm):
        raise ValueError(
            f"{label}: {path}: the windows do not form a complete grid ({len(cells)} rows for "
            f"{len(y_cm)} y x {len(x_cm)} x positions, {len(cells) - len(np.unique(cells))} repeated)"
        )
    valid = numbers["valid"] == 1.0
    maps = {}
    for family in ("v", "h"):
        values = np.where(valid, numbers[f"density_{family}_{method}"], np.nan)
        grid = np.full(len(x_cm) * len(y_cm), np.nan)
        grid[cells] = np.where(np.isfinite(values), values, np.nan)
        maps[family] = grid.reshape(len(y_cm), len(x_cm))
    return WeaveMap(str(path), x_cm, y_cm, maps["v"], maps["h"])


def _axis(values: np.ndarray, column: str, label: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The evenly spaced positions of a grid axis and each row's index among them."""
    rounded = np.round(values / _COORDINATE_TOLERANCE_CM) * _COORDINATE_TOLERANCE_CM
    positions, index = np.unique(rounded, return_inverse=True)
    if len(positions) >= 2:
        steps = np.diff(positions)
        step = float(np.median(steps))
        if np.abs(steps - step).max() > _STEP_TOLERANCE * step:
            odd = int(np.argmax(np.abs(steps - step)))
            raise ValueError(
                f"{label}: {path}: the grid is not regular in {column}: positions should be evenly spaced (step "
                f"{step:g} cm) but {positions[odd]:g} -> {positions[odd + 1]:g} is {steps[odd]:g} cm"
            )
    return positions, index


# ------------------------------------------------------------------------------------- profiles and scores


def warp_profile(weave_map: WeaveMap, warp: str = "v") -> WarpProfile:
    """The warp family's density averaged along the warp over the valid windows, across the warp.

    Args:
        warp: ``v``: the vertical threads are the warp (the profile runs along x); ``h``: the horizontal ones
            (the canvas mounted turned; the profile runs along y).
    """
    if warp not in WARPS:
        raise ValueError(f"--warp must be v (vertical threads are the warp) or h (horizontal), got {warp!r}")
    # Rows of ``along``: positions along the warp; columns: positions across it.
    along, across = (weave_map.density_v, weave_map.x_cm) if warp == "v" else (weave_map.density_h.T, weave_map.y_cm)
    counts = np.isfinite(along).sum(axis=0)
    enough = (counts >= MIN_VALID_WINDOWS) & (counts >= MIN_VALID_SHARE * along.shape[0])
    sums = np.nansum(along, axis=0)
    density = np.where(enough, sums / np.maximum(counts, 1), np.nan)
    step = float(across[1] - across[0]) if len(across) >= 2 else math.nan
    return WarpProfile(np.asarray(across, dtype=float), density, step)


def resampled(profile: WarpProfile, step_cm: float) -> WarpProfile:
    """``profile`` linearly interpolated onto a grid of ``step_cm`` from its first position; a new point between a
    NaN and a value is NaN (no value is made up across a gap)."""
    if math.isclose(profile.step_cm, step_cm, rel_tol=_STEP_TOLERANCE):
        return profile
    start, end = profile.position_cm[0], profile.position_cm[-1]
    positions = start + step_cm * np.arange(int(np.floor((end - start) / step_cm + 1e-9)) + 1)
    exact = (positions - start) / profile.step_cm
    below = np.clip(np.floor(exact + 1e-9).astype(int), 0, len(profile.density) - 1)
    above = np.clip(below + 1, 0, len(profile.density) - 1)
    weight = np.clip(exact - below, 0.0, 1.0)
    low, high = profile.density[below], profile.density[above]
    high = np.where(weight < 1e-9, low, high)  # on a sample: its own value, whatever its neighbour
    return WarpProfile(positions, (1 - weight) * low + weight * high, step_cm)


def on_common_step(a: WarpProfile, b: WarpProfile) -> tuple[WarpProfile, WarpProfile]:
    """Both profiles on the coarser of their steps (interpolating a fine profile down invents no detail)."""
    step = max(a.step_cm, b.step_cm)
    return resampled(a, step), resampled(b, step)


def shift_correlations(a: np.ndarray, b: np.ndarray, min_pairs: int) -> np.ndarray:
    """Pearson correlation of ``a`` with each row of ``b`` at every shift ``k`` (``b[:, j]`` beside ``a[j + k]``,
    ``k`` from ``-(nb - 1)`` to ``na - 1``), over the positions where both are finite; NaN where fewer than
    ``min_pairs``. Every row of ``b`` must have its NaNs in the same places (surrogates of one profile).

    Returns:
        (rows of b, na + nb - 1).
    """
    b = np.atleast_2d(b)
    na, nb = len(a), b.shape[1]
    out = np.full((b.shape[0], na + nb - 1), np.nan)
    finite_a, finite_b = np.isfinite(a), np.isfinite(b[0])
    for index, k in enumerate(range(-(nb - 1), na)):
        start, stop = max(0, k), min(na, k + nb)
        both = finite_a[start:stop] & finite_b[start - k : stop - k]
        if both.sum() < min_pairs:
            continue
        da = a[start:stop][both]
        db = b[:, start - k : stop - k][:, both]
        da = da - da.mean()
        db = db - db.mean(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, index] = db @ da / (np.sqrt(da @ da) * np.sqrt((db * db).sum(axis=1)))
    return out


def overlap_counts(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Jointly finite positions of ``a`` and ``b`` at every shift (as :func:`shift_correlations`)."""
    fa, fb = np.isfinite(a).astype(float), np.isfinite(b).astype(float)
    return np.convolve(fa, fb[::-1]).round().astype(int)


def phase_randomised(density: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` surrogates of a profile with its power spectrum and random phases, NaN where it is NaN (its gaps are
    bridged linearly for the transform, then put back).

    Returns:
        (n, len(density)).
    """
    finite = np.isfinite(density)
    index = np.arange(len(density))
    filled = np.interp(index, index[finite], density[finite])
    mean = filled.mean()
    amplitude = np.abs(np.fft.rfft(filled - mean))
    phases = rng.uniform(0.0, 2 * np.pi, size=(n, len(amplitude)))
    phases[:, 0] = 0.0  # the mean stays real
    if len(density) % 2 == 0:
        phases[:, -1] = 0.0  # so does the Nyquist term
    surrogates = np.fft.irfft(amplitude * np.exp(1j * phases), n=len(density), axis=1) + mean
    surrogates[:, ~finite] = np.nan
    return surrogates


def compare_profiles(
    a: WarpProfile,
    b: WarpProfile,
    *,
    min_overlap_cm: float = DEFAULT_MIN_OVERLAP_CM,
    n_surrogates: int = N_SURROGATES,
    seed: int = SURROGATE_SEED,
) -> Comparison:
    """The best (shift, orientation) of b's warp profile against a's, and its p-value against surrogates of b.

    Raises:
        ValueError: a profile is narrower than ``min_overlap_cm``, or no shift overlaps that much.
    """
    if min_overlap_cm <= 0:
        raise ValueError(f"--min_overlap_cm must be > 0, got {min_overlap_cm}")
    if n_surrogates < 1:
        raise ValueError(f"n_surrogates must be >= 1, got {n_surrogates}")
    a, b = on_common_step(a, b)
    step = a.step_cm
    for name, profile in (("map_a", a), ("map_b", b)):
        width = profile.n_finite * step
        if not width >= min_overlap_cm:
            raise ValueError(
                f"--{name}: its warp profile covers only {width:.1f} cm ({profile.n_finite} columns of {step:g} cm "
                f"with enough valid windows); --min_overlap_cm {min_overlap_cm:g} needs both maps at least that wide "
                "across the warp (a smaller minimum makes chance matches likelier)"
            )
    min_pairs = math.ceil(min_overlap_cm / step - 1e-9)
    forward = shift_correlations(a.density, b.density, min_pairs)[0]
    backward = shift_correlations(a.density, b.density[::-1], min_pairs)[0]
    both = np.stack([forward, backward])
    pairs_both = np.stack([overlap_counts(a.density, b.density), overlap_counts(a.density, b.density[::-1])])
    if np.isnan(both).all():
        raise ValueError(
            f"--map_a and --map_b: no shift overlaps their valid columns by {min_overlap_cm:g} cm (--min_overlap_cm);"
            " their invalid windows leave too few columns side by side"
        )
    evidence = _evidence(both, pairs_both)
    orientation, best = np.unravel_index(np.nanargmax(evidence), both.shape)
    correlation = float(both[orientation, best])
    nb = len(b.density)
    shifts = np.arange(-(nb - 1), len(a.density))
    pairs = pairs_both[orientation, best]

    rng = np.random.default_rng(seed)
    surrogates = phase_randomised(b.density, n_surrogates, rng)
    scores = np.concatenate(
        [
            _evidence(shift_correlations(a.density, surrogates, min_pairs), pairs_both[0]),
            _evidence(shift_correlations(a.density, surrogates[:, ::-1], min_pairs), pairs_both[1]),
        ],
        axis=1,
    )
    surrogate_best = np.max(np.where(np.isnan(scores), -np.inf, scores), axis=1)
    observed = float(evidence[orientation, best])
    p_value = (1 + int((surrogate_best >= observed - 1e-12).sum())) / (1 + n_surrogates)
    return Comparison(
        correlation=correlation,
        shift_cm=float(shifts[best] * step),
        overlap_cm=float(pairs * step),
        reversed=bool(orientation),
        p_value=p_value,
        n_surrogates=n_surrogates,
        profile_a=a,
        profile_b=b,
        shifts_cm=shifts * step,
        correlation_forward=forward,
        correlation_reversed=backward,
    )


def _evidence(correlations: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """How much a correlation over so many pairs says: Fisher's z times the square root of the pairs less 3 (the
    z-score of r under no relation). The alignment is chosen by it, not by r, because a short overlap reaches a high
    r by chance far more easily than a long one: with r alone the longest true match loses to a chance fit of the
    minimum overlap."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.arctanh(np.clip(correlations, -0.999999, 0.999999)) * np.sqrt(np.maximum(pairs - 3, 1))


def roc_auc(same_scores: Sequence[float], different_scores: Sequence[float]) -> float:
    """The area under the ROC curve of a score that should be higher for same-bolt pairs: the probability that a
    same-bolt pair outscores a different-bolt pair (Mann-Whitney; a tie counts one half).

    Raises:
        ValueError: either list is empty or holds a NaN.
    """
    same, different = np.asarray(same_scores, dtype=float), np.asarray(different_scores, dtype=float)
    if not len(same) or not len(different):
        raise ValueError("roc_auc needs at least one score of each kind")
    if np.isnan(same).any() or np.isnan(different).any():
        raise ValueError("roc_auc: a score is NaN")
    greater = (same[:, None] > different[None, :]).sum()
    ties = (same[:, None] == different[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(same) * len(different)))


# ------------------------------------------------------------------------------------- figure and record


def comparison_figure(comparison: Comparison, labels: tuple[str, str] = ("a", "b")) -> Figure:
    """Left: both warp profiles, b placed at the best shift (and orientation) along a; right: the correlation
    against the shift, b forward and reversed, the best marked."""
    from matplotlib.figure import Figure

    c = comparison
    figure = Figure(figsize=(12, 4.2), layout="constrained")
    profiles, scores = figure.subplots(1, 2, width_ratios=(3, 2))
    a, b = c.profile_a, c.profile_b
    offset = a.position_cm[0]  # b's first compared column sits at a's first column + shift
    b_density = b.density[::-1] if c.reversed else b.density
    profiles.plot(a.position_cm, a.density, marker=".", label=f"{labels[0]} (warp profile)")
    profiles.plot(
        offset + c.shift_cm + b.step_cm * np.arange(len(b_density)),
        b_density,
        marker=".",
        label=f"{labels[1]}{', reversed' if c.reversed else ''}, shifted {c.shift_cm:.1f} cm",
    )
    profiles.set_xlabel(f"position across the warp, cm (along {labels[0]})")
    profiles.set_ylabel("warp density, threads/cm")
    profiles.set_title(c.verdict, fontsize=8, wrap=True)
    profiles.legend(loc="best", fontsize=8)
    scores.plot(c.shifts_cm, c.correlation_forward, label="b as is")
    scores.plot(c.shifts_cm, c.correlation_reversed, label="b reversed")
    scores.plot([c.shift_cm], [c.correlation], "k*", markersize=12, label=f"best r={c.correlation:.2f}")
    scores.axhline(0.0, color="0.7", linewidth=0.8)
    scores.set_xlabel("shift of b along a, cm")
    scores.set_ylabel("Pearson correlation")
    scores.set_title(f"p={c.p_value:.3f} against {c.n_surrogates} phase-randomised surrogates of b", fontsize=9)
    scores.legend(loc="best", fontsize=8)
    return figure


def _finite_or_none(values: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, dtype=float)]


def comparison_record(comparison: Comparison, params: dict[str, Any]) -> dict[str, Any]:
    """Everything the run holds, as JSON-ready data (NaN as null)."""
    c = comparison
    return {
        "verdict": c.verdict,
        "params": params,
        "metrics": {key: (value if math.isfinite(value) else None) for key, value in c.metrics().items()},
        "profile_step_cm": c.profile_a.step_cm,
        "profile_a": {
            "position_cm": _finite_or_none(c.profile_a.position_cm),
            "density": _finite_or_none(c.profile_a.density),
        },
        "profile_b": {
            "position_cm": _finite_or_none(c.profile_b.position_cm),
            "density": _finite_or_none(c.profile_b.density),
        },
        "shifts_cm": _finite_or_none(c.shifts_cm),
        "correlation_forward": _finite_or_none(c.correlation_forward),
        "correlation_reversed": _finite_or_none(c.correlation_reversed),
    }


# ------------------------------------------------------------------------------------- command line


@dataclass(frozen=True)
class CompareOptions:
    """The command's options (the command line is generated from these fields)."""

    map_a: str = ""
    map_b: str = ""
    method: str = "cnn"
    warp_a: str = "v"
    warp_b: str = "v"
    min_overlap_cm: float = DEFAULT_MIN_OVERLAP_CM
    out: str = ""

    def __post_init__(self) -> None:
        for name in ("map_a", "map_b"):
            if not getattr(self, name):
                raise ValueError(
                    f"--{name} is required: a weave map's directory, its {WEAVE_MAP_FILE}, or runs:/<run_id>"
                )
        if self.method not in METHODS:
            raise ValueError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        for name in ("warp_a", "warp_b"):
            if getattr(self, name) not in WARPS:
                raise ValueError(
                    f"--{name} must be v (the vertical threads are the warp) or h (the horizontal: the canvas "
                    f"mounted turned), got {getattr(self, name)!r}"
                )
        if not self.min_overlap_cm > 0:
            raise ValueError(f"--min_overlap_cm must be > 0, got {self.min_overlap_cm}")

    def params(self, step_cm: float) -> dict[str, Any]:
        return {
            keys.PARAM_MAP_A: self.map_a,
            keys.PARAM_MAP_B: self.map_b,
            keys.PARAM_METHOD: self.method,
            keys.PARAM_WARP_A: self.warp_a,
            keys.PARAM_WARP_B: self.warp_b,
            keys.PARAM_MIN_OVERLAP_CM: self.min_overlap_cm,
            keys.PARAM_PROFILE_STEP_CM: step_cm,
            keys.PARAM_N_SURROGATES: N_SURROGATES,
            tracking.PARAM_SEED: SURROGATE_SEED,
        }


def compare_maps(options: CompareOptions) -> Comparison:
    """Read both maps, take their warp profiles and compare them (no MLflow run)."""
    maps = [
        read_weave_map(source, method=options.method, name=f"--{name}")
        for name, source in (("map_a", options.map_a), ("map_b", options.map_b))
    ]
    profile_a = warp_profile(maps[0], options.warp_a)
    profile_b = warp_profile(maps[1], options.warp_b)
    return compare_profiles(profile_a, profile_b, min_overlap_cm=options.min_overlap_cm)


def run_compare(options: CompareOptions, experiment: str | None) -> tuple[Comparison, str]:
    """Compare the maps, then log one run (params, metrics, figure, JSON); returns the comparison and the run id.
    Bad input fails before the run starts, so it leaves no run behind."""
    comparison = compare_maps(options)
    params = options.params(comparison.profile_a.step_cm)
    record = comparison_record(comparison, params)
    figure = comparison_figure(comparison)
    if options.out:
        out = Path(options.out)
        out.mkdir(parents=True, exist_ok=True)
        figure.savefig(out / keys.ARTIFACT_WEAVE_COMPARE_FIGURE, dpi=120)
        (out / keys.ARTIFACT_WEAVE_COMPARE_JSON).write_text(json.dumps(record, indent=2))
    experiment = tracking.experiment_name(experiment, tracking.WEAVE_EXPERIMENT)
    tags = {tracking.TAG_ROLE: tracking.ROLE_WEAVE_COMPARE}
    with tracking.tracked_run(experiment, run_name="weave-compare", tags=tags) as active:
        tracking.log_params(params)
        mlflow.log_metrics({key: value for key, value in comparison.metrics().items() if math.isfinite(value)})
        mlflow.log_figure(figure, keys.ARTIFACT_WEAVE_COMPARE_FIGURE)
        mlflow.log_dict(record, keys.ARTIFACT_WEAVE_COMPARE_JSON)
        run_id = active.info.run_id
    return comparison, run_id


def build_parser() -> argparse.ArgumentParser:
    parser = cli.Parser(
        prog="python -m thread_bench.weave_compare",
        description="Were two canvases cut from one bolt? Compares the warp density profiles of two weave maps "
        "at every shift and both orientations, gives the best correlation a p-value against phase-randomised "
        f"surrogates, and logs a run (default experiment: {tracking.WEAVE_EXPERIMENT}).",
    )
    cli.add_dataclass_options(
        parser,
        CompareOptions,
        helps={
            "map_a": f"weave map a: its directory, its {WEAVE_MAP_FILE}, runs:/<run_id> or a run id",
            "map_b": "weave map b, the same ways",
            "method": "whose densities to compare: cnn, fft, or true (maps made with a ground truth)",
            "warp_a": "which thread family is a's warp: v (vertical) or h (horizontal: the canvas mounted turned)",
            "warp_b": "which thread family is b's warp: v or h",
            "min_overlap_cm": "the least overlap of the two profiles a shift is scored at, cm",
            "out": "a local directory for the figure and the JSON as well (default: the run only)",
        },
    )
    parser.add_argument(
        "--experiment",
        default=None,
        help=f"MLflow experiment (default: $MLFLOW_EXPERIMENT_NAME, else {tracking.WEAVE_EXPERIMENT})",
    )
    cli.add_verbose_option(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = cli.start(parser, argv)
    status, _ = cli.guarded(parser, lambda: _run(args))
    return status


def _run(args: argparse.Namespace) -> tuple[Comparison, str]:
    options = CompareOptions(**cli.given(args, CompareOptions))
    store.open_store()  # an unusable tracking store: one line, before reading a map from a run
    comparison, run_id = run_compare(options, args.experiment or None)
    print(comparison.verdict, flush=True)
    print(f"weave-compare run {run_id}", flush=True)
    return comparison, run_id


if __name__ == "__main__":
    raise SystemExit(main())
