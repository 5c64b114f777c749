"""RegVGG in PyTorch as the thread-density workload's models (:class:`thread_bench.workloads.Models`).

The twin of :mod:`thread_bench.workloads.thread_density.keras_models`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from thread_bench.config import PREDICT_BATCH_SIZE
from thread_bench.workloads.thread_density import spec, torch_model
from thread_bench.workloads.thread_density.config import ModelConfig


def build_model(config: ModelConfig, precision: str = "fp32", implementation: str | None = None) -> nn.Module:
    """RegVGG has one implementation per framework (``implementation`` is checked by the workload record)."""
    return torch_model.build_model(config, spec.compute_dtype(precision))


def count_parameters(model: nn.Module) -> int:
    return torch_model.count_parameters(model)


def loss(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The normalised MAE ``mean(|predictions - targets| / targets)``; both ``(B, 1)``."""
    return ((predictions - targets).abs() / targets).mean()


def predict(model: nn.Module, images: np.ndarray, batch_size: int = PREDICT_BATCH_SIZE) -> np.ndarray:
    """Thread densities (threads/cm, float32 ``(N,)``) for ``(N, S, S)`` images, in eval mode.

    A model logged before the pyfunc format, in MLflow's ``pt2`` format, loads as a ``torch.fx.GraphModule``,
    which refuses ``eval()`` and has no ``config``, hence the plain loop for it.
    """
    if isinstance(model, torch_model.RegVGG):
        return torch_model.predict(model, images, batch_size=batch_size)
    x = spec.as_model_input(images, images.shape[1])
    target = next(model.parameters()).device
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            batch = torch.from_numpy(x[start : start + batch_size]).unsqueeze(1).to(target)
            outputs.append(model(batch).reshape(-1).float().cpu().numpy())
    return np.concatenate(outputs) if outputs else np.zeros((0,), np.float32)
