"""PyTorch side of the protocol: explicit ``train_one_epoch`` / ``evaluate`` loops.

The twin of :mod:`thread_bench.training.keras_train` (same public names, same :class:`TrainResult`).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import mlflow
import numpy as np
import torch
from torch import nn

from thread_bench import tracking
from thread_bench.config import ModelConfig, TrainConfig
from thread_bench.measure import device_sync, environment_info, gpu_available
from thread_bench.models import spec, torch_model
from thread_bench.training.common import (
    ArraySplit,
    BatchSampler,
    EarlyStopping,
    EpochCallback,
    EpochMeter,
    TrainingData,
    TrainResult,
    check_finite_loss,
    lr_at_epoch,
    python_alloc_meter,
    set_deterministic,
    set_threads,
)
from thread_bench.training.options import TorchOptions

log = logging.getLogger(__name__)

FRAMEWORK = "torch"
#: The allocator/GPU meters and the sync follow the backend that does the work.
GPU_FRAMEWORK = "torch"


def configure(options: TorchOptions, train: TrainConfig) -> dict[str, Any]:
    """Process-wide settings, before any model exists; returns the knob params to log."""
    set_threads(train.threads, GPU_FRAMEWORK)
    set_deterministic(train.deterministic, GPU_FRAMEWORK)
    if not gpu_available(GPU_FRAMEWORK):
        log.info("no GPU visible to PyTorch: training on the CPU")
    return {tracking.PARAM_BACKEND: "torch"}


def versions() -> dict[str, str]:
    return {"torch": torch.__version__}


def environment() -> dict[str, Any]:
    return environment_info(GPU_FRAMEWORK)


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def build_model(config: ModelConfig) -> nn.Module:
    return torch_model.build_model(config).to(_device())


def count_parameters(model: nn.Module) -> int:
    return torch_model.count_parameters(model)


def compile_model(model: nn.Module, train: TrainConfig, options: TorchOptions) -> dict[str, Any]:
    """Apply the memory-format knob in place; returns the resolved knobs (``torch.compile`` wraps in ``fit``)."""
    if options.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # stubs lack the keyword
    return {tracking.PARAM_TORCH_COMPILE: options.compile, tracking.PARAM_CHANNELS_LAST: options.channels_last}


def normalized_mae(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``mean(|predictions - targets| / targets)``; both ``(B, 1)``."""
    return ((predictions - targets).abs() / targets).mean()


def _to_device(images: np.ndarray, labels: np.ndarray, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    device = _device()
    x = torch.from_numpy(images).unsqueeze(1).to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, torch.from_numpy(labels).to(device, non_blocking=True)


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    split: ArraySplit,
    batches: list[np.ndarray],
    channels_last: bool = False,
) -> float:
    """One pass over ``batches`` (index arrays into ``split``); returns the sample-weighted mean loss."""
    model.train()
    total = torch.zeros((), dtype=torch.float64, device=_device())
    for indices in batches:
        x, y = _to_device(*split.batch(indices), channels_last)
        optimizer.zero_grad(set_to_none=True)
        loss = normalized_mae(model(x), y)
        loss.backward()
        optimizer.step()
        total += loss.detach().double() * len(indices)
    return float(total.item()) / sum(len(b) for b in batches)


def evaluate(model: nn.Module, split: ArraySplit, batch_size: int, channels_last: bool = False) -> float:
    """Mean normalised MAE over ``split`` in eval mode (running BatchNorm statistics, no dropout)."""
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=_device())
    with torch.inference_mode():
        for images, labels in split.batches_in_order(batch_size):
            x, y = _to_device(images, labels, channels_last)
            total += normalized_mae(model(x), y).double() * len(labels)
    return float(total.item()) / len(split)


def fit(
    model: nn.Module,
    data: TrainingData,
    config: TrainConfig,
    options: TorchOptions,
    *,
    on_epoch_end: EpochCallback,
) -> TrainResult:
    """Train with Adam and early stopping; on return ``model`` holds the best-validation weights."""
    runner: nn.Module = torch.compile(model) if options.compile else model  # type: ignore[assignment]
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, eps=config.adam_epsilon)
    sampler = BatchSampler(len(data.train), config.batch_size, config.seed)
    stopper = EarlyStopping(config.patience, config.min_delta)
    meter = EpochMeter(GPU_FRAMEWORK, device_sync(GPU_FRAMEWORK))
    history = []
    best_state: dict[str, torch.Tensor] | None = None
    with python_alloc_meter(config.tracemalloc) as alloc:
        for epoch in range(config.epochs):
            learning_rate = lr_at_epoch(config, epoch)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate
            batches = sampler.batches(epoch)
            meter.begin_epoch()
            train_loss = train_one_epoch(runner, optimizer, data.train, batches, options.channels_last)
            meter.begin_validation()
            val_loss = evaluate(runner, data.val, config.batch_size, options.channels_last)
            meter.end_validation()
            meter.end_epoch()
            check_finite_loss(epoch, train_loss)
            record = meter.record(epoch, train_loss, val_loss, learning_rate)
            record.improved = stopper.update(epoch, val_loss)
            if record.improved:
                best_state = copy.deepcopy(model.state_dict())
            history.append(record)
            on_epoch_end(record)
            if stopper.should_stop:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return TrainResult(
        history=history,
        best_epoch=stopper.best_epoch,
        best_val_loss=stopper.best_val_loss,
        n_train=len(data.train),
        stopped_early=len(history) < config.epochs,
        maxrss_bytes=meter.maxrss_bytes,
        py_alloc_peak_bytes=alloc.peak_bytes if alloc is not None else None,
    )


def predict(model: nn.Module, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Thread densities (threads/cm, float32 ``(N,)``) for ``(N, S, S)`` images, in eval mode."""
    return torch_model.predict(model, images, batch_size=batch_size)  # type: ignore[arg-type]


def log_model(model: nn.Module, example_images: np.ndarray) -> str:
    """Log ``model`` as an MLflow PyTorch model with a signature; returns its model URI.

    Args:
        example_images: a few ``(N, S, S)`` images; the signature and input example are
            ``(N, 1, S, S)`` float32 in [0, 1].
    """
    model = model.to("cpu").eval()
    x = spec.as_model_input(example_images, example_images.shape[1])[:, np.newaxis]
    with torch.inference_mode():
        y = model(torch.from_numpy(x)).numpy()
    signature = mlflow.models.infer_signature(x, y)
    info = mlflow.pytorch.log_model(
        model,
        name=tracking.ARTIFACT_MODEL,
        signature=signature,
        input_example=x,
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"],
    )
    model.to(_device())
    return str(info.model_uri)
