"""Synthetic canvas radiographs with exact thread-density ground truth (docs/DESIGN.md §2.2).

A radiograph of a painting on canvas shows how much radio-opaque material the beam crosses. The threads
themselves are nearly transparent; what the film records is the ground layer (lead white, chalk) that fills
the gaps between them, plus the paint on top. This module builds that picture from its physics:

1. **Two thread families.** Vertical threads (warp) and horizontal threads (weft). Each family is a phase
   field ``phi(x, y)`` counted in threads: thread centre lines lie where ``phi`` is an integer. The phase
   integrates a local frequency ``f(u) = f0 * (1 + eps(u))`` along the coordinate ``u`` perpendicular to the
   family, where ``eps`` is low-pass noise whose standard deviation is the family's *irregularity* (2-8 %,
   the weft more irregular than the warp). Each family is tilted by up to +-3 degrees and displaced by a
   smooth 2-D *waviness* field; near a tacking edge, *cusping* bows the threads parallel to the edge.
2. **Thread bodies.** Each thread has an elliptic cross-section whose width is a random fraction (duty
   cycle) of the local spacing, varying thread by thread.
3. **Plain weave.** Thread k of the warp passes over thread n of the weft when ``k + n`` is even, under it
   otherwise; a thread's height oscillates along its length accordingly, and the canvas surface is the
   higher of the two families. The ground layer fills everything below a common level, so it is thickest
   in the interstices (bright), thinner over thread bodies (darker) and thinnest at crossings.
4. **Paint and objects.** An additive low-frequency paint layer (1/f^2 power spectrum), sparse bright brush
   strokes, and optionally nails (bright discs), a stretcher bar (a bright band with wood grain).
5. **Imaging.** Attenuation -> transmitted intensity, Gaussian blur (focal spot, detector), photon noise
   (Poisson, in its Gaussian approximation) plus Gaussian read noise, back to attenuation, a random window
   (contrast), gamma, and quantisation to 8 or 16 bits.

Ground truth. For a family with phase ``phi`` the *density* of a patch is::

    density = px_per_cm * mean over all patch pixels of |grad phi|        [threads/cm]

``|grad phi|`` is the local number of thread centre lines crossed per pixel walking perpendicular to the
threads, so the density is the mean number of centre lines crossed per cm perpendicular to the family,
averaged over the patch (irregularity, waviness and cusping included). It is computed from the same fields
that draw the image and the masks, so it is exact up to float32 rounding and a central difference of the
smooth displacement field, not estimated. ``density_v`` is the vertical family (warp: counted along a
horizontal line), ``density_h`` the horizontal family (weft). Spatial counting measures distances along the
other family, which is slightly oblique and wavy, and reads ~0.6 % lower on this corpus.

Masks mark the thread centre lines (``|phi - round(phi)| / |grad phi| <= 1.5`` px, i.e. lines ~3 px wide)
so that they stay connected after the nearest-neighbour rotations of the augmentation.

A corpus is a set of *paintings*; the patches of one painting share its canvas (base densities,
irregularity, thread widths, weave), so splitting by painting keeps a canvas out of the training set.
"""

from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

from thread_bench import cli, diskspace
from thread_bench.progress import Ticker

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Thread densities a random canvas is drawn from: the reference corpus (Delgado et al.) spans 6 to 23
#: threads/cm; fine linen canvases reach ~35, so the varied mixes go that far.
DENSITY_RANGE_THREADS_PER_CM = (6.0, 35.0)
#: The reference corpus's range: the generator before the style mixes drew from it (``CLASSIC_MIX``).
CLASSIC_DENSITY_RANGE_THREADS_PER_CM = (6.0, 23.0)
DEFAULT_SIZE_PX = 300
DEFAULT_PX_PER_CM = 200.0
DEFAULT_N_PAINTINGS = 36
DEFAULT_N_PATCHES = 240
#: Half width of a drawn centre line: pixels within this distance of the line are set (~3 px lines).
MASK_HALF_WIDTH_PX = 1.5
#: ... for families whose nominal spacing is at least this (23 threads/cm at 200 px/cm, the densest canvases of
#: the reference corpus); denser families get narrower lines (:func:`_centre_lines`), else too little room is
#: left between lines for the crossing-point counter's 1 px dilation and neighbouring crossings merge.
MASK_FULL_WIDTH_MIN_SPACING_PX = DEFAULT_PX_PER_CM / CLASSIC_DENSITY_RANGE_THREADS_PER_CM[1]
#: Every third painting is "scanned" at 16 bit (stored as TIFF); the others at 8 bit (PNG).
SIXTEEN_BIT_EVERY = 3
INDEX_NAME = "index.csv"
#: Written next to ``index.csv``: the generator settings, so an existing corpus can be checked for reuse.
SETTINGS_NAME = "synthetic.json"
#: Written last: the SHA-256 of every other file of the corpus, checked whenever the corpus is reused.
CONTENT_NAME = "content.sha256"
#: Bump when the generator's output changes for the same seed (existing corpora are then rejected).
GENERATOR_VERSION = 2
INDEX_COLUMNS = ("painting_id", "patch_id", "image", "h_mask", "v_mask", "px_per_cm", "density_h", "density_v")
#: Written next to ``index.csv``: each patch's style, so results can be broken down by it (not read by the
#: preparation, which needs only the raw-corpus format).
STYLES_NAME = "styles.csv"
STYLES_COLUMNS = (
    "patch_id",
    "weave",
    "profile",
    "imaging",
    "source_px_per_cm",
    "occluded_share",
    "artefacts",
    "irregularity_v",
    "irregularity_h",
)

#: Weaves: which family passes over at crossing (k, n) of warp thread k and weft thread n (:func:`_warp_over`).
WEAVES = ("plain", "basket", "twill")
#: Cross-sections and yarn irregularities of the threads (:func:`_ground_thickness`).
THREAD_PROFILES = ("elliptic", "flat", "round", "uneven", "slub")
#: How the patch is X-rayed and stored (:meth:`ImagingParams.random`).
IMAGING_CONDITIONS = ("standard", "low_dose", "soft", "harsh", "scatter")
#: Range of the resolution at which a painting is "scanned" before being stored at ``px_per_cm``.
SOURCE_PX_PER_CM_LIMITS = (50.0, 800.0)
#: Fractions of the uneven profile's threads that are doubled (two thin yarns in one slot) and missing.
DOUBLED_THREAD_FRACTION = 0.04
MISSING_THREAD_FRACTION = 0.03


# ------------------------------------------------------------------------------------------ parameters


