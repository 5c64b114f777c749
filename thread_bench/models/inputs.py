"""What every model of the suite takes in, whatever the workload: one grayscale channel of uint8 pixels, read
as float32 in [0, 1] through one table, and the dtypes its arithmetic may run in."""

from __future__ import annotations

import numpy as np

#: Every workload's images are grayscale (an X-ray, a handwritten digit).
INPUT_CHANNELS = 1

#: The model's input value of each uint8 pixel value: ``PIXEL_VALUES[image]`` is ``image / 255`` in float32,
#: bit for bit. Every input path converts through this table (a gather on the device, where a division by
#: a scalar may be computed as a multiplication by its reciprocal and differ in the last bit).
PIXEL_VALUES = np.arange(256, dtype=np.float32) / np.float32(255.0)

#: The dtypes a model's arithmetic can run in; the weights, the output layer and the loss stay float32.
COMPUTE_DTYPES = ("float32", "bfloat16")


def compute_dtype(precision: str) -> str:
    """The layers' arithmetic dtype under a ``TrainConfig.precision`` (``fp32`` and ``tf32`` are float32)."""
    return "bfloat16" if precision == "bf16" else "float32"


def check_compute_dtype(compute_dtype: str) -> None:
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"compute_dtype must be one of {list(COMPUTE_DTYPES)}, got {compute_dtype!r}")


def as_model_input(images: np.ndarray, input_size: int) -> np.ndarray:
    """Validate a batch of grayscale images and return it as float32 in [0, 1], shape ``(N, H, W)``.

    Args:
        images: ``(N, H, W)`` with ``H == W == input_size``; ``uint8`` (divided by 255) or floating point
            already in [0, 1] (as the prepared dataset stores it).
    """
    if images.ndim != 3 or images.shape[1:] != (input_size, input_size):
        raise ValueError(f"images must have shape (N, {input_size}, {input_size}) for this model, got {images.shape}")
    if images.dtype == np.uint8:
        return PIXEL_VALUES[images]
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"images must be uint8 or floating point in [0, 1], got dtype {images.dtype}")
    result = np.asarray(images, dtype=np.float32)
    if result.size and (not np.isfinite(result).all() or result.min() < 0.0 or result.max() > 1.0):
        raise ValueError(f"floating-point images must lie in [0, 1], got range [{result.min()}, {result.max()}]")
    return result
