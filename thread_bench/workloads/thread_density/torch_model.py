"""RegVGG as a PyTorch ``nn.Module`` (NCHW), the twin of ``keras_model``.

Initialised exactly like Keras' defaults (docs/DESIGN.md §3): he-normal conv kernels (a normal truncated
at two standard deviations), zero conv biases, glorot-uniform Dense kernels with zero biases, BatchNorm
gamma = 1, beta = 0 and running statistics 0 / 1, with the Keras momentum converted to PyTorch's convention.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from thread_bench.config import PREDICT_BATCH_SIZE
from thread_bench.workloads.thread_density import spec
from thread_bench.workloads.thread_density.config import ModelConfig

#: Keras' VarianceScaling divides the standard deviation of its truncated normal by the standard deviation
#: of a unit normal truncated to [-2, 2], so that the truncated values have the target standard deviation.
_TRUNCATED_NORMAL_STD_CORRECTION = 0.87962566103423978


def he_normal_(weight: torch.Tensor) -> torch.Tensor:
    """Keras' ``he_normal``: normal(0, s) truncated to [-2s, 2s], s = sqrt(2 / fan_in) / 0.8796...

    The truncated distribution then has standard deviation sqrt(2 / fan_in). Sampled by redrawing the
    values outside the bounds, as TensorFlow does (``nn.init.trunc_normal_``'s inverse-CDF method gives the
    same distribution but its erfinv makes it several times slower on CPU: seconds for the default model).
    """
    fan_in = weight[0].numel()  # in_channels * kernel_height * kernel_width for OIHW
    stddev = math.sqrt(2.0 / fan_in) / _TRUNCATED_NORMAL_STD_CORRECTION
    with torch.no_grad():
        weight.normal_(0.0, stddev)
        outside = weight.abs() > 2.0 * stddev
        while bool(outside.any()):  # 4.6 % of the draws fall outside: about 6 rounds for 600 k values
            weight.copy_(torch.where(outside, torch.empty_like(weight).normal_(0.0, stddev), weight))
            outside = weight.abs() > 2.0 * stddev
    return weight


class InceptionModule(nn.Module):
    """Conv2d(k) -> BatchNorm2d -> ReLU for k = 3, 5, 7 in parallel, concatenated on channels.

    Submodules are ``conv3, bn3, conv5, bn5, conv7, bn7`` (the Keras layers ``<name>_conv3`` ...).
    """

    def __init__(self, in_channels: int, filters: int, config: ModelConfig | None = None) -> None:
        super().__init__()
        config = config or ModelConfig()
        for kernel_size in spec.KERNEL_SIZES:
            conv = nn.Conv2d(in_channels, filters, kernel_size, padding=kernel_size // 2)
            batchnorm = nn.BatchNorm2d(filters, eps=config.batchnorm_eps, momentum=config.torch_batchnorm_momentum)
            self.add_module(f"conv{kernel_size}", conv)
            self.add_module(f"bn{kernel_size}", batchnorm)
        self.reset_parameters()

    def branches(self) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
        return [(getattr(self, f"conv{k}"), getattr(self, f"bn{k}")) for k in spec.KERNEL_SIZES]

    def reset_parameters(self) -> None:
        for conv, batchnorm in self.branches():
            he_normal_(conv.weight)
            assert conv.bias is not None
            nn.init.zeros_(conv.bias)
            batchnorm.reset_parameters()  # gamma 1, beta 0, running mean 0, running var 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.relu(batchnorm(conv(x))) for conv, batchnorm in self.branches()], dim=1)


class Stage(nn.Module):
    """``module1 .. moduleN`` inception modules, then 2x2 max-pooling and element-wise dropout."""

    def __init__(self, module_specs: list[spec.ModuleSpec], config: ModelConfig) -> None:
        super().__init__()
        self.module_names = tuple(f"module{m.index}" for m in module_specs)
        for name, module in zip(self.module_names, module_specs, strict=True):
            self.add_module(name, InceptionModule(module.in_channels, module.filters, config))
        self.pool = nn.MaxPool2d(spec.POOL_SIZE)
        # nn.Dropout (element-wise, = Keras Dropout), not nn.Dropout2d (channel-wise, = SpatialDropout2D).
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.module_names:
            x = getattr(self, name)(x)
        return self.dropout(self.pool(x))


class RegVGG(nn.Module):
    """Input ``(N, 1, H, W)`` float32 in [0, 1], output ``(N, 1)`` float32.

    Children: ``stage1 .. stage5``, ``flatten``, ``dense1``, ``dense2``, ``output``. ``flatten`` produces
    NCHW order, so ``dense1``'s columns are a permutation of the Keras kernel's rows (see ``transfer``).

    ``compute_dtype="bfloat16"`` is the twin of Keras' ``mixed_bfloat16`` policy: every layer but the output
    computes in bfloat16 (autocast), weights stay float32, and the output layer, hence the loss, is float32.
    It is part of the model, like a Keras layer's dtype policy, so a saved model predicts as it trained.
    """

    def __init__(self, config: ModelConfig, compute_dtype: str = "float32") -> None:
        super().__init__()
        spec.check_compute_dtype(compute_dtype)
        self.config = config
        self.compute_dtype = compute_dtype
        all_modules = spec.modules(config)
        for stage_number in range(1, len(spec.STAGE_MODULES) + 1):
            stage_modules = [m for m in all_modules if m.stage == stage_number]
            self.add_module(spec.stage_name(stage_number), Stage(stage_modules, config))
        self.flatten = nn.Flatten()
        for name, n_in, n_out in spec.dense_shapes(config):
            self.add_module(name, nn.Linear(n_in, n_out))
        self._reset_dense_parameters()  # the inception modules initialised themselves

    def stages(self) -> list[Stage]:
        return [getattr(self, spec.stage_name(s)) for s in range(1, len(spec.STAGE_MODULES) + 1)]

    def denses(self) -> list[nn.Linear]:
        return [getattr(self, name) for name in spec.DENSE_NAMES]

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, InceptionModule):
                module.reset_parameters()
        self._reset_dense_parameters()

    def _reset_dense_parameters(self) -> None:
        for dense in self.denses():
            nn.init.xavier_uniform_(dense.weight)  # = Keras glorot_uniform for an (out, in) matrix
            nn.init.zeros_(dense.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *hidden, output = self.denses()
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.compute_dtype == "bfloat16"):
            for stage in self.stages():
                x = stage(x)
            x = self.flatten(x)
            for dense in hidden:
                x = F.relu(dense(x))
        with torch.autocast(x.device.type, enabled=False):
            return output(x.to(output.weight.dtype))  # float32 even under bf16 autocast


def build_model(config: ModelConfig, compute_dtype: str = "float32") -> RegVGG:
    return RegVGG(config, compute_dtype)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (BatchNorm running statistics are buffers and not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def predict(
    model: RegVGG, images: np.ndarray, batch_size: int = PREDICT_BATCH_SIZE, device: str | torch.device | None = None
) -> np.ndarray:
    """Thread densities for ``(N, H, W)`` images (uint8, or float in [0, 1]); returns float32 ``(N,)``.

    Runs in eval mode (running statistics, no dropout) and restores the model's previous mode.

    Args:
        device: where to run; ``None`` means the device of the model's parameters. A different device
            moves the model there (in place).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    x = spec.as_model_input(images, model.config.input_size)
    if device is None:
        target = next(model.parameters()).device
    else:
        target = torch.device(device)
        model.to(target)
    was_training = model.training
    model.eval()
    outputs = []
    try:
        with torch.inference_mode():
            for start in range(0, len(x), batch_size):
                batch = torch.from_numpy(x[start : start + batch_size]).unsqueeze(1).to(target)
                outputs.append(model(batch).reshape(-1).float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(outputs) if outputs else np.zeros((0,), dtype=np.float32)
