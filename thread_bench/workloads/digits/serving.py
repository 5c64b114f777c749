"""How a logged digits model answers (:mod:`thread_bench.models.serving`): a 28x28 digit as MNIST stores it (gray
levels 0-255, white on black) in; the digit, its probability and the ten logits out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from mlflow.types.schema import Array, ColSpec, DataType, Schema

# The request is the generic one: a column of gray-level images of the model's side.
from thread_bench.models.serving import (  # noqa: F401 (input_example, input_schema: this module's, re-exported)
    IMAGE,
    PredictImages,
    fixed_size_images,
    input_example,
    input_schema,
    request_frame,
)
from thread_bench.workloads.digits.config import IMAGE_SIZE

DIGIT = "digit"
PROBABILITY = "probability"
LOGITS = "logits"

REQUIREMENTS: tuple[str, ...] = ()


def describe(dataset: Any, data_config: Any, data_root: Any) -> dict[str, Any]:
    return {
        "input_size": IMAGE_SIZE,
        "pixels": "gray levels 0-255 as MNIST stores them (the digit white on black), divided by 255",
    }


def output_schema(description: Mapping[str, Any]) -> Schema:
    return Schema(
        [ColSpec(DataType.long, DIGIT), ColSpec(DataType.double, PROBABILITY), ColSpec(Array(DataType.double), LOGITS)]
    )


def predict(predict_images: PredictImages, model_input: Any, description: Mapping[str, Any]) -> pd.DataFrame:
    frame = request_frame(model_input, (IMAGE,))
    images = fixed_size_images(frame[IMAGE], int(description["input_size"]))
    logits = np.asarray(predict_images(images), dtype=np.float64)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities = shifted / shifted.sum(axis=1, keepdims=True)
    return pd.DataFrame({DIGIT: logits.argmax(axis=1), PROBABILITY: probabilities.max(axis=1), LOGITS: list(logits)})
