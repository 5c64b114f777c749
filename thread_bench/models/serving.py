"""What a logged model answers, whatever its framework: a workload's *serving* turns a user's inputs into the
images its models take and their outputs into answers (docs/DESIGN.md §9).

A workload names its serving module (``Workload.serving``); a workload without one is served by this module's
generic functions: gray-level images of the model's side in, the model's raw outputs out. A serving module has:

``describe(dataset, data_config, data_root) -> dict``
    What the preprocessing of a model trained on ``dataset`` is (JSON): stored in the logged model's metadata and
    handed back to ``predict``, so the model applies it where it is loaded.
``input_schema(description)``, ``output_schema(description)``
    The MLflow schemas of the model's signature (what ``mlflow models serve`` checks a request against).
``input_example(images, description) -> pandas.DataFrame | None``
    A request made from a few prepared ``(N, S, S)`` uint8 images (logged with the model; ``None``: the model
    cannot answer one, and says why when asked).
``predict(predict_images, model_input, description) -> pandas.DataFrame``
    The answers; ``predict_images(uint8 (N, S, S)) -> (N, ...)`` float32 runs the network.
``REQUIREMENTS``
    The distributions it imports beyond NumPy, pandas and MLflow (pinned at their installed versions).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import metadata
from typing import Any

import numpy as np
import pandas as pd
from mlflow.types.schema import Array, ColSpec, DataType, Schema

#: The input column every served model takes: one grayscale image per row, as rows of integer gray levels.
IMAGE = "image"
#: The generic output column: the model's outputs for the row's image.
OUTPUT = "output"

REQUIREMENTS: tuple[str, ...] = ()

#: One grayscale image as MLflow's schema states it: rows of integer gray levels.
IMAGE_TYPE = Array(Array(DataType.long))

PredictImages = Callable[[np.ndarray], np.ndarray]


def describe(dataset: Any, data_config: Any, data_root: Any) -> dict[str, Any]:
    return {"input_size": int(dataset.input_size), "pixels": "gray levels 0-255, as the prepared images store them"}


def input_schema(description: Mapping[str, Any]) -> Schema:
    return Schema([ColSpec(IMAGE_TYPE, IMAGE)])


def output_schema(description: Mapping[str, Any]) -> Schema:
    return Schema([ColSpec(Array(DataType.double), OUTPUT)])


def input_example(images: np.ndarray, description: Mapping[str, Any]) -> pd.DataFrame:
    return pd.DataFrame({IMAGE: [image.tolist() for image in images]})


def predict(predict_images: PredictImages, model_input: Any, description: Mapping[str, Any]) -> pd.DataFrame:
    frame = request_frame(model_input, (IMAGE,))
    images = fixed_size_images(frame[IMAGE], int(description["input_size"]))
    outputs = np.asarray(predict_images(images), dtype=np.float64).reshape(len(images), -1)
    return pd.DataFrame({OUTPUT: list(outputs)})


# ------------------------------------------------------------------------------------ shared checks


def request_frame(model_input: Any, columns: tuple[str, ...]) -> pd.DataFrame:
    """``model_input`` as a DataFrame with ``columns``: a DataFrame, a dict of columns or a list of row dicts.

    Raises:
        ValueError: naming the missing columns (or what was given instead).
    """
    if isinstance(model_input, pd.DataFrame):
        frame = model_input
    elif isinstance(model_input, Mapping):
        frame = pd.DataFrame({key: list(value) if _is_rows(value) else [value] for key, value in model_input.items()})
    elif isinstance(model_input, list) and all(isinstance(row, Mapping) for row in model_input):
        frame = pd.DataFrame(model_input)
    else:
        raise ValueError(
            f"expected a table with columns {list(columns)} (a pandas DataFrame, a dict of columns or a list of "
            f"rows), got {type(model_input).__name__}"
        )
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"the request lacks column(s) {missing}: expected {list(columns)}, got {list(frame.columns)}")
    if len(frame) == 0:
        raise ValueError("the request has no rows")
    return frame


def _is_rows(value: Any) -> bool:
    """A dict's value is a column of several rows unless it is one image (a 2-D array) or one number."""
    if isinstance(value, np.ndarray):
        return value.ndim != 2
    return (
        isinstance(value, list | tuple)
        and bool(value)
        and not (isinstance(value[0], list | tuple) and value[0] and np.isscalar(value[0][0]))
    )


def gray_levels(value: Any, where: str, *, maximum: int, side: int | None = None) -> np.ndarray:
    """One image of integer gray levels as uint8 (all values <= 255) or uint16.

    Args:
        where: names the row in error messages.
        maximum: the largest gray level accepted (255 for 8-bit models, 65535 for 16-bit radiographs).
        side: the image must be ``side`` x ``side`` pixels (``None``: any 2-D size).

    Raises:
        ValueError: naming ``where``: not 2-D, ragged, not integers, outside ``[0, maximum]``, wrong size.
    """
    try:
        array = np.asarray(value)
        if array.dtype == object:
            array = np.asarray([np.asarray(row) for row in value])
    except ValueError as error:  # ragged rows
        raise ValueError(f"{where}: image rows differ in length ({error})") from None
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"{where}: an image must be a 2-D array of gray levels, got shape {array.shape}")
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"{where}: gray levels must be integers 0-{maximum}, got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.floating) and not (np.isfinite(array).all() and (array == np.round(array)).all()):
        raise ValueError(f"{where}: gray levels must be integers 0-{maximum} (8- or 16-bit), got fractional values")
    low, high = array.min(), array.max()
    if low < 0 or high > maximum:
        raise ValueError(f"{where}: gray levels must lie in 0-{maximum}, got {low}-{high}")
    if side is not None and array.shape != (side, side):
        raise ValueError(f"{where}: this model takes {side}x{side} images, got {array.shape[1]}x{array.shape[0]}")
    return array.astype(np.uint8 if high <= 255 else np.uint16)


def fixed_size_images(column: Any, side: int) -> np.ndarray:
    """A column of 8-bit images, each ``side`` x ``side``, as one uint8 ``(N, side, side)`` array."""
    return np.stack([gray_levels(value, f"row {row}", maximum=255, side=side) for row, value in enumerate(column)])


def pinned(distributions: tuple[str, ...]) -> list[str]:
    """``name==version`` of each installed distribution."""
    return [f"{name}=={metadata.version(name)}" for name in distributions]
