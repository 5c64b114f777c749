"""The toy workload's model in PyTorch (``tests/integration/test_registration.py``): a plug-in's models module, outside
``thread_bench``, implementing :class:`thread_bench.workloads.Models`.

One 3x3 convolution (``filters`` channels, 'same' padding, ReLU), 2x2 max-pooling, and a linear output of one
value: the stripe frequency. ``precision="bf16"`` computes the hidden layers under a bfloat16 autocast, the
output layer and the loss in float32, as the built-in workloads do. The twin of ``toy_keras_models``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from thread_bench.config import PREDICT_BATCH_SIZE
from thread_bench.models import inputs


class ToyNet(nn.Module):
    """Input ``(N, 1, S, S)`` float32 in [0, 1], output ``(N, 1)`` float32."""

    def __init__(self, filters: int, input_size: int, compute_dtype: str) -> None:
        super().__init__()
        inputs.check_compute_dtype(compute_dtype)
        self.compute_dtype = compute_dtype
        self.conv = nn.Conv2d(inputs.INPUT_CHANNELS, filters, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.output = nn.Linear(filters * (input_size // 2) ** 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.compute_dtype == "bfloat16"):
            x = torch.flatten(self.pool(F.relu(self.conv(x))), 1)
        with torch.autocast(x.device.type, enabled=False):
            return self.output(x.float())


def build_model(config: Any, precision: str = "fp32", implementation: str | None = None) -> ToyNet:
    """One style (``module``; ``implementation`` is checked by the workload record)."""
    return ToyNet(config.filters, config.input_size, inputs.compute_dtype(precision))


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)


def loss(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Batch-mean squared error; both ``(B, 1)``."""
    return ((predictions.float() - targets) ** 2).mean()


def predict(model: nn.Module, images: np.ndarray, batch_size: int = PREDICT_BATCH_SIZE) -> np.ndarray:
    """Stripe frequencies, float32 ``(N,)``, for ``(N, S, S)`` images; in eval mode, the model's mode restored."""
    x = inputs.as_model_input(np.asarray(images), images.shape[1])
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    outputs = []
    try:
        with torch.inference_mode():
            for start in range(0, len(x), batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size])).unsqueeze(1)
                outputs.append(model(batch.to(device)).reshape(-1).float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(outputs) if outputs else np.zeros((0,), np.float32)
