"""How a logged thread-density model answers (:mod:`thread_bench.models.serving`): raw radiograph patches in, as
a user has them; vertical and horizontal thread density out, in threads/cm.

A request is a table with one patch per row:

``image``
    The patch: rows of integer gray levels, 8-bit (0-255) or 16-bit (0-65535), any size of at least one window
    (``window_cm``, 1 cm for the shipped profiles) on each side.
``px_per_cm``
    Its resolution, pixels per centimetre.

The model applies the preprocessing its training applied (:mod:`.prepare`), described in its metadata
(:func:`describe`): windows of ``window_cm`` (in the patch's own pixels: ``window_cm * px_per_cm``), each
histogram-equalised to 8 bits on its own (``equalisation_scope`` ``window``, the default since December 2026;
models trained before, whose metadata has no scope, equalise the whole patch first, as their training did) and
resampled to the network's ``input_size`` pixels (area interpolation when shrinking, as the training did; linear
when enlarging, which the training never saw). The
windows tile the patch evenly (overlapping where the size is not a multiple of a window); the answer is their
mean. ``density_v`` is what the network was trained on: the vertical threads' density. ``density_h`` is the same
network on each window turned a quarter (``numpy.rot90``), which makes the horizontal threads vertical: exactly
how the prepared dataset's ``density_h`` labels are defined (counted on the same sub-patch, other direction).

A window of a non-whole number of pixels is cut at the nearest whole number and the density scaled by the ratio,
so the answer stays in threads per centimetre of the patch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
import pandas as pd
from mlflow.types.schema import ColSpec, DataType, Schema

from thread_bench.models.serving import IMAGE, IMAGE_TYPE, PredictImages, gray_levels, request_frame
from thread_bench.workloads.thread_density.config import EQUALISATIONS
from thread_bench.workloads.thread_density.counting import check_px_per_cm
from thread_bench.workloads.thread_density.prepare import equalize_histogram

PX_PER_CM = "px_per_cm"
DENSITY_V = "density_v"
DENSITY_H = "density_h"
WINDOWS = "windows"

REQUIREMENTS: tuple[str, ...] = ("opencv-python-headless",)

#: ``equalisation_scope``: each window's own histogram, or the whole patch's (models whose metadata has no scope).
WINDOW, PATCH = EQUALISATIONS
_SCOPE_WORDS = {WINDOW: "each window on its own", PATCH: "the whole patch"}

#: A window side this close to a whole number of pixels is taken as that number (no scaling).
_WHOLE_PIXEL = 1e-6


def describe(dataset: Any, data_config: Any, data_root: Any) -> dict[str, Any]:
    """The preprocessing of a model trained on ``dataset``: its resolution comes from the resolution of the
    prepared images (the source patches' ``px_per_cm`` scaled by ``input_size / crop_px``).

    ``model_px_per_cm`` is ``None`` when the source patches' resolutions are not known here (a user corpus that
    is not on this machine): the logged model then refuses raw patches, saying why.
    """
    from thread_bench.workloads.thread_density.baseline import corpus_dir, stored_px_per_cm

    settings = dataset.manifest.get("settings", {})
    size = int(dataset.input_size)
    scope = settings.get("equalisation", PATCH)  # datasets prepared before the setting existed: the whole patch
    try:
        resolutions, source = stored_px_per_cm(dataset, dataset.train, corpus_dir(data_config, data_root))
    except (FileNotFoundError, ValueError) as error:
        resolutions, source = np.empty(0), f"unknown: {error}"
    except KeyError as error:  # a dataset made by other means, without the preparation's settings
        resolutions, source = np.empty(0), f"unknown: the dataset's manifest has no setting {error}"
    description: dict[str, Any] = {
        "input_size": size,
        "model_px_per_cm": None,
        "window_cm": None,
        "resolution_from": source,
        "training_crop_px": settings.get("crop_px"),
        "equalisation": f"histogram equalisation of {_SCOPE_WORDS[scope]}, 8- or 16-bit gray levels -> 8 bits",
        "equalisation_scope": scope,
        "resampling": "each window of window_cm * px_per_cm patch pixels resized to input_size pixels "
        "(cv2 INTER_AREA when shrinking, INTER_LINEAR when enlarging)",
        "windows": "tiling the patch evenly; the answer is their mean",
        "density_h": "the network on each window turned a quarter (numpy.rot90)",
        "pixels": "gray levels 0-255 after equalisation, divided by 255",
    }
    if len(resolutions):
        model_px_per_cm = float(np.median(resolutions))
        description["model_px_per_cm"] = model_px_per_cm
        description["window_cm"] = size / model_px_per_cm
        if float(np.max(resolutions) - np.min(resolutions)) > 1e-6 * model_px_per_cm:
            description["resolution_spread"] = [float(np.min(resolutions)), float(np.max(resolutions))]
    return description


def input_schema(description: Mapping[str, Any]) -> Schema:
    return Schema([ColSpec(IMAGE_TYPE, IMAGE), ColSpec(DataType.double, PX_PER_CM)])


def output_schema(description: Mapping[str, Any]) -> Schema:
    return Schema(
        [ColSpec(DataType.double, DENSITY_V), ColSpec(DataType.double, DENSITY_H), ColSpec(DataType.long, WINDOWS)]
    )


def input_example(images: np.ndarray, description: Mapping[str, Any]) -> pd.DataFrame | None:
    """A prepared image as a patch of one window, at the model's resolution (none when that is unknown)."""
    if description["model_px_per_cm"] is None:
        return None
    return pd.DataFrame({IMAGE: [image.tolist() for image in images[:1]], PX_PER_CM: [description["model_px_per_cm"]]})