@dataclass(frozen=True)
class CanvasParams:
    """The canvas of one painting: shared by all its patches.

    Densities are the base values of the painting; each patch deviates from them by ``density_spread``
    (relative standard deviation), as the thread count drifts slowly across a real canvas.
    """

    density_h_threads_per_cm: float
    density_v_threads_per_cm: float
    #: Relative standard deviation of the local thread frequency (weft: horizontal, warp: vertical).
    irregularity_h: float = 0.05
    irregularity_v: float = 0.03
    #: Mean thread width as a fraction of the local spacing, and its thread-to-thread standard deviation.
    duty_cycle_h: float = 0.7
    duty_cycle_v: float = 0.7
    duty_cycle_jitter: float = 0.05
    #: Height modulation of a thread along its length from passing over/under the other family.
    weave_amplitude: float = 0.4
    #: Amplitude of the smooth lateral displacement of the threads, as a fraction of the spacing.
    waviness: float = 0.08
    #: Attenuation of a full-thickness ground layer (optical depth, natural log units).
    ground_opacity: float = 1.0
    #: Relative standard deviation of a patch's densities around the painting's base densities.
    density_spread: float = 0.015
    #: Thread families are tilted uniformly within +-this angle, independently per patch and family.
    max_angle_deg: float = 3.0
    #: A patch's densities (base density and its ``density_spread``) are clipped to this range, threads/cm.
    density_range: tuple[float, float] = DENSITY_RANGE_THREADS_PER_CM

    def __post_init__(self) -> None:
        low, high = self.density_range
        if not (math.isfinite(low) and math.isfinite(high) and 0 < low < high):
            raise ValueError(
                f"density_range must be (low, high) with 0 < low < high threads/cm, got {self.density_range!r}"
            )
        for name in ("density_h_threads_per_cm", "density_v_threads_per_cm"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number (threads/cm), got {value!r}")
        for name in ("irregularity_h", "irregularity_v", "density_spread"):
            value = getattr(self, name)
            if not 0.0 <= value <= 0.3:
                raise ValueError(f"{name} must be a relative deviation in [0, 0.3], got {value!r}")
        for name in ("duty_cycle_h", "duty_cycle_v"):
            value = getattr(self, name)
            if not 0.1 <= value <= 0.95:
                raise ValueError(f"{name} must be in [0.1, 0.95] (thread width / spacing), got {value!r}")
        if not 0.0 <= self.duty_cycle_jitter <= 0.2:
            raise ValueError(f"duty_cycle_jitter must be in [0, 0.2], got {self.duty_cycle_jitter!r}")
        if not 0.0 <= self.weave_amplitude < 1.0:
            raise ValueError(f"weave_amplitude must be in [0, 1), got {self.weave_amplitude!r}")
        if not 0.0 <= self.waviness <= 0.5:
            raise ValueError(f"waviness must be in [0, 0.5] (fraction of the spacing), got {self.waviness!r}")
        if not self.ground_opacity > 0:
            raise ValueError(f"ground_opacity must be > 0, got {self.ground_opacity!r}")
        if not 0.0 <= self.max_angle_deg <= 15.0:
            raise ValueError(f"max_angle_deg must be in [0, 15], got {self.max_angle_deg!r}")

    @classmethod
    def random(
        cls,
        rng: np.random.Generator,
        *,
        density_range: tuple[float, float] = DENSITY_RANGE_THREADS_PER_CM,
        log_uniform: bool = True,
    ) -> CanvasParams:
        """A plausible canvas: warp density in ``density_range``, weft density near it.

        Log-uniform by default: relative errors are what matter, and a uniform draw over 6-35 threads/cm
        would give the coarse canvases (6-12) only a fifth of the paintings. ``log_uniform=False`` with
        ``CLASSIC_DENSITY_RANGE_THREADS_PER_CM`` is the generator before the style mixes (``CLASSIC_MIX``).
        """
        low, high = density_range
        if not 0 < low < high:
            raise ValueError(f"density_range must be (low, high) with 0 < low < high threads/cm, got {density_range!r}")
        density_v = math.exp(rng.uniform(math.log(low), math.log(high))) if log_uniform else rng.uniform(low, high)
        # Warp and weft counts of real canvases are correlated (often within ~20 % of each other).
        density_h = float(np.clip(density_v * math.exp(rng.normal(0.0, 0.18)), low, high))
        irregularity_v = rng.uniform(0.02, 0.05)
        # The weft is laid by hand, shot by shot, so it is the more irregular family.
        irregularity_h = rng.uniform(irregularity_v + 0.01, 0.08)
        return cls(
            density_h_threads_per_cm=density_h,
            density_v_threads_per_cm=float(density_v),
            irregularity_h=float(irregularity_h),
            irregularity_v=float(irregularity_v),
            duty_cycle_h=float(rng.uniform(0.5, 0.85)),
            duty_cycle_v=float(rng.uniform(0.5, 0.85)),
            duty_cycle_jitter=float(rng.uniform(0.02, 0.08)),
            weave_amplitude=float(rng.uniform(0.2, 0.6)),
            waviness=float(rng.uniform(0.03, 0.12)),
            ground_opacity=float(rng.uniform(0.6, 1.4)),
            density_range=(float(low), float(high)),
        )


@dataclass(frozen=True)
class ImagingParams:
    """How a patch is imaged: blur, noise, display window and storage."""

    #: Gaussian blur of the transmitted intensity (focal spot + detector), pixels.
    blur_sigma_px: float = 1.0
    #: Mean photon count per pixel of an unattenuated beam (Poisson noise; lower is noisier).
    photons_per_px: float = 1000.0
    #: Gaussian read noise, as a fraction of the unattenuated intensity.
    read_noise: float = 0.005
    #: Display window: attenuation quantiles mapped to black and white (contrast).
    window_quantiles: tuple[float, float] = (0.005, 0.995)
    gamma: float = 1.0
    #: Output levels used, as fractions of the full scale (contrast of the stored image).
    black_level: float = 0.05
    white_level: float = 0.95
    bit_depth: int = 8
    #: Largest stored value of a 16-bit image (12-, 14- and 16-bit detectors all store 16-bit words).
    max_level_16bit: int = 65535
    #: Veiling glare: this fraction of the transmitted intensity, spread by a Gaussian ``scatter_sigma`` x the
    #: image side wide, is added back. It lifts the dark (highly attenuating) parts most, so it lowers the
    #: contrast non-uniformly. 0 = none.
    scatter_fraction: float = 0.0
    scatter_sigma: float = 0.25
    #: Heel effect: the beam intensity changes linearly by this fraction across the image (from -half to
    #: +half of it), in the direction ``exposure_gradient_angle_deg``. 0 = uniform exposure.
    exposure_gradient: float = 0.0
    exposure_gradient_angle_deg: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.scatter_fraction <= 2.0:
            raise ValueError(f"scatter_fraction must be in [0, 2] (glare / transmitted), got {self.scatter_fraction!r}")
        if not 0.0 < self.scatter_sigma <= 2.0:
            raise ValueError(
                f"scatter_sigma must be in (0, 2] (fraction of the image side), got {self.scatter_sigma!r}"
            )
        if not 0.0 <= self.exposure_gradient < 1.0:
            raise ValueError(f"exposure_gradient must be in [0, 1) (relative change), got {self.exposure_gradient!r}")
        if not math.isfinite(self.exposure_gradient_angle_deg):
            raise ValueError(f"exposure_gradient_angle_deg must be finite, got {self.exposure_gradient_angle_deg!r}")
        if self.bit_depth not in (8, 16):
            raise ValueError(f"bit_depth must be 8 or 16, got {self.bit_depth!r}")
        if not 0.0 <= self.blur_sigma_px <= 10.0:
            raise ValueError(f"blur_sigma_px must be in [0, 10], got {self.blur_sigma_px!r}")
        if not self.photons_per_px > 0:
            raise ValueError(f"photons_per_px must be > 0, got {self.photons_per_px!r}")
        if not self.read_noise >= 0:
            raise ValueError(f"read_noise must be >= 0, got {self.read_noise!r}")
        low_q, high_q = self.window_quantiles
        if not 0.0 <= low_q < high_q <= 1.0:
            raise ValueError(f"window_quantiles must satisfy 0 <= low < high <= 1, got {self.window_quantiles!r}")
        if not self.gamma > 0:
            raise ValueError(f"gamma must be > 0, got {self.gamma!r}")
        if not 0.0 <= self.black_level < self.white_level <= 1.0:
            raise ValueError(
                f"levels must satisfy 0 <= black_level < white_level <= 1, got {self.black_level!r}, "
                f"{self.white_level!r}"
            )
        if not 255 < self.max_level_16bit <= 65535:
            raise ValueError(f"max_level_16bit must be in (255, 65535], got {self.max_level_16bit!r}")

    @classmethod
    def random(cls, rng: np.random.Generator, *, bit_depth: int = 8, condition: str = "standard") -> ImagingParams:
        """Random imaging under ``condition`` (one of ``IMAGING_CONDITIONS``).

        ``standard`` is a well-exposed, moderately sharp scan (the generator's only condition before the style
        mixes: it draws exactly what it drew then). The others start from it and push one property to what
        poorer radiographs show: ``low_dose`` 30-150 photons per pixel and 1-3 % read noise; ``soft`` a blur
        of 1.5-3 pixels (large focal spot, object far from the film); ``harsh`` an extreme gamma (0.4-0.6 or
        1.8-2.5), windows clipping 2-5 % at each end and a narrow output range (low stored contrast);
        ``scatter`` veiling glare (20-50 %) and a heel-effect exposure gradient (10-40 %).
        """
        if condition not in IMAGING_CONDITIONS:
            raise ValueError(f"condition must be one of {IMAGING_CONDITIONS}, got {condition!r}")
        standard = cls(
            blur_sigma_px=float(rng.uniform(0.5, 1.5)),
            photons_per_px=float(math.exp(rng.uniform(math.log(150.0), math.log(3000.0)))),
            read_noise=float(rng.uniform(0.0, 0.01)),
            window_quantiles=(float(rng.uniform(0.0, 0.02)), float(rng.uniform(0.98, 1.0))),
            gamma=float(math.exp(rng.uniform(math.log(0.7), math.log(1.4)))),
            black_level=float(rng.uniform(0.0, 0.15)),
            white_level=float(rng.uniform(0.8, 1.0)),
            bit_depth=bit_depth,
            max_level_16bit=int(rng.choice([4095, 16383, 65535])),
        )
        if condition == "low_dose":
            return replace(
                standard,
                photons_per_px=float(math.exp(rng.uniform(math.log(30.0), math.log(150.0)))),
                read_noise=float(rng.uniform(0.01, 0.03)),
            )
        if condition == "soft":
            return replace(standard, blur_sigma_px=float(rng.uniform(1.5, 3.0)))
        if condition == "harsh":
            gamma = rng.uniform(0.4, 0.6) if rng.random() < 0.5 else rng.uniform(1.8, 2.5)
            black = float(rng.uniform(0.25, 0.45))
            return replace(
                standard,
                gamma=float(gamma),
                window_quantiles=(float(rng.uniform(0.02, 0.05)), float(rng.uniform(0.95, 0.98))),
                black_level=black,
                white_level=black + float(rng.uniform(0.1, 0.25)),
            )
        if condition == "scatter":
            return replace(
                standard,
                scatter_fraction=float(rng.uniform(0.2, 0.5)),
                scatter_sigma=float(rng.uniform(0.15, 0.4)),
                exposure_gradient=float(rng.uniform(0.1, 0.4)),
                exposure_gradient_angle_deg=float(rng.uniform(0.0, 360.0)),
            )
        return standard


@dataclass(frozen=True)
class ArtefactParams:
    """How often the non-canvas content appears; set a probability to 0 to switch a kind off."""

    #: Standard deviation of the 1/f^2 paint layer's attenuation is drawn from [0, this].
    paint_max_std: float = 0.35
    #: Mean number of bright brush strokes per patch (Poisson).
    strokes_per_patch: float = 0.6
    #: Probability that a patch lies at a tacking edge (cusping); such a patch shows a nail half the time.
    cusping_probability: float = 0.12
    #: Probability of a nail anywhere in a patch (in addition to those at tacking edges).
    nail_probability: float = 0.03
    #: Probability that a stretcher bar covers part of a patch.
    stretcher_probability: float = 0.07
    #: Probability of a thick lead-white passage over 20-80 % of the patch (hides the weave there). 0 draws
    #: nothing from the generator, so patches without it are the same as before it existed.
    lead_white_probability: float = 0.0
    #: Probability of craquelure: a network of thin cracks where paint is missing (likewise).
    craquelure_probability: float = 0.0

    def __post_init__(self) -> None:
        for name in (
            "cusping_probability",
            "nail_probability",
            "stretcher_probability",
            "lead_white_probability",
            "craquelure_probability",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
        if not (self.paint_max_std >= 0 and self.strokes_per_patch >= 0):
            raise ValueError("paint_max_std and strokes_per_patch must be >= 0")


NO_ARTEFACTS = ArtefactParams(
    paint_max_std=0.0,
    strokes_per_patch=0.0,
    cusping_probability=0.0,
    nail_probability=0.0,
    stretcher_probability=0.0,
)


def _check_weights(owner: str, name: str, pairs: tuple[tuple[str, float], ...], allowed: tuple[str, ...]) -> None:
    if not pairs:
        raise ValueError(f"{owner}.{name} must name at least one of {allowed}, got {pairs!r}")
    names = [pair[0] for pair in pairs]
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise ValueError(f"{owner}.{name} must hold (name, weight) pairs, got {pair!r}")
        option, weight = pair
        if option not in allowed:
            raise ValueError(f"{owner}.{name}: {option!r} is not one of {allowed}")
        if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight > 0):
            raise ValueError(f"{owner}.{name}: the weight of {option!r} must be a positive number, got {weight!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"{owner}.{name} names an option twice: {names}")


@dataclass(frozen=True)
class StyleMix:
    """The distribution of canvas and imaging styles a corpus is drawn from (a named setting).

    Per painting: a weave, a thread profile and the resolution it was "scanned" at; per patch: an imaging
    condition and the occlusions (lead white, craquelure). Weights are relative (they need not sum to 1).
    The labels stay exact whatever the style: the masks and densities come from the same phase fields.
    """

    name: str
    weaves: tuple[tuple[str, float], ...]
    profiles: tuple[tuple[str, float], ...]
    imaging: tuple[tuple[str, float], ...]
    lead_white_probability: float
    craquelure_probability: float
    #: Base warp densities of the canvases, threads/cm (the patches' densities are clipped to it too).
    density_range: tuple[float, float]
    #: Range of the resolution a painting is scanned at, px/cm (log-uniform); equal ends = that one value.
    #: The stored corpus stays at its own ``px_per_cm``; the image is resampled to and from this grid.
    source_px_per_cm: tuple[float, float]
    #: Log-uniform canvas densities (relative errors matter) unless False (``CLASSIC_MIX``: uniform, as before).
    log_uniform_density: bool = True

    def __post_init__(self) -> None:
        if not (isinstance(self.name, str) and self.name.isidentifier()):
            raise ValueError(
                f"StyleMix.name must be an identifier-like string (it names directories), got {self.name!r}"
            )
        _check_weights("StyleMix", "weaves", self.weaves, WEAVES)
        _check_weights("StyleMix", "profiles", self.profiles, THREAD_PROFILES)
        _check_weights("StyleMix", "imaging", self.imaging, IMAGING_CONDITIONS)
        for name in ("lead_white_probability", "craquelure_probability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"StyleMix.{name} must be a probability in [0, 1], got {value!r}")
        low, high = self.density_range
        if not 0 < low < high:
            raise ValueError(
                f"StyleMix.density_range must be (low, high) with 0 < low < high, got {self.density_range!r}"
            )
        low, high = self.source_px_per_cm
        lowest, highest = SOURCE_PX_PER_CM_LIMITS
        if not lowest <= low <= high <= highest:
            raise ValueError(
                f"StyleMix.source_px_per_cm must be (low, high) with {lowest} <= low <= high <= {highest}, "
                f"got {self.source_px_per_cm!r}"
            )

    def as_dict(self) -> dict[str, object]:
        """JSON-safe (lists, not tuples): logged with runs and recorded in ``synthetic.json``."""
        plain: dict[str, object] = json.loads(json.dumps(asdict(self)))
        return plain


@dataclass(frozen=True)
class PatchStyle:
    """The style one patch was drawn with (see :class:`StyleMix`)."""

    weave: str = "plain"
    profile: str = "elliptic"
    imaging: str = "standard"
    source_px_per_cm: float = DEFAULT_PX_PER_CM

    def __post_init__(self) -> None:
        for name, allowed in (("weave", WEAVES), ("profile", THREAD_PROFILES), ("imaging", IMAGING_CONDITIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"PatchStyle.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        lowest, highest = SOURCE_PX_PER_CM_LIMITS
        if not lowest <= self.source_px_per_cm <= highest:
            raise ValueError(
                f"PatchStyle.source_px_per_cm must be in [{lowest}, {highest}], got {self.source_px_per_cm!r}"
            )


_TRAINING_PROFILES = ("elliptic", "flat", "round", "uneven")
_TRAINING_IMAGING = ("standard", "low_dose", "soft", "harsh")

#: The generator before the style mixes, as close as it gets: plain weave, elliptic threads, standard imaging,
#: no lead white or craquelure, 6-23 threads/cm drawn uniformly, scanned at the corpus resolution. The same seed
#: gives the same bytes as ``GENERATOR_VERSION`` 1 did.
CLASSIC_MIX = StyleMix(
    name="classic",
    weaves=(("plain", 1.0),),
    profiles=(("elliptic", 1.0),),
    imaging=(("standard", 1.0),),
    lead_white_probability=0.0,
    craquelure_probability=0.0,
    density_range=CLASSIC_DENSITY_RANGE_THREADS_PER_CM,
    source_px_per_cm=(DEFAULT_PX_PER_CM, DEFAULT_PX_PER_CM),
    log_uniform_density=False,
)
#: The default: variety a model must learn to ignore. Twill, slub yarns and scatter are deliberately absent,
#: so that ``HELD_OUT_MIX`` tests generalisation to styles the model never saw.
TRAINING_MIX = StyleMix(
    name="training",
    weaves=(("plain", 0.7), ("basket", 0.3)),
    profiles=tuple((name, 1.0) for name in _TRAINING_PROFILES),
    imaging=(("standard", 0.4), ("low_dose", 0.2), ("soft", 0.2), ("harsh", 0.2)),
    lead_white_probability=0.15,
    craquelure_probability=0.15,
    density_range=DENSITY_RANGE_THREADS_PER_CM,
    source_px_per_cm=(100.0, 400.0),
)
#: A held-out-style test set: every canvas a twill, half the canvases slub yarns and half the patches
#: scattered, none of which ``TRAINING_MIX`` draws; the rest shares the training mix's options.
HELD_OUT_MIX = StyleMix(
    name="held_out",
    weaves=(("twill", 1.0),),
    profiles=(("slub", 0.5), *((name, 0.5 / len(_TRAINING_PROFILES)) for name in _TRAINING_PROFILES)),
    imaging=(("scatter", 0.5), *((name, 0.5 / len(_TRAINING_IMAGING)) for name in _TRAINING_IMAGING)),
    lead_white_probability=TRAINING_MIX.lead_white_probability,
    craquelure_probability=TRAINING_MIX.craquelure_probability,
    density_range=TRAINING_MIX.density_range,
    source_px_per_cm=TRAINING_MIX.source_px_per_cm,
)
STYLE_MIXES: dict[str, StyleMix] = {mix.name: mix for mix in (CLASSIC_MIX, TRAINING_MIX, HELD_OUT_MIX)}


@dataclass(frozen=True, eq=False)
class SyntheticPatch:
    """One generated patch. ``eq=False``: arrays do not compare as a whole; compare fields explicitly."""

    painting_id: str
    patch_id: str
    #: uint8 or uint16, H x W; bright = more attenuation (ground layer, lead white, nails).
    image: np.ndarray
    #: bool H x W: centre lines of the horizontal (weft) threads.
    h_mask: np.ndarray
    #: bool H x W: centre lines of the vertical (warp) threads.
    v_mask: np.ndarray
    px_per_cm: float
    #: Exact ground truth (module docstring): horizontal threads per cm, counted along a vertical line.
    density_h: float
    #: Exact ground truth: vertical threads per cm, counted along a horizontal line (the regression target).
    density_v: float
    canvas: CanvasParams | None = None
    imaging: ImagingParams | None = None
    #: Names of the artefacts present: some of "strokes", "nail", "stretcher", "cusping", "lead_white",
    #: "craquelure".
    artefacts: tuple[str, ...] = field(default=())
    #: The style drawn (None: the classic one, ``generate_patch(style=None)``).
    style: PatchStyle | None = None
    #: Fraction of the pixels where the occluding layers (lead white, stretcher bar, nail; not the ordinary
    #: paint) attenuate more than the full ground layer (``canvas.ground_opacity``): there the weave's
    #: contrast is a small part of the signal and mostly lost in the noise.
    occluded_share: float = 0.0


# ------------------------------------------------------------------------------------------- the patch


@dataclass(frozen=True)
class _Family:
    """One thread family evaluated on the pixel grid."""

    phase: np.ndarray  # float32, threads; centre lines at integers
    frequency: np.ndarray  # float32, |grad phase| in threads per pixel
    index: np.ndarray  # int32, nearest thread index
    offset: np.ndarray  # float32, phase - index in [-0.5, 0.5)


def generate_patch(
    rng: np.random.Generator,
    canvas: CanvasParams,
    *,
    size_px: int = DEFAULT_SIZE_PX,
    px_per_cm: float = DEFAULT_PX_PER_CM,
    imaging: ImagingParams | None = None,
    artefacts: ArtefactParams | None = None,
    painting_id: str = "painting_000",
    patch_id: str = "painting_000_00",
    style: PatchStyle | None = None,
) -> SyntheticPatch:
    """Generate one square patch of ``canvas``; all randomness comes from ``rng``.

    Args:
        rng: consumed; the same generator state gives the same patch.
        canvas: the painting's canvas; the patch draws its own densities (``density_spread``), angles,
            irregularity noise, waviness and artefacts around it.
        size_px: side of the square patch.
        px_per_cm: resolution; with the default 200, a 300 px patch is 1.5 cm.
        imaging: imaging settings; drawn at random (8 bit, ``style.imaging`` condition) when omitted.
        artefacts: artefact rates; :class:`ArtefactParams` defaults when omitted.
        style: weave, thread profile and source resolution (``style.imaging`` only matters when ``imaging``
            is omitted). None is the classic style (plain, elliptic, scanned at ``px_per_cm``) and draws
            exactly what the generator drew before styles existed.

    Returns:
        The patch, its centre-line masks and its exact densities (module docstring).
    """
    if not isinstance(size_px, int) or size_px < 16:
        raise ValueError(f"size_px must be an integer >= 16, got {size_px!r}")
    if not (math.isfinite(px_per_cm) and px_per_cm > 0):
        raise ValueError(f"px_per_cm must be a positive finite number, got {px_per_cm!r}")
    artefacts = artefacts if artefacts is not None else ArtefactParams()
    if imaging is None:
        imaging = ImagingParams.random(rng, condition=style.imaging if style is not None else "standard")
    weave, profile = (style.weave, style.profile) if style is not None else ("plain", "elliptic")
    source_px_per_cm = style.source_px_per_cm if style is not None else float(px_per_cm)

    # Centred pixel coordinates as broadcasting row/column vectors (x: column, y: row).
    centre = (size_px - 1) / 2.0
    # float32 throughout: phases of <= ~60 threads keep ~1e-5 px precision, at half the memory traffic.
    axis = np.arange(size_px, dtype=np.float32) - np.float32(centre)
    x, y = axis[None, :], axis[:, None]
    present: list[str] = []
    # The order of the draws from rng is part of the corpus' definition: the same seed, the same bytes.
    warp, weft, nail_centre, spacings = _threads(rng, canvas, x, y, px_per_cm, artefacts, present)
    attenuation, occluding = _attenuation(
        rng, canvas, warp, weft, (x, y), px_per_cm, artefacts, present, nail_centre, weave=weave, profile=profile
    )
    image = _image(rng, attenuation, imaging, source_px_per_cm / px_per_cm)
    return SyntheticPatch(
        painting_id=painting_id,
        patch_id=patch_id,
        image=image,
        h_mask=_centre_lines(weft, spacings[1]),
        v_mask=_centre_lines(warp, spacings[0]),
        px_per_cm=float(px_per_cm),
        density_h=float(px_per_cm * weft.frequency.mean(dtype=np.float64)),
        density_v=float(px_per_cm * warp.frequency.mean(dtype=np.float64)),
        canvas=canvas,
        imaging=imaging,
        artefacts=tuple(sorted(present)),
        style=style,
        occluded_share=float(np.count_nonzero(occluding > canvas.ground_opacity)) / occluding.size,
    )


def _centre_lines(family: _Family, spacing_px: float) -> np.ndarray:
    """The mask of ``family``'s centre lines: pixels within ``MASK_HALF_WIDTH_PX`` of a line, narrowed by the
    square of the ratio for a family whose nominal spacing ``spacing_px`` is below
    ``MASK_FULL_WIDTH_MIN_SPACING_PX`` (the classic corpus never is). Narrowed only in proportion to the
    spacing, the lines of the locally densest parts of a 30-35 threads/cm canvas still merge under the
    counter's dilation (measured: ~1.8 % mean count error there, against ~0.8 % with the square); at
    35 threads/cm the half width is 0.65 px, lines 1-2 px wide."""
    half_width_px = MASK_HALF_WIDTH_PX * min(1.0, spacing_px / MASK_FULL_WIDTH_MIN_SPACING_PX) ** 2
    mask: np.ndarray = np.abs(family.offset) <= half_width_px * family.frequency
    return mask


def _threads(
    rng: np.random.Generator,
    canvas: CanvasParams,
    x: np.ndarray,
    y: np.ndarray,
    px_per_cm: float,
    artefacts: ArtefactParams,
    present: list[str],
) -> tuple[_Family, _Family, tuple[float, float] | None, tuple[float, float]]:
    """The patch's warp and weft: densities and angles drawn around the canvas', waviness, and cusping near a
    tacking margin (appended to ``present``, with the nail that caused it when there is one); and the nominal
    spacings (warp, weft) in pixels."""
    size_px = x.shape[1]
    density_v, density_h = (
        float(np.clip(d * (1.0 + canvas.density_spread * rng.standard_normal()), *canvas.density_range))
        for d in (canvas.density_v_threads_per_cm, canvas.density_h_threads_per_cm)
    )
    spacing_v_px = px_per_cm / density_v
    spacing_h_px = px_per_cm / density_h
    angle_v, angle_h = np.deg2rad(rng.uniform(-canvas.max_angle_deg, canvas.max_angle_deg, size=2))

    # Coordinates perpendicular to each family: u_v grows left to right, u_h top to bottom.
    u_v = x * math.cos(angle_v) - y * math.sin(angle_v)
    u_h = y * math.cos(angle_h) + x * math.sin(angle_h)
    displacement_v = _smooth_field(rng, size_px, correlation_px=2.5 * spacing_h_px) * canvas.waviness * spacing_v_px
    displacement_h = _smooth_field(rng, size_px, correlation_px=2.5 * spacing_v_px) * canvas.waviness * spacing_h_px
    nail_centre: tuple[float, float] | None = None
    if rng.random() < artefacts.cusping_probability:
        cusp_v, cusp_h, nail_centre = _cusping(rng, x, y, size_px, px_per_cm)
        displacement_v += cusp_v
        displacement_h += cusp_h
        present.append("cusping")
        if rng.random() >= 0.5:
            nail_centre = None

    warp = _family(
        rng,
        u_v + displacement_v,
        displacement_v,
        (math.cos(angle_v), -math.sin(angle_v)),
        density_v / px_per_cm,
        canvas.irregularity_v,
        spacing_v_px,
    )
    weft = _family(
        rng,
        u_h + displacement_h,
        displacement_h,
        (math.sin(angle_h), math.cos(angle_h)),
        density_h / px_per_cm,
        canvas.irregularity_h,
        spacing_h_px,
    )
    return warp, weft, nail_centre, (spacing_v_px, spacing_h_px)


def _attenuation(
    rng: np.random.Generator,
    canvas: CanvasParams,
    warp: _Family,
    weft: _Family,
    coordinates: tuple[np.ndarray, np.ndarray],
    px_per_cm: float,
    artefacts: ArtefactParams,
    present: list[str],
    nail_centre: tuple[float, float] | None,
    *,
    weave: str = "plain",
    profile: str = "elliptic",
) -> tuple[np.ndarray, np.ndarray]:
    """X-ray attenuation: the ground layer between the threads, paint, a nail, a stretcher bar, lead white and
    craquelure (each artefact present is appended to ``present``); and the occluding layers' share of it
    (nail, stretcher bar, lead white: what :attr:`SyntheticPatch.occluded_share` measures)."""
    x, y = coordinates
    size_px = x.shape[1]
    ground = _ground_thickness(rng, canvas, warp, weft, weave=weave, profile=profile, px_per_cm=px_per_cm)
    attenuation = canvas.ground_opacity * ground
    attenuation += _paint(rng, size_px, artefacts, present)
    occluding = np.zeros_like(attenuation)
    if nail_centre is None and rng.random() < artefacts.nail_probability:
        nail_centre = (float(rng.uniform(0, size_px)), float(rng.uniform(0, size_px)))
    # Each layer is added to the attenuation in turn (float32 sums in the order they always had) and kept
    # in ``occluding`` too.
    layers: list[np.ndarray] = []
    if nail_centre is not None:
        layers.append(_nail(rng, size_px, nail_centre, px_per_cm))
        attenuation += layers[-1]
        present.append("nail")
    if rng.random() < artefacts.stretcher_probability:
        layers.append(_stretcher_bar(rng, x, y, size_px, px_per_cm))
        attenuation += layers[-1]
        present.append("stretcher")
    # Drawn only when possible at all, so that classic patches consume the generator as they always did.
    if artefacts.lead_white_probability > 0 and rng.random() < artefacts.lead_white_probability:
        layers.append(_lead_white(rng, size_px, px_per_cm))
        attenuation += layers[-1]
        present.append("lead_white")
    for layer in layers:
        occluding += layer
    if artefacts.craquelure_probability > 0 and rng.random() < artefacts.craquelure_probability:
        attenuation *= 1.0 - _craquelure(rng, size_px, px_per_cm)
        present.append("craquelure")
    return attenuation, occluding


def _smooth_field(rng: np.random.Generator, shape: int | tuple[int, int], *, correlation_px: float) -> np.ndarray:
    """Zero-mean, unit-std smooth 2-D noise (float32): a coarse random grid upsampled bicubically.

    ``shape`` is the side of a square or (rows, columns).
    """
    rows, columns = (shape, shape) if isinstance(shape, int) else shape
    cells = [max(2, math.ceil(n / max(correlation_px, 1.0))) + 2 for n in (rows, columns)]
    coarse = rng.standard_normal((cells[0], cells[1])).astype(np.float32)
    fine = cv2.resize(coarse, (columns, rows), interpolation=cv2.INTER_CUBIC)
    fine -= fine.mean()
    std = float(fine.std())
    return fine / np.float32(std) if std > 0 else fine


def _family(
    rng: np.random.Generator,
    u_eff: np.ndarray,
    displacement: np.ndarray,
    grad_u: tuple[float, float],
    frequency_per_px: float,
    irregularity: float,
    spacing_px: float,
) -> _Family:
    """Phase of a family: ``phi = Phi(u_eff) + phi0`` with ``Phi' = f0 (1 + eps)`` (module docstring).

    ``grad_u`` is the gradient (d/dx, d/dy) of the undisplaced coordinate; the displacement's gradient is
    added numerically, so ``|grad phi| = f(u_eff) |grad u_eff|`` is exact up to the finite difference of a
    field that varies over tens of pixels.
    """
    low = float(u_eff.min()) - 2.0
    n_grid = math.ceil(float(u_eff.max()) + 2.0 - low) + 2
    # Low-pass noise correlated over ~1.5 threads: neighbouring gaps are alike, distant ones independent.
    noise = gaussian_filter1d(rng.standard_normal(n_grid), sigma=1.5 * spacing_px, mode="reflect")
    noise = (noise - noise.mean()) / max(float(noise.std()), 1e-12)
    local_frequency = frequency_per_px * np.clip(1.0 + irregularity * noise, 0.5, 1.5)
    step = 0.5 * (local_frequency[1:] + local_frequency[:-1])  # trapezoid rule on the 1 px grid
    cumulative = (np.concatenate(([0.0], np.cumsum(step))) + rng.uniform(0.0, 1.0)).astype(np.float32)
    # Linear interpolation on the uniform grid (np.interp's binary search is ~10x slower here).
    position = u_eff - np.float32(low)
    cell = position.astype(np.int32)
    weight = position - cell.astype(np.float32)
    phase = cumulative[cell] + weight * step.astype(np.float32)[cell]
    slope = np.diff(local_frequency).astype(np.float32)
    frequency_along_u = local_frequency.astype(np.float32)[cell] + weight * slope[cell]
    # Central differences of the (float32, smooth) displacement; Sobel with ksize=1 is [-1, 0, 1].
    d_dx = cv2.Sobel(displacement, cv2.CV_32F, 1, 0, ksize=1, borderType=cv2.BORDER_REPLICATE)
    d_dy = cv2.Sobel(displacement, cv2.CV_32F, 0, 1, ksize=1, borderType=cv2.BORDER_REPLICATE)
    grad_x = np.float32(grad_u[0]) + np.float32(0.5) * d_dx
    grad_y = np.float32(grad_u[1]) + np.float32(0.5) * d_dy
    frequency = frequency_along_u * np.sqrt(grad_x * grad_x + grad_y * grad_y)
    index = np.floor(phase + 0.5)
    return _Family(
        phase=phase, frequency=frequency, index=index.astype(np.int32), offset=(phase - index).astype(np.float32)
    )


def _ground_thickness(
    rng: np.random.Generator,
    canvas: CanvasParams,
    warp: _Family,
    weft: _Family,
    *,
    weave: str = "plain",
    profile: str = "elliptic",
    px_per_cm: float = DEFAULT_PX_PER_CM,
) -> np.ndarray:
    """Relative ground-layer thickness in [0, 1]: 1 in the interstices, lowest on crossing threads.

    ``profile`` shapes the threads (``THREAD_PROFILES``): ``elliptic`` cross-sections of the canvas's duty
    cycle; ``flat`` flat-topped (super-elliptic, exponent 4) and wide (duty 0.8-0.92); ``round`` narrow
    circular threads (duty 0.3-0.45); ``uneven`` strong thread-to-thread variation of width and thickness,
    ``DOUBLED_THREAD_FRACTION`` of the slots holding two thin yarns side by side (one thread for counting:
    one centre line) and ``MISSING_THREAD_FRACTION`` of them empty. A *missing* thread is not drawn (the
    image shows a gap filled by the ground) but its slot still counts: its centre line stays in the mask and
    in the density, as the slot period is what the weave (and the FFT) shows. ``slub``: thickness and width
    vary smoothly along each thread, with thicker slubs a few mm long.
    """
    heights = []
    for family, other, duty, sign in ((warp, weft, canvas.duty_cycle_v, 1.0), (weft, warp, canvas.duty_cycle_h, -1.0)):
        first = int(family.index.min())
        n_threads = int(family.index.max()) - first + 1
        duty = _profile_duty(duty, profile)
        # Thread-to-thread variation of width (duty cycle) and of yarn thickness.
        widths = np.clip(duty + canvas.duty_cycle_jitter * rng.standard_normal(n_threads), 0.2, 0.95)
        thickness = np.clip(1.0 + 0.1 * rng.standard_normal(n_threads), 0.7, 1.3)
        doubled: np.ndarray | None = None
        along: np.ndarray | None = None
        if profile == "uneven":
            widths = np.clip(widths * np.exp(0.25 * rng.standard_normal(n_threads)), 0.2, 0.95)
            thickness = np.clip(thickness * np.exp(0.35 * rng.standard_normal(n_threads)), 0.4, 2.0)
            kind = rng.random(n_threads)
            doubled = kind < DOUBLED_THREAD_FRACTION
            thickness = np.where(kind >= 1.0 - MISSING_THREAD_FRACTION, 0.0, thickness)
        elif profile == "slub":
            along = _slubs(rng, family, other, first, n_threads, px_per_cm)
        heights.append(
            _thread_height(
                family,
                other,
                widths,
                thickness,
                first,
                canvas.weave_amplitude,
                sign,
                weave=weave,
                exponent=4.0 if profile == "flat" else 2.0,
                doubled=doubled,
                along=along,
            )
        )
    return _ground_from_heights(heights[0], heights[1], canvas.weave_amplitude)


def _profile_duty(duty: float, profile: str) -> float:
    """The mean thread width of ``profile`` for a canvas of duty cycle ``duty`` (drawn in 0.5-0.85): mapped
    linearly onto the profile's own range, so that wider canvases stay wider."""
    if profile == "flat":
        return 0.8 + (duty - 0.5) * (0.12 / 0.35)
    if profile == "round":
        return 0.3 + (duty - 0.5) * (0.15 / 0.35)
    return duty


def _slubs(
    rng: np.random.Generator, family: _Family, other: _Family, first: int, n_threads: int, px_per_cm: float
) -> np.ndarray:
    """Relative extra yarn thickness along each thread of ``family`` (float32, >= 0, per pixel).

    Each thread gets independent random values every 2-5 mm along its length (measured in threads of the
    other family, whose phase runs along it); values above ~0.8 standard deviations become slubs, and a
    smoothstep between cells makes the thickness vary smoothly.
    """
    density_other = float(other.frequency.mean()) * px_per_cm
    cell_threads = max(1.0, float(rng.uniform(0.2, 0.5)) * density_other)
    start = float(other.phase.min())
    n_cells = math.ceil((float(other.phase.max()) - start) / cell_threads) + 2
    values = (1.5 * np.clip(rng.standard_normal((n_threads, n_cells)) - 0.8, 0.0, None)).astype(np.float32)
    position = (other.phase - np.float32(start)) / np.float32(cell_threads)
    cell = position.astype(np.int32)
    t = position - cell
    t = t * t * (3.0 - 2.0 * t)  # smoothstep: continuous slope at the cell borders
    local = family.index - first
    bumps: np.ndarray = (1.0 - t) * values[local, cell] + t * values[local, cell + 1]
    return bumps


def _warp_over(warp_index: np.ndarray, weft_index: np.ndarray, weave: str) -> np.ndarray:
    """True where warp thread k passes over weft thread n: ``plain`` k + n even; ``basket`` (2/2 hopsack, pairs
    of threads woven as one) k//2 + n//2 even; ``twill`` (2/2) (k + n) mod 4 < 2, which steps by one thread
    per pick and draws diagonal ribs. Floor division and ``& 3`` are right for negative indices too."""
    if weave == "plain":
        return ((warp_index + weft_index) & 1) == 0
    if weave == "basket":
        return (((warp_index >> 1) + (weft_index >> 1)) & 1) == 0
    if weave == "twill":
        return ((warp_index + weft_index) & 3) < 2
    raise ValueError(f"weave must be one of {WEAVES}, got {weave!r}")


def _thread_height(
    family: _Family,
    other: _Family,
    widths: np.ndarray,
    thickness: np.ndarray,
    first: int,
    weave_amplitude: float,
    sign: float,
    *,
    weave: str = "plain",
    exponent: float = 2.0,
    doubled: np.ndarray | None = None,
    along: np.ndarray | None = None,
) -> np.ndarray:
    """Height of ``family``'s threads (super-elliptic cross-sections of ``exponent``, 2 = elliptic, woven with
    ``other`` in ``weave``); thread ``first + i`` has relative width ``widths[i]`` and yarn thickness
    ``thickness[i]``, holds two thin yarns where ``doubled[i]``, and is ``1 + along`` (per pixel) thicker and
    ``1 + along / 2`` wider (slubs). ``sign`` is +1 for the warp, -1 for the weft. The defaults are the
    classic plain-woven elliptic threads (also :mod:`.canvas`'s)."""
    local = family.index - first
    if along is None:
        inverse_half_width = (2.0 / widths[local]).astype(np.float32)
    else:
        inverse_half_width = (2.0 / np.minimum(widths[local] * (1.0 + 0.5 * along), 0.98)).astype(np.float32)
    if exponent == 2.0:
        profile = np.sqrt(np.clip(1.0 - (family.offset * inverse_half_width) ** 2, 0.0, None))
    else:
        across = np.abs(family.offset * inverse_half_width)
        profile = np.clip(1.0 - across**exponent, 0.0, None) ** np.float32(1.0 / exponent)
    if doubled is not None and doubled.any():
        # Two yarns of half the slot's width side by side, each thinner than a single thread.
        halves = np.abs(family.offset * inverse_half_width) * 2.0 - 1.0
        pair = np.float32(0.75) * np.sqrt(np.clip(1.0 - halves * halves, 0.0, None))
        profile = np.where(doubled[local], pair, profile)
    if weave == "plain":
        # Plain weave: warp k is over weft n where k + n is even. Along warp k the height follows
        # (-1)^k cos(pi phi_weft) = (-1)^(k + n) cos(pi (phi_weft - n)); the weft has the opposite sign.
        parity = (1 - 2 * ((family.index + other.index) & 1)).astype(np.float32)
        undulation = np.float32(sign) * parity * np.cos(np.float32(np.pi) * other.offset)
    else:
        # +1 where this family is over at crossing n, -1 under; between crossing n and its neighbour m the
        # height blends the two with weight w = (1 + cos(pi * offset)) / 2 (1 at n, 1/2 half-way), which for
        # the plain weave (s_m = -s_n) is the cos(pi * offset) above, and stays up along a float.
        neighbour = other.index + np.where(other.offset >= 0, 1, -1).astype(np.int32)
        here, there = (
            _warp_over(family.index, n, weave) if sign > 0 else ~_warp_over(n, family.index, weave)
            for n in (other.index, neighbour)
        )
        weight = np.float32(0.5) * (np.float32(1.0) + np.cos(np.float32(np.pi) * other.offset))
        undulation = weight * (2.0 * here - 1.0).astype(np.float32) + (1.0 - weight) * (2.0 * there - 1.0).astype(
            np.float32
        )
    scale = thickness[local].astype(np.float32)
    if along is not None:
        scale = scale * (1.0 + along)
    height: np.ndarray = scale * profile * (1.0 + weave_amplitude * undulation)
    return height


def _ground_from_heights(warp_height: np.ndarray, weft_height: np.ndarray, weave_amplitude: float) -> np.ndarray:
    """Relative ground thickness: the ground fills up to a common level above the higher of the two families."""
    surface = np.maximum(warp_height, weft_height)
    top = 1.3 * (1.0 + weave_amplitude)
    ground: np.ndarray = 1.0 - surface / top
    return ground


def _cusping(
    rng: np.random.Generator,
    x: np.ndarray,
    y: np.ndarray,
    size_px: int,
    px_per_cm: float,
) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Scalloped distortion near a tacking edge; returns displacements (warp, weft) and a nail position.

    The canvas was pulled towards nails spaced a few cm apart along the edge: threads parallel to the
    edge are drawn towards it most at the nails (garlands), threads running into the edge fan towards the
    nails. Both effects decay away from the edge over a few mm.
    """
    half = (size_px - 1) / 2.0
    side = int(rng.integers(4))  # 0 left, 1 right, 2 top, 3 bottom
    # Distance from the edge (the edge lies at or just outside the patch border) and position along it.
    edge_offset = rng.uniform(0.0, 0.15) * size_px
    along = y if side < 2 else x
    across = (x + half if side == 0 else half - x) if side < 2 else (y + half if side == 2 else half - y)
    distance = across + edge_offset
    decay_px = rng.uniform(0.25, 0.5) * px_per_cm
    nail_spacing_px = rng.uniform(3.0, 6.0) * px_per_cm
    nail_along = rng.uniform(-half, half)
    amplitude_px = rng.uniform(0.04, 0.1) * decay_px
    envelope = np.exp(-distance / decay_px)
    garland = amplitude_px * envelope * (0.5 + 0.5 * np.cos(2 * np.pi * (along - nail_along) / nail_spacing_px))
    fan = 0.5 * amplitude_px * envelope * np.sin(2 * np.pi * (along - nail_along) / nail_spacing_px)
    toward_edge = -1.0 if side in (0, 2) else 1.0
    parallel = toward_edge * garland
    if side < 2:  # vertical edge: the warp runs parallel to it
        displacement_v, displacement_h = parallel, fan
    else:
        displacement_v, displacement_h = fan, parallel
    nail_across = rng.uniform(0.05, 0.3) * px_per_cm - edge_offset
    if side < 2:
        col = nail_across if side == 0 else size_px - 1 - nail_across
        nail = (float(nail_along + half), float(col))
    else:
        row = nail_across if side == 2 else size_px - 1 - nail_across
        nail = (float(row), float(nail_along + half))
    return displacement_v, displacement_h, nail


def _paint(rng: np.random.Generator, size_px: int, artefacts: ArtefactParams, present: list[str]) -> np.ndarray:
    """Paint attenuation: a 1/f^2 (power) low-frequency layer plus sparse bright brush strokes."""
    paint = np.zeros((size_px, size_px), np.float32)
    std = rng.uniform(0.0, artefacts.paint_max_std)
    if std > 0:
        # Synthesised on a 4x coarser grid (the field has nothing above 1/40 cycles/px) and upsampled.
        coarse_px = max(8, size_px // 4)
        white = rng.standard_normal((coarse_px, coarse_px))
        ky = np.fft.fftfreq(coarse_px)[:, None]
        kx = np.fft.rfftfreq(coarse_px)[None, :]
        radius = np.hypot(ky, kx) * (coarse_px / size_px)  # cycles per full-resolution pixel
        # Amplitude 1/k (power 1/k^2), rolled off above ~1/40 cycles/px (5 /cm at 200 px/cm) so that the
        # paint stays mostly below the canvas band; the constant term is dropped.
        gain = np.where(radius > 0, 1.0 / np.maximum(radius, 1.0 / size_px), 0.0) * np.exp(-((radius * 40.0) ** 2))
        coarse = np.fft.irfft2(np.fft.rfft2(white) * gain, s=(coarse_px, coarse_px)).astype(np.float32)
        field_: np.ndarray = cv2.resize(coarse, (size_px, size_px), interpolation=cv2.INTER_CUBIC)
        field_ = field_ / np.float32(max(float(field_.std()), 1e-12))
        # Paint thickness is positive; the offset only shifts the attenuation (the display window removes it).
        paint += np.float32(std) * field_ + np.float32(2.0 * std)
    n_strokes = int(rng.poisson(artefacts.strokes_per_patch))
    if n_strokes:
        strokes: np.ndarray = np.zeros((size_px, size_px), np.float32)
        for _ in range(n_strokes):
            start = rng.uniform(-0.2, 1.2, size=2) * size_px
            direction = rng.uniform(0, 2 * np.pi)
            length = rng.uniform(0.3, 1.0) * size_px
            bend = rng.normal(0.0, 0.3)
            t = np.linspace(0.0, 1.0, 12)[:, None]
            angles = direction + bend * t
            points = start + length * t * np.hstack((np.cos(angles), np.sin(angles)))
            thickness = int(rng.integers(6, 40))
            cv2.polylines(
                strokes,
                [np.round(points).astype(np.int32)],
                isClosed=False,
                color=float(rng.uniform(0.2, 0.8)),
                thickness=thickness,
                lineType=cv2.LINE_AA,
            )
        strokes = cv2.GaussianBlur(strokes, (0, 0), sigmaX=float(rng.uniform(2.0, 6.0)))
        paint += strokes
        present.append("strokes")
    return paint


def _nail(
    rng: np.random.Generator, shape: int | tuple[int, int], centre: tuple[float, float], px_per_cm: float
) -> np.ndarray:
    """An iron nail head: a nearly opaque disc with a rust halo; ``centre`` is (row, column) in ``shape``."""
    layer: np.ndarray = np.zeros((shape, shape) if isinstance(shape, int) else shape, np.float32)
    radius = round(rng.uniform(0.05, 0.12) * px_per_cm)
    point = (round(centre[1]), round(centre[0]))
    cv2.circle(layer, point, int(radius * rng.uniform(1.3, 1.8)), color=0.6, thickness=-1, lineType=cv2.LINE_AA)
    layer = cv2.GaussianBlur(layer, (0, 0), sigmaX=radius * 0.4)
    cv2.circle(layer, point, radius, color=float(rng.uniform(3.0, 5.0)), thickness=-1, lineType=cv2.LINE_AA)
    return cv2.GaussianBlur(layer, (0, 0), sigmaX=1.0)


def _stretcher_bar(
    rng: np.random.Generator, x: np.ndarray, y: np.ndarray, size_px: int, px_per_cm: float
) -> np.ndarray:
    """A wooden stretcher bar behind part of the patch: a soft-edged bright band with wood grain."""
    vertical = bool(rng.integers(2))
    across = x if vertical else y
    along = y if vertical else x
    edge = rng.uniform(-0.4, 0.3) * size_px * rng.choice([-1.0, 1.0])
    direction = rng.choice([-1.0, 1.0])
    # The bar lies a few mm behind the canvas, so its edge is blurred (geometric unsharpness).
    edge_width_px = rng.uniform(0.03, 0.12) * px_per_cm
    grain_period_px = rng.uniform(0.1, 0.4) * px_per_cm
    strength = rng.uniform(0.4, 1.2)
    band = 0.5 * (1.0 + np.tanh(direction * (across - edge) / edge_width_px))
    return _wood(band, across, along, grain_period_px, strength, px_per_cm)


def _wood(
    band: np.ndarray,
    across: np.ndarray,
    along: np.ndarray,
    grain_period_px: float,
    strength: float,
    px_per_cm: float,
) -> np.ndarray:
    """Attenuation of wood covering ``band`` (0-1): ``strength`` with grain, stripes along the wood a little
    wavy (growth rings ``grain_period_px`` apart)."""
    grain = np.sin(2 * np.pi * (across + 3.0 * np.sin(along / (0.4 * px_per_cm))) / grain_period_px)
    return (strength * band * (1.0 + 0.08 * grain)).astype(np.float32)


def _lead_white(rng: np.random.Generator, size_px: int, px_per_cm: float) -> np.ndarray:
    """A thick lead-white passage: attenuation 1-3 (smooth, with a little brushy texture) over 20-80 % of the
    patch, soft-edged. Its transmission is a few % of the canvas's, so photon noise drowns the weave there."""
    coverage = float(rng.uniform(0.2, 0.8))
    shape = _smooth_field(rng, size_px, correlation_px=float(rng.uniform(0.3, 0.8)) * size_px)
    threshold = float(np.quantile(shape, 1.0 - coverage))
    edge = float(rng.uniform(0.05, 0.25))  # in units of the field's std: soft, a few px to ~1 mm
    cover = 0.5 * (1.0 + np.tanh((shape - np.float32(threshold)) / np.float32(edge)))
    texture = _smooth_field(rng, size_px, correlation_px=0.05 * px_per_cm)
    strength = float(rng.uniform(1.0, 3.0))
    layer: np.ndarray = (np.float32(strength) * cover * (1.0 + np.float32(0.05) * texture)).astype(np.float32)
    return layer


def _craquelure(rng: np.random.Generator, size_px: int, px_per_cm: float) -> np.ndarray:
    """Fraction (0-1) of the attenuation missing at each pixel: cracks 1-3 px wide along the borders of random
    polygonal cells 2-6 mm across (a Voronoi diagram, gently warped), where paint and ground have flaked off
    by 20-50 %."""
    cell_px = float(rng.uniform(0.2, 0.6)) * px_per_cm
    margin = cell_px
    n_cells = max(3, round((size_px + 2 * margin) ** 2 / cell_px**2))
    seeds = rng.uniform(-margin, size_px + margin, size=(n_cells, 2)).astype(np.float32)
    width_px = float(rng.uniform(1.0, 3.0))
    depth = float(rng.uniform(0.2, 0.5))
    warp_px = 0.08 * cell_px
    axis = np.arange(size_px, dtype=np.float32)
    rows = axis[:, None] + np.float32(warp_px) * _smooth_field(rng, size_px, correlation_px=0.5 * cell_px)
    columns = axis[None, :] + np.float32(warp_px) * _smooth_field(rng, size_px, correlation_px=0.5 * cell_px)
    nearest = np.full((size_px, size_px), np.inf, np.float32)
    second = np.full((size_px, size_px), np.inf, np.float32)
    for row, column in seeds:
        distance = np.sqrt((rows - row) ** 2 + (columns - column) ** 2)
        second = np.minimum(second, np.maximum(nearest, distance))
        nearest = np.minimum(nearest, distance)
    # Half the difference of the two nearest seeds' distances is the distance to the cell border (exactly so
    # for a straight border); an antialiased line of ``width_px``.
    border = 0.5 * (second - nearest)
    crack = np.clip(np.float32(0.5 * width_px + 0.5) - border, 0.0, 1.0)
    missing: np.ndarray = (np.float32(depth) * crack).astype(np.float32)
    return missing


def _image(
    rng: np.random.Generator, attenuation: np.ndarray, imaging: ImagingParams, source_scale: float = 1.0
) -> np.ndarray:
    """Attenuation -> blurred, noisy transmission -> windowed, gamma-corrected, quantised image.

    With ``source_scale`` != 1 the painting is "scanned" at ``source_scale`` x the corpus resolution: the
    attenuation is resampled to that grid (area interpolation when shrinking, bicubic when enlarging), imaged
    there (blur and noise are per source pixel) and the stored image resampled back to the corpus grid as the
    preprocessing resamples (area when shrinking, bilinear when enlarging), rounded to the same dtype.
    """
    size = attenuation.shape
    source = (max(16, round(size[0] * source_scale)), max(16, round(size[1] * source_scale)))
    resampled = source != size
    if resampled:
        enlarge = source[0] > size[0]
        attenuation = cv2.resize(
            attenuation, (source[1], source[0]), interpolation=cv2.INTER_CUBIC if enlarge else cv2.INTER_AREA
        )
    shown = _exposure(rng, attenuation, imaging)
    # Quantiles of every other pixel in each direction: the same window to ~0.1 %, a quarter of the work.
    low, high = _window(shown[::2, ::2], imaging)
    image = _quantise(shown, low, high, imaging)
    if not resampled:
        return image
    back = cv2.resize(
        image.astype(np.float32),
        (size[1], size[0]),
        interpolation=cv2.INTER_LINEAR if size[0] > source[0] else cv2.INTER_AREA,
    )
    top = 255 if image.dtype == np.uint8 else 65535
    stored: np.ndarray = np.clip(np.round(back), 0, top).astype(image.dtype)
    return stored


def _exposure(rng: np.random.Generator, attenuation: np.ndarray, imaging: ImagingParams) -> np.ndarray:
    """Attenuation -> blurred, scattered, noisy transmission -> the measured attenuation (float32)."""
    transmitted = np.exp(-attenuation.astype(np.float32))
    if imaging.blur_sigma_px > 0:
        transmitted = cv2.GaussianBlur(transmitted, (0, 0), sigmaX=imaging.blur_sigma_px)
    if imaging.scatter_fraction > 0:
        transmitted = transmitted + np.float32(imaging.scatter_fraction) * _glare(transmitted, imaging.scatter_sigma)
    if imaging.exposure_gradient > 0:
        rows, columns = transmitted.shape
        angle = math.radians(imaging.exposure_gradient_angle_deg)
        y = (np.arange(rows, dtype=np.float32)[:, None] / max(rows - 1, 1)) - np.float32(0.5)
        x = (np.arange(columns, dtype=np.float32)[None, :] / max(columns - 1, 1)) - np.float32(0.5)
        ramp = np.float32(math.cos(angle)) * x + np.float32(math.sin(angle)) * y
        transmitted = transmitted * (np.float32(1.0) + np.float32(imaging.exposure_gradient) * ramp)
    # Photon (Poisson) noise in its Gaussian form, variance = expected count: exact enough above ~20
    # photons and 5x faster than drawing Poisson variates; plus Gaussian read noise.
    photons = np.float32(imaging.photons_per_px)
    shot = np.sqrt(transmitted / photons) * rng.standard_normal(transmitted.shape, dtype=np.float32)
    read = np.float32(imaging.read_noise) * rng.standard_normal(transmitted.shape, dtype=np.float32)
    measured = transmitted + shot + read
    # Back to attenuation (what a positive radiograph shows bright); clamp where no photon arrived.
    shown: np.ndarray = -np.log(np.maximum(measured, np.float32(0.5) / photons))
    return shown


def _glare(transmitted: np.ndarray, sigma: float) -> np.ndarray:
    """``transmitted`` blurred by a Gaussian ``sigma`` x the image side wide (reflecting at the borders).
    Computed on an 8x coarser grid: the result has nothing finer than ~sigma anyway."""
    rows, columns = transmitted.shape
    small = (max(4, columns // 8), max(4, rows // 8))
    coarse = cv2.resize(transmitted, small, interpolation=cv2.INTER_AREA)
    coarse = cv2.GaussianBlur(coarse, (0, 0), sigmaX=sigma * small[0], borderType=cv2.BORDER_REFLECT)
    glare: np.ndarray = cv2.resize(coarse, (columns, rows), interpolation=cv2.INTER_LINEAR)
    return glare


def _window(sample: np.ndarray, imaging: ImagingParams) -> tuple[float, float]:
    """The display window: the attenuations at ``imaging.window_quantiles`` of ``sample``."""
    low_q, high_q = imaging.window_quantiles
    flat = sample.ravel()
    n = flat.size
    ranks = (round(low_q * (n - 1)), round(high_q * (n - 1)))
    partitioned = np.partition(flat, ranks)
    return float(partitioned[ranks[0]]), float(partitioned[ranks[1]])


def _quantise(shown: np.ndarray, low: float, high: float, imaging: ImagingParams) -> np.ndarray:
    """Window ``[low, high]`` -> gamma -> output levels -> uint8 or uint16."""
    scaled = np.clip((shown - np.float32(low)) / np.float32(max(high - low, 1e-9)), 0.0, 1.0)
    scaled **= np.float32(imaging.gamma)
    levels = imaging.black_level + (imaging.white_level - imaging.black_level) * scaled
    if imaging.bit_depth == 8:
        return np.round(levels * 255.0).astype(np.uint8)
    return np.round(levels * imaging.max_level_16bit).astype(np.uint16)


# ------------------------------------------------------------------------------------------ the corpus


def patches_per_painting(rng: np.random.Generator, n_paintings: int, n_patches: int) -> list[int]:
    """Uneven but deterministic patch counts, each >= 1, summing to ``n_patches``."""
    if n_paintings < 1 or n_patches < n_paintings:
        raise ValueError(f"need 1 <= n_paintings <= n_patches, got n_paintings={n_paintings}, n_patches={n_patches}")
    weights = rng.lognormal(0.0, 0.7, size=n_paintings)
    extra = n_patches - n_paintings
    share = extra * weights / weights.sum()
    counts = np.floor(share).astype(int)
    # Largest remainder; ties broken by painting order (argsort is stable).
    order = np.argsort(-(share - counts), kind="stable")
    counts[order[: extra - int(counts.sum())]] += 1
    return [int(c) + 1 for c in counts]


def generate_corpus(
    n_paintings: int = DEFAULT_N_PAINTINGS,
    n_patches: int = DEFAULT_N_PATCHES,
    seed: int = 0,
    *,
    size_px: int = DEFAULT_SIZE_PX,
    px_per_cm: float = DEFAULT_PX_PER_CM,
    artefacts: ArtefactParams | None = None,
    mix: StyleMix = TRAINING_MIX,
) -> Iterator[SyntheticPatch]:
    """Yield the corpus's patches, painting by painting; the same arguments give identical arrays.

    Each painting draws its canvas from its own child of ``SeedSequence(seed)``, and each patch from a
    child of its painting's, so a patch does not depend on how many patches came before it. The styles come
    from one more child of the painting's (spawned after the others, so the canvas and patch streams are those
    of the classic generator): first the painting's weave, profile and source resolution, then each patch's
    imaging condition. Every ``SIXTEEN_BIT_EVERY``-th painting is imaged at 16 bit, the rest at 8 bit.
    ``artefacts`` None means the :class:`ArtefactParams` defaults with the mix's lead-white and craquelure
    probabilities; an explicit one is used as given.
    """
    if artefacts is None:
        artefacts = replace(
            ArtefactParams(),
            lead_white_probability=mix.lead_white_probability,
            craquelure_probability=mix.craquelure_probability,
        )
    root = np.random.SeedSequence(seed)
    allocation_seq, paintings_seq = root.spawn(2)
    counts = patches_per_painting(np.random.default_rng(allocation_seq), n_paintings, n_patches)
    for painting, (painting_seq, count) in enumerate(zip(paintings_seq.spawn(n_paintings), counts, strict=True)):
        canvas_seq, *patch_seqs = painting_seq.spawn(count + 1)
        style_rng = np.random.default_rng(painting_seq.spawn(1)[0])
        canvas = CanvasParams.random(
            np.random.default_rng(canvas_seq), density_range=mix.density_range, log_uniform=mix.log_uniform_density
        )
        weave = _choose(style_rng, mix.weaves)
        profile = _choose(style_rng, mix.profiles)
        low, high = mix.source_px_per_cm
        source_px_per_cm = low if low == high else float(math.exp(style_rng.uniform(math.log(low), math.log(high))))
        bit_depth = 16 if painting % SIXTEEN_BIT_EVERY == SIXTEEN_BIT_EVERY - 1 else 8
        painting_id = f"painting_{painting:03d}"
        for number, patch_seq in enumerate(patch_seqs):
            rng = np.random.default_rng(patch_seq)
            style = PatchStyle(weave, profile, _choose(style_rng, mix.imaging), source_px_per_cm)
            yield generate_patch(
                rng,
                canvas,
                size_px=size_px,
                px_per_cm=px_per_cm,
                imaging=ImagingParams.random(rng, bit_depth=bit_depth, condition=style.imaging),
                artefacts=artefacts,
                painting_id=painting_id,
                patch_id=f"{painting_id}_{number:02d}",
                style=style,
            )


def _choose(rng: np.random.Generator, weighted: tuple[tuple[str, float], ...]) -> str:
    """One name of ``weighted`` (name, weight) pairs; always one draw, even for a single option, so that the
    draw order does not depend on the mix's shape."""
    weights = np.array([weight for _, weight in weighted], dtype=np.float64)
    cumulative = np.cumsum(weights / weights.sum())
    index = int(np.searchsorted(cumulative, rng.random(), side="right"))
    return weighted[min(index, len(weighted) - 1)][0]


def write_corpus(
    out_dir: Path,
    *,
    n_paintings: int = DEFAULT_N_PAINTINGS,
    n_patches: int = DEFAULT_N_PATCHES,
    seed: int = 0,
    mix: StyleMix = TRAINING_MIX,
    cache: bool = False,
) -> Path:
    """Write the corpus in the raw-corpus format (docs/DESIGN.md §2.1) to ``out_dir``; return ``out_dir``.

    Atomic: the corpus is built in a hidden sibling directory and renamed into place, so ``out_dir`` either
    does not exist or holds a complete corpus. If ``out_dir`` already holds a complete corpus written with
    the same settings (the style mix included) and its files are as written (:data:`CONTENT_NAME`), it is
    returned untouched; otherwise ``ValueError`` names what differs, or, for a ``cache`` (the corpus the
    preparation makes for itself), a warning says so and the corpus is written again. The same arguments give
    byte-identical files. Besides ``index.csv``, ``styles.csv`` records each patch's style.
    """
    out_dir = Path(out_dir)
    settings = {
        "generator_version": GENERATOR_VERSION,
        "n_paintings": n_paintings,
        "n_patches": n_patches,
        "seed": seed,
        "size_px": DEFAULT_SIZE_PX,
        "px_per_cm": DEFAULT_PX_PER_CM,
        "mix": mix.as_dict(),
    }
    if _existing_corpus(out_dir, settings, cache=cache):
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; the corpus is ordinary data
        with diskspace.writing(out_dir.parent, "the synthetic corpus"):
            _write_files(staging, generate_corpus(n_paintings, n_patches, seed, mix=mix), n_patches)
            (staging / SETTINGS_NAME).write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
            (staging / CONTENT_NAME).write_text(content_digest(staging) + "\n")
        try:
            os.replace(staging, out_dir)  # atomic; fails if out_dir is a non-empty directory
        except OSError:
            # Another process may have finished the same corpus first; that one is as good as ours.
            if _existing_corpus(out_dir, settings, cache=cache):
                return out_dir
            raise
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out_dir


def _existing_corpus(out_dir: Path, settings: Mapping[str, object], *, cache: bool = False) -> bool:
    """True if ``out_dir`` is a complete corpus with ``settings`` and its files as written; False if it is absent
    or empty, or (``cache``) was set aside to be written again.

    Raises:
        ValueError: (not ``cache``) incomplete, other settings, or files changed since they were written.
    """
    if not out_dir.exists() or (out_dir.is_dir() and not any(out_dir.iterdir())):
        return False
    problem = _corpus_problem(out_dir, settings, cache=cache)
    if problem is None:
        return True
    if not cache:
        raise ValueError(problem)
    log.warning("%s: writing it again", problem)
    _discard(out_dir)
    return False


def _corpus_problem(out_dir: Path, settings: Mapping[str, object], *, cache: bool) -> str | None:
    """Why ``out_dir`` is not the corpus of ``settings`` as written, or None."""
    settings_path = out_dir / SETTINGS_NAME
    if not (settings_path.is_file() and (out_dir / INDEX_NAME).is_file()):
        return (
            f"{out_dir} exists but is not a complete synthetic corpus (no {INDEX_NAME} / {SETTINGS_NAME}); "
            "remove it or choose another directory"
        )
    try:
        existing = json.loads(settings_path.read_text())
    except (ValueError, UnicodeDecodeError):
        existing = None
    if existing != settings:
        existing_mix = existing.get("mix", {}).get("name", "classic (generator version 1)") if existing else "?"
        wanted = settings.get("mix")
        wanted_mix = wanted.get("name") if isinstance(wanted, dict) else wanted
        return (
            f"{out_dir} holds a synthetic corpus with settings {existing} (style mix {existing_mix!r}), "
            f"expected {settings} (style mix {wanted_mix!r})"
        )
    recorded_path = out_dir / CONTENT_NAME
    if not recorded_path.is_file():  # written before the digest existed: a cache is rebuilt, a user's kept
        return f"{out_dir} has no {CONTENT_NAME} to check its files against" if cache else None
    if recorded_path.read_text().strip() != content_digest(out_dir):
        return (
            f"the synthetic corpus {out_dir} changed since it was written (its files' SHA-256 differs from "
            f"{CONTENT_NAME}): a file is damaged, missing or added"
        )
    return None


def content_digest(directory: Path) -> str:
    """SHA-256 of every file under ``directory`` but :data:`CONTENT_NAME`, names and bytes, in name order."""
    hasher = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != CONTENT_NAME):
        hasher.update(path.relative_to(directory).as_posix().encode() + b"\0")
        hasher.update(path.read_bytes())
    return hasher.hexdigest()


def _discard(directory: Path) -> None:
    """Remove ``directory``: renamed aside first (atomic), so no other process reads it half removed."""
    aside = directory.with_name(f".{directory.name}.discarded-{os.getpid()}")
    try:
        os.replace(directory, aside)
    except FileNotFoundError:  # another process set it aside first
        return
    shutil.rmtree(aside, ignore_errors=True)


#: A corpus index row, and a styles row (the columns of ``INDEX_COLUMNS`` and ``STYLES_COLUMNS``).
_Row = tuple[str, ...]


def _write_files(directory: Path, patches: Iterator[SyntheticPatch], total: int) -> None:
    (directory / "images").mkdir()
    (directory / "masks").mkdir()
    rows: list[_Row] = []
    styles: list[_Row] = []
    with Ticker("preprocessing", "synthetic patches", total, every_s=10.0) as ticker:
        for patch in patches:
            _write_patch(directory, patch, rows, styles)
            ticker.advance()
    for name, columns, table in ((INDEX_NAME, INDEX_COLUMNS, rows), (STYLES_NAME, STYLES_COLUMNS, styles)):
        with open(directory / name, "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(columns)
            writer.writerows(table)


def _write_patch(directory: Path, patch: SyntheticPatch, rows: list[_Row], styles: list[_Row]) -> None:
    """Write a patch's image and masks; append its index row and its styles row."""
    extension = ".png" if patch.image.dtype == np.uint8 else ".tiff"
    image_path = f"images/{patch.patch_id}{extension}"
    h_path = f"masks/{patch.patch_id}_h.png"
    v_path = f"masks/{patch.patch_id}_v.png"
    _write_image(directory / image_path, patch.image)
    _write_image(directory / h_path, patch.h_mask.astype(np.uint8) * 255)
    _write_image(directory / v_path, patch.v_mask.astype(np.uint8) * 255)
    # repr() is the shortest string that round-trips the float: exact and deterministic.
    rows.append(
        (
            patch.painting_id,
            patch.patch_id,
            image_path,
            h_path,
            v_path,
            repr(patch.px_per_cm),
            repr(patch.density_h),
            repr(patch.density_v),
        )
    )
    style = patch.style if patch.style is not None else PatchStyle(source_px_per_cm=patch.px_per_cm)
    styles.append(
        (
            patch.patch_id,
            style.weave,
            style.profile,
            style.imaging,
            repr(style.source_px_per_cm),
            repr(patch.occluded_share),
            "+".join(patch.artefacts),
            repr(patch.canvas.irregularity_v) if patch.canvas is not None else "",
            repr(patch.canvas.irregularity_h) if patch.canvas is not None else "",
        )
    )


def _write_image(path: Path, array: np.ndarray) -> None:
    # Encode in memory and write the bytes ourselves: the encoders are deterministic, and a failed encode
    # raises instead of cv2.imwrite's silent False.
    ok, encoded = cv2.imencode(path.suffix, array)
    if not ok:
        raise OSError(f"could not encode {path.name} ({array.dtype}, {array.shape})")
    path.write_bytes(encoded.tobytes())


# ------------------------------------------------------------------------------------------ the preview


def preview_figure(patches: Sequence[SyntheticPatch]) -> Figure:
    """A figure with each patch's image (top row) and its centre lines overlaid (bottom row)."""
    from matplotlib.figure import Figure  # keep matplotlib out of the generator's import

    if not patches:
        raise ValueError("preview_figure needs at least one patch")
    n = len(patches)
    figure = Figure(figsize=(3.2 * n, 7.0), layout="constrained")
    axes = figure.subplots(2, n, squeeze=False)
    h_colour = np.array([0.0, 0.85, 1.0])  # cyan: horizontal (weft) centre lines
    v_colour = np.array([1.0, 0.45, 0.0])  # orange: vertical (warp) centre lines
    for column, patch in enumerate(patches):
        # Stretched to its own range: a 12-bit scan stored in 16 bits would otherwise look black.
        low, high = float(patch.image.min()), float(patch.image.max())
        image = (patch.image.astype(np.float64) - low) / max(high - low, 1.0)
        top, bottom = axes[0, column], axes[1, column]
        top.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        extras = ", ".join(patch.artefacts) if patch.artefacts else "canvas + paint"
        style = patch.style
        described = (
            f"\n{style.weave}, {style.profile}, {style.imaging}, {style.source_px_per_cm:.0f} px/cm"
            if style is not None
            else ""
        )
        top.set_title(f"{patch.patch_id}\n{patch.image.dtype} (shown min-max), {extras}{described}", fontsize=8)
        overlay = np.repeat(image[..., None], 3, axis=2)
        overlay[patch.h_mask] = 0.4 * overlay[patch.h_mask] + 0.6 * h_colour
        overlay[patch.v_mask] = 0.4 * overlay[patch.v_mask] + 0.6 * v_colour
        bottom.imshow(overlay, interpolation="nearest")
        bottom.set_title(
            f"vertical {patch.density_v:.2f} /cm (orange)\nhorizontal {patch.density_h:.2f} /cm (cyan)", fontsize=9
        )
        for ax in (top, bottom):
            ax.set_xticks([])
            ax.set_yticks([])
    figure.suptitle(
        f"Synthetic canvas radiographs, {patches[0].image.shape[1]} px = "
        f"{patches[0].image.shape[1] / patches[0].px_per_cm:.1f} cm; ground-truth densities in threads/cm"
    )
    return figure


def _has_artefact(patch: SyntheticPatch, *, kind: str) -> bool:
    return kind in patch.artefacts


def _has_style(patch: SyntheticPatch, *, axis: str, name: str) -> bool:
    return patch.style is not None and getattr(patch.style, axis) == name


def _preview_selection(patches: Sequence[SyntheticPatch]) -> list[SyntheticPatch]:
    """A varied handful: sparsest and densest canvas, a 16-bit scan, one of each artefact kind, and one patch of
    each weave, thread profile and imaging condition present (a patch already chosen can stand for several)."""
    chosen: list[SyntheticPatch] = [min(patches, key=lambda p: p.density_v), max(patches, key=lambda p: p.density_v)]
    candidates: list[Callable[[SyntheticPatch], bool]] = [lambda p: p.image.dtype == np.uint16]
    candidates += [
        functools.partial(_has_artefact, kind=kind)
        for kind in ("strokes", "nail", "stretcher", "cusping", "lead_white", "craquelure")
    ]
    for axis, names in (("weave", WEAVES), ("profile", THREAD_PROFILES), ("imaging", IMAGING_CONDITIONS)):
        candidates += [functools.partial(_has_style, axis=axis, name=name) for name in names]
    for wanted in candidates:
        if any(wanted(p) for p in chosen):
            continue
        match = next((p for p in patches if wanted(p)), None)
        if match is not None:
            chosen.append(match)
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.Parser(
        prog="python -m thread_bench.workloads.thread_density.synthetic",
        description="Generate the synthetic canvas corpus.",
    )
    parser.add_argument("--preview", type=Path, help="save a figure of a few patches and their masks here")
    parser.add_argument("--out", type=Path, help="write the corpus (docs/DESIGN.md §2.1) to this directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-paintings", type=int, default=DEFAULT_N_PAINTINGS)
    parser.add_argument("--n-patches", type=int, default=DEFAULT_N_PATCHES)
    parser.add_argument(
        "--styles", choices=sorted(STYLE_MIXES), default=TRAINING_MIX.name, help="the style mix (default: training)"
    )
    args = parser.parse_args(argv)
    if args.preview is None and args.out is None:
        parser.error("nothing to do: give --preview PATH and/or --out DIR")
    status, _ = cli.guarded(parser, lambda: _write_and_preview(args))  # a full disk: one line
    return status


def _write_and_preview(args: argparse.Namespace) -> None:
    mix = STYLE_MIXES[args.styles]
    if args.out is not None:
        path = write_corpus(args.out, n_paintings=args.n_paintings, n_patches=args.n_patches, seed=args.seed, mix=mix)
        print(f"corpus: {path}")
    if args.preview is not None:
        import matplotlib

        matplotlib.use("Agg")
        patches = list(generate_corpus(args.n_paintings, args.n_patches, args.seed, mix=mix))
        figure = preview_figure(_preview_selection(patches))
        args.preview.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(args.preview, dpi=90)
        print(f"preview: {args.preview}")


if __name__ == "__main__":
    sys.exit(main())
