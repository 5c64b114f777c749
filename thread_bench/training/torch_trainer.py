"""PyTorch side of the protocol: explicit training and evaluation loops.

The twin of :mod:`thread_bench.training.keras_trainer` (same public names, same :class:`TrainResult`). The
model, its loss and its prediction come from the workload's PyTorch models module (``models``), so nothing
here names a workload.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from thread_bench import backends, tracking
from thread_bench.config import TrainConfig
from thread_bench.measure import environment_info
from thread_bench.models import inputs, pyfunc
from thread_bench.training.common import (
    ArraySplit,
    BatchSampler,
    BatchSource,
    EpochCallback,
    EpochMeter,
    ExplicitLoop,
    TrainingData,
    TrainResult,
    configure_backend,
    in_order,
    input_pipeline_on,
    pinned_requirements,
    run_epochs,
)
from thread_bench.training.options import TorchOptions
from thread_bench.workloads import Models

FRAMEWORK = "torch"
#: The backend that does the work (meters, sync, precision): PyTorch itself.
BACKEND = "torch"

Batch = tuple[torch.Tensor, torch.Tensor]
#: A workload's loss on a batch: (outputs, targets) -> the batch mean.
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def configure(options: TorchOptions, train: TrainConfig) -> dict[str, Any]:
    """Process-wide settings, before any model exists; returns the knob params to log.

    Raises:
        ValueError: a setting this machine cannot honour (bf16 on a GPU without it).
    """
    knobs = configure_backend(BACKEND, train)
    knobs[tracking.PARAM_CUDNN_BENCHMARK] = bool(torch.backends.cudnn.benchmark)
    return knobs


def versions() -> dict[str, str]:
    return backends.get(BACKEND).versions()


def backend() -> str:
    return BACKEND


def environment() -> dict[str, Any]:
    return environment_info(BACKEND)


def seed(seed: int) -> None:
    torch.manual_seed(seed)


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def build_model(models: Models, config: Any, precision: str = "fp32", implementation: str | None = None) -> nn.Module:
    return models.build_model(config, precision, implementation).to(_device())


def compile_model(
    model: nn.Module, models: Models, config: Any, train: TrainConfig, options: TorchOptions
) -> dict[str, Any]:
    """Apply the memory-format knob in place; returns the resolved knobs (``torch.compile`` wraps in ``fit``)."""
    if options.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # stubs lack the keyword
    hidden_dtype, output_dtype = _observed_dtypes(model, config.input_size)
    return {
        tracking.PARAM_TORCH_COMPILE: options.compile,
        tracking.PARAM_COMPILE_MODE: options.compile_mode if options.compile else "",
        tracking.PARAM_CHANNELS_LAST: options.channels_last,
        tracking.PARAM_COMPUTE_DTYPE: hidden_dtype,
        tracking.PARAM_OUTPUT_DTYPE: output_dtype,
    }


def _observed_dtypes(model: nn.Module, side: int) -> tuple[str, str]:
    """The dtypes of the first convolution's (or dense layer's) output and of the model's output on one blank
    image.

    Autocast decides dtypes per call, so the only read-back of what bf16 does is to run the model once.
    """
    seen: dict[str, torch.dtype] = {}
    first_conv = next(module for module in model.modules() if isinstance(module, nn.Conv2d | nn.Linear))

    def record(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:  # None: the output is kept
        seen["hidden"] = output.dtype

    hook = first_conv.register_forward_hook(record)
    parameter = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            output = model(torch.zeros(1, inputs.INPUT_CHANNELS, side, side, device=parameter.device))
    finally:
        hook.remove()
        model.train(was_training)
    return str(seen["hidden"]).removeprefix("torch."), str(output.dtype).removeprefix("torch.")


def input_pipeline(config: TrainConfig, data: TrainingData) -> str:
    """``config.input_pipeline`` resolved for this machine: ``device``, ``host`` or ``staged``."""
    return input_pipeline_on(BACKEND, config, data)


class DeviceBatches(BatchSource):
    """One split as PyTorch tensors, cut into batches by index arrays (see ``TrainConfig.input_pipeline``).

    ``device``: the uint8 images and the labels are uploaded once; each batch is gathered and converted to
    float32 on the device. ``host``: each batch is gathered on the host, pinned and copied asynchronously, then
    converted on the device (a quarter of the bytes of a float32 copy). ``staged``: every request returns one
    pre-made batch of that size (measurement only). The values are ``ArraySplit.batch``'s, bit for bit: the
    conversion is a gather from ``inputs.PIXEL_VALUES``.
    """

    def __init__(self, split: ArraySplit, pipeline: str, channels_last: bool = False) -> None:
        super().__init__(split, pipeline)
        self.channels_last = channels_last
        self.device = _device()
        resident = self.device if pipeline == "device" else torch.device("cpu")
        # On a CPU the "device" is the host: from_numpy shares the memory, nothing is copied.
        self.images = torch.from_numpy(np.ascontiguousarray(split.images)).to(resident)
        self.labels = torch.from_numpy(np.ascontiguousarray(split.labels, dtype=np.float32)).to(resident)
        self.pixel_values = torch.from_numpy(inputs.PIXEL_VALUES).to(self.device)

    def _gather(self, indices: np.ndarray | slice) -> Batch:
        if isinstance(indices, slice):
            images, labels = self.images[indices], self.labels[indices]
        else:
            index = torch.from_numpy(indices)
            if self.images.device != index.device:
                index = index.to(self.images.device, non_blocking=True)
            images, labels = self.images.index_select(0, index), self.labels.index_select(0, index)
        if images.device != self.device:
            # Pinned through PyTorch's caching host allocator, which keeps the block until the copy is done.
            images = images.pin_memory().to(self.device, non_blocking=True)
            labels = labels.pin_memory().to(self.device, non_blocking=True)
        x = torch.take(self.pixel_values, images.long()).unsqueeze(1)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, labels.unsqueeze(1)


def _train_one_epoch(
    model: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterable[Batch], loss_of: Loss
) -> float:
    """One pass over ``batches`` (device tensors); returns the sample-weighted mean loss."""
    model.train()
    total = torch.zeros((), dtype=torch.float64, device=_device())
    count = 0
    for x, y in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of(model(x), y)
        loss.backward()
        optimizer.step()
        total += loss.detach().double() * len(y)
        count += len(y)
    return float(total.item()) / count


def _evaluate(model: nn.Module, batches: Iterable[Batch], loss_of: Loss) -> float:
    """Mean loss over ``batches`` in eval mode (running BatchNorm statistics, no dropout)."""
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=_device())
    count = 0
    with torch.inference_mode():
        for x, y in batches:
            total += loss_of(model(x), y).double() * len(y)
            count += len(y)
    return float(total.item()) / count


def fit(
    model: nn.Module,
    data: TrainingData,
    config: TrainConfig,
    options: TorchOptions,
    *,
    models: Models,
    on_epoch_end: EpochCallback,
) -> TrainResult:
    """Train with Adam and early stopping on ``models.loss``; on return ``model`` holds the best-validation weights.

    ``config.input_pipeline`` must be resolved (:func:`input_pipeline`).
    """
    runner: nn.Module = (
        torch.compile(model, mode=options.compile_mode) if options.compile else model  # type: ignore[assignment]
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, eps=config.adam_epsilon)
    sampler = BatchSampler(len(data.train), config.batch_size, config.seed)
    train_inputs = DeviceBatches(data.train, config.input_pipeline, options.channels_last)
    val_inputs = DeviceBatches(data.val, config.input_pipeline, options.channels_last)
    val_order = in_order(len(data.val), config.batch_size)

    def train_epoch(epoch: int, learning_rate: float) -> float:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate
        return _train_one_epoch(runner, optimizer, train_inputs.batches(sampler.batches(epoch)), models.loss)

    loop = ExplicitLoop(
        train_epoch=train_epoch,
        evaluate=lambda: _evaluate(runner, val_inputs.batches(val_order), models.loss),
        snapshot=lambda: copy.deepcopy(model.state_dict()),
        restore=model.load_state_dict,
    )
    return run_epochs(loop, config, len(data.train), EpochMeter.on(BACKEND), on_epoch_end)


def device() -> str:
    return str(_device())


def load_model(uri: str) -> nn.Module:
    """A logged model on this process's device (CUDA when there is one).

    Models logged since version 2 of the suite are pyfunc models over their weights
    (:mod:`thread_bench.models.pyfunc`); runs logged before used MLflow's ``pytorch`` flavor (``pt2``), still
    readable.
    """
    import mlflow.pytorch

    if pyfunc.is_pyfunc(uri):
        return pyfunc.load_model(uri, device())
    return mlflow.pytorch.load_model(uri).to(_device())


def log_model(
    model: nn.Module, models: Models, config: Any, precision: str, example_images: np.ndarray, product: pyfunc.Product
) -> str:
    """Log ``model`` as a pyfunc over its state dict (:mod:`thread_bench.models.pyfunc` says why and what it
    answers); returns its model URI.

    Args:
        models: the workload's PyTorch models module, which rebuilds the network from ``config`` at load time.
        example_images: a few prepared uint8 ``(N, S, S)`` images, for the input example.
        product: the workload's serving, its preprocessing and the best epoch (the model's step).
    """
    return pyfunc.log_model(
        model,
        models,
        config,
        precision,
        example_images,
        product,
        framework=FRAMEWORK,
        backend=BACKEND,
        weights_format=pyfunc.TORCH_STATE_DICT,
        requirements=pinned_requirements(versions()),
    )
