"""PyTorch side of the protocol: explicit training and evaluation loops.

The twin of :mod:`thread_bench.training.keras_trainer` (same public names, same :class:`TrainResult`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from thread_bench import backends, tracking
from thread_bench.config import PREDICT_BATCH_SIZE, ModelConfig, TrainConfig
from thread_bench.measure import environment_info
from thread_bench.models import spec, torch_model, torch_pyfunc
from thread_bench.training.common import (
    ArraySplit,
    BatchSampler,
    EarlyStopping,
    EpochCallback,
    EpochMeter,
    TrainingData,
    TrainResult,
    check_finite_loss,
    configure_backend,
    in_order,
    lr_at_epoch,
    python_alloc_meter,
    resolve_input_pipeline,
    staged_batch,
)
from thread_bench.training.options import TorchOptions

log = logging.getLogger(__name__)

FRAMEWORK = "torch"
#: The backend that does the work (meters, sync, precision): PyTorch itself.
BACKEND = "torch"

Batch = tuple[torch.Tensor, torch.Tensor]


def configure(options: TorchOptions, train: TrainConfig) -> dict[str, Any]:
    """Process-wide settings, before any model exists; returns the knob params to log.

    Raises:
        ValueError: a setting this machine cannot honour (bf16 on a GPU without it).
    """
    knobs = configure_backend(BACKEND, train)
    knobs[tracking.PARAM_CUDNN_BENCHMARK] = bool(torch.backends.cudnn.benchmark)
    if not backends.get(BACKEND).gpu_available():
        log.info("no GPU visible to PyTorch: training on the CPU")
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


def build_model(config: ModelConfig, precision: str = "fp32") -> nn.Module:
    return torch_model.build_model(config, spec.compute_dtype(precision)).to(_device())


def count_parameters(model: nn.Module) -> int:
    return torch_model.count_parameters(model)


def compile_model(model: nn.Module, train: TrainConfig, options: TorchOptions) -> dict[str, Any]:
    """Apply the memory-format knob in place; returns the resolved knobs (``torch.compile`` wraps in ``fit``)."""
    if options.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # stubs lack the keyword
    hidden_dtype, output_dtype = _observed_dtypes(model)
    return {
        tracking.PARAM_TORCH_COMPILE: options.compile,
        tracking.PARAM_COMPILE_MODE: options.compile_mode if options.compile else "",
        tracking.PARAM_CHANNELS_LAST: options.channels_last,
        tracking.PARAM_COMPUTE_DTYPE: hidden_dtype,
        tracking.PARAM_OUTPUT_DTYPE: output_dtype,
    }


def _observed_dtypes(model: nn.Module) -> tuple[str, str]:
    """The dtypes of the first convolution's output and of the model's output on one blank image.

    Autocast decides dtypes per call, so the only read-back of what bf16 does is to run the model once.
    """
    seen: dict[str, torch.dtype] = {}
    first_conv = model.get_submodule(spec.torch_module_path(spec.conv_name("stage1_module1", spec.KERNEL_SIZES[0])))

    def record(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:  # None: the output is kept
        seen["hidden"] = output.dtype

    hook = first_conv.register_forward_hook(record)
    parameter = next(model.parameters())
    side = int(model.config.input_size)  # type: ignore[union-attr,arg-type]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            output = model(torch.zeros(1, spec.INPUT_CHANNELS, side, side, device=parameter.device))
    finally:
        hook.remove()
        model.train(was_training)
    return str(seen["hidden"]).removeprefix("torch."), str(output.dtype).removeprefix("torch.")


def input_pipeline(config: TrainConfig, data: TrainingData) -> str:
    """``config.input_pipeline`` resolved for this machine: ``device``, ``host`` or ``staged``."""
    return resolve_input_pipeline(config, data.nbytes, backends.get(BACKEND).device_memory_bytes())


def normalized_mae(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``mean(|predictions - targets| / targets)``; both ``(B, 1)``."""
    return ((predictions - targets).abs() / targets).mean()