def predict(predict_images: PredictImages, model_input: Any, description: Mapping[str, Any]) -> pd.DataFrame:
    """``density_v``, ``density_h`` (threads/cm) and the number of ``windows`` of each row's patch."""
    if description.get("model_px_per_cm") is None:
        raise ValueError(
            "this model cannot take raw patches: the resolution of its training data was not known when it was "
            f"logged ({description.get('resolution_from')}); train it where its corpus is"
        )
    frame = request_frame(model_input, (IMAGE, PX_PER_CM))
    windows, scales, counts = [], [], []
    for row, (image, px_per_cm) in enumerate(zip(frame[IMAGE], frame[PX_PER_CM], strict=True)):
        cut, scale = patch_windows(
            gray_levels(image, f"row {row}", maximum=65535), _resolution(px_per_cm, row), description
        )
        windows.append(cut)
        scales.append(scale)
        counts.append(len(cut))
    stacked = np.concatenate(windows)
    vertical = np.asarray(predict_images(stacked), dtype=np.float64).reshape(-1)
    horizontal = np.asarray(predict_images(np.ascontiguousarray(np.rot90(stacked, axes=(1, 2)))), np.float64).reshape(
        -1
    )
    ends = np.cumsum(counts)
    starts = ends - np.asarray(counts)
    return pd.DataFrame(
        {
            DENSITY_V: [vertical[a:b].mean() * s for a, b, s in zip(starts, ends, scales, strict=True)],
            DENSITY_H: [horizontal[a:b].mean() * s for a, b, s in zip(starts, ends, scales, strict=True)],
            WINDOWS: counts,
        }
    )


def _resolution(value: Any, row: int) -> float:
    try:
        return check_px_per_cm(value)
    except ValueError as error:
        raise ValueError(f"row {row}: {error}") from None


def patch_windows(image: np.ndarray, px_per_cm: float, description: Mapping[str, Any]) -> tuple[np.ndarray, float]:
    """The network's inputs for one patch: uint8 ``(n, S, S)`` windows, and the factor that turns their densities
    into threads per centimetre of the patch (1 when a window is a whole number of the patch's pixels).

    Raises:
        ValueError: the patch is smaller than one window.
    """
    size = int(description["input_size"])
    exact = float(description["window_cm"]) * px_per_cm
    side = max(1, round(exact))
    if abs(exact - side) <= _WHOLE_PIXEL * exact:
        exact = float(side)
    height, width = image.shape
    if min(height, width) < side:
        raise ValueError(
            f"a {width}x{height} px patch at px_per_cm={px_per_cm:g} is smaller than one window "
            f"({description['window_cm']:g} cm = {side} px on each side)"
        )
    per_window = description.get("equalisation_scope", PATCH) == WINDOW
    source = image if per_window else equalize_histogram(image)
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    windows = []
    for top in _starts(height, side):
        for left in _starts(width, side):
            window = source[top : top + side, left : left + side]
            if per_window:
                window = equalize_histogram(window)
            windows.append(window if side == size else cv2.resize(window, (size, size), interpolation=interpolation))
    return np.stack(windows), exact / side


def _starts(length: int, side: int) -> list[int]:
    """Where windows of ``side`` start to tile ``length`` evenly: as few as cover it, the last at the end."""
    count = math.ceil(length / side)
    return [round(position) for position in np.linspace(0, length - side, count)] if count > 1 else [0]