class DeviceBatches:
    """One split as PyTorch tensors, cut into batches by index arrays (see ``TrainConfig.input_pipeline``).

    ``device``: the uint8 images and the labels are uploaded once; each batch is gathered and converted to
    float32 on the device. ``host``: each batch is gathered on the host, pinned and copied asynchronously, then
    converted on the device (a quarter of the bytes of a float32 copy). ``staged``: every request returns one
    pre-made batch of that size (measurement only). The values are ``ArraySplit.batch``'s, bit for bit: the
    conversion is a gather from ``spec.PIXEL_VALUES``.
    """

    def __init__(self, split: ArraySplit, pipeline: str, channels_last: bool = False) -> None:
        self.split = split
        self.pipeline = pipeline
        self.channels_last = channels_last
        self.device = _device()
        resident = self.device if pipeline == "device" else torch.device("cpu")
        # On a CPU the "device" is the host: from_numpy shares the memory, nothing is copied.
        self.images = torch.from_numpy(np.ascontiguousarray(split.images)).to(resident)
        self.labels = torch.from_numpy(np.ascontiguousarray(split.labels, dtype=np.float32)).to(resident)
        self.pixel_values = torch.from_numpy(spec.PIXEL_VALUES).to(self.device)
        self._staged: dict[int, Batch] = {}

    def batch(self, indices: np.ndarray | slice) -> Batch:
        """Images ``(B, 1, S, S)`` float32 in [0, 1] and labels ``(B, 1)``, on the training device."""
        if self.pipeline == "staged":
            return staged_batch(self._staged, indices, len(self.split), self._gather)
        return self._gather(indices)

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

    def batches(self, index_batches: Iterable[np.ndarray | slice]) -> Iterator[Batch]:
        for indices in index_batches:
            yield self.batch(indices)


def _train_one_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterable[Batch]) -> float:
    """One pass over ``batches`` (device tensors); returns the sample-weighted mean loss."""
    model.train()
    total = torch.zeros((), dtype=torch.float64, device=_device())
    count = 0
    for x, y in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = normalized_mae(model(x), y)
        loss.backward()
        optimizer.step()
        total += loss.detach().double() * len(y)
        count += len(y)
    return float(total.item()) / count


def _evaluate(model: nn.Module, batches: Iterable[Batch]) -> float:
    """Mean normalised MAE over ``batches`` in eval mode (running BatchNorm statistics, no dropout)."""
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=_device())
    count = 0
    with torch.inference_mode():
        for x, y in batches:
            total += normalized_mae(model(x), y).double() * len(y)
            count += len(y)
    return float(total.item()) / count


def fit(
    model: nn.Module,
    data: TrainingData,
    config: TrainConfig,
    options: TorchOptions,
    *,
    on_epoch_end: EpochCallback,
) -> TrainResult:
    """Train with Adam and early stopping; on return ``model`` holds the best-validation weights.

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
    stopper = EarlyStopping(config.patience, config.min_delta)
    meter = EpochMeter(BACKEND, backends.get(BACKEND).device_sync())
    history = []
    best_state: dict[str, torch.Tensor] | None = None
    with python_alloc_meter(config.tracemalloc) as alloc:
        for epoch in range(config.epochs):
            learning_rate = lr_at_epoch(config, epoch)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate
            batches = sampler.batches(epoch)
            meter.begin_epoch()
            train_loss = _train_one_epoch(runner, optimizer, train_inputs.batches(batches))
            meter.begin_validation()
            val_loss = _evaluate(runner, val_inputs.batches(val_order))
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


def device() -> str:
    return str(_device())


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


def load_model(uri: str) -> nn.Module:
    """A logged model on this process's device (CUDA when there is one).

    Models logged by this version are pyfunc models over their weights (:mod:`thread_bench.models.torch_pyfunc`);
    runs logged before used MLflow's ``pytorch`` flavor (``pt2``), still readable.
    """
    import mlflow.pytorch

    if "pytorch" not in mlflow.models.get_model_info(uri).flavors:
        return torch_pyfunc.load_model(uri, device())
    return mlflow.pytorch.load_model(uri).to(_device())


def log_model(model: nn.Module, example_images: np.ndarray) -> str:
    """Log ``model`` to MLflow with a signature (see :mod:`thread_bench.models.torch_pyfunc` for the format
    and why); returns its model URI.

    Args:
        example_images: a few ``(N, S, S)`` images; the signature and input example are
            ``(N, 1, S, S)`` float32 in [0, 1].
    """
    return torch_pyfunc.log_model(model, example_images)  # type: ignore[arg-type]
