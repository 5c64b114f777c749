"""The digits models in PyTorch: ``module``, an ``nn.Module`` (NCHW) built from ``spec.MODELS``.

Children carry the spec's layer names (``conv1``, ``pool1``, ..., ``output``), the twins of the Keras layers.
Initialised like Keras' defaults (glorot-uniform kernels, zero biases; ``xavier_uniform_`` on an OIHW or
``(out, in)`` weight has Keras' fans), so both frameworks start from the same distribution.

Weights leave and enter in the canonical layout (``spec``): conv kernels are transposed OIHW <-> HWIO, Dense
weights ``(out, in)`` <-> ``(in, out)``, and the Dense after the Flatten has its columns permuted between
PyTorch's NCHW flatten order and the canonical NHWC order.

``precision="bf16"`` is the twin of Keras' ``mixed_bfloat16``: every layer but the output computes under a
bfloat16 autocast, weights stay float32, and the output layer, hence the logits and the loss, is float32. It
is part of the model, as a Keras layer's dtype policy is, so a saved model predicts as it trained.

The model outputs logits; :func:`loss` is ``F.cross_entropy``, which applies the log-softmax.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from thread_bench.config import PREDICT_BATCH_SIZE
from thread_bench.models import inputs as model_inputs
from thread_bench.workloads.digits import spec
from thread_bench.workloads.digits.config import DigitsModelConfig

FRAMEWORK = "torch"
_T = TypeVar("_T")


def _make_module(layer: spec.LayerSpec, input_shape: tuple[int, ...]) -> nn.Module:
    """The PyTorch layer of a spec layer, given its input shape (canonical NHWC, no batch axis)."""
    if isinstance(layer, spec.Conv):
        return nn.Conv2d(input_shape[-1], layer.filters, layer.kernel)  # padding 0 = 'valid'
    if isinstance(layer, spec.Pool):
        return nn.MaxPool2d(layer.size)
    if isinstance(layer, spec.Flatten):
        return nn.Flatten()
    if isinstance(layer, spec.Dropout):
        return nn.Dropout(layer.rate)
    return nn.Linear(input_shape[0], layer.units)


class DigitsNet(nn.Module):
    """Input ``(N, 1, 28, 28)`` float32 in [0, 1], output ``(N, 10)`` float32 logits."""

    def __init__(self, model_name: str, compute_dtype: str = "float32") -> None:
        super().__init__()
        model_inputs.check_compute_dtype(compute_dtype)
        self.model_name = spec.model_spec(model_name).name
        self.compute_dtype = compute_dtype
        inputs = spec.layer_input_shapes(model_name)
        for layer in spec.model_spec(model_name).layers:
            self.add_module(layer.name, _make_module(layer, inputs[layer.name]))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Keras' defaults: glorot-uniform kernels, zero biases (not PyTorch's kaiming-uniform)."""
        for layer in spec.weighted_layers(self.model_name):
            module = getattr(self, layer.name)
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        model = spec.model_spec(self.model_name)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.compute_dtype == "bfloat16"):
            for layer in model.hidden:
                x = getattr(self, layer.name)(x)
                if getattr(layer, "activation", None) == "relu":
                    x = F.relu(x)
        with torch.autocast(x.device.type, enabled=False):
            return getattr(self, model.output.name)(x.float())  # linear: the logits


def build_model(config: DigitsModelConfig, precision: str = "fp32", implementation: str | None = None) -> DigitsNet:
    """``config.model`` as an ``nn.Module`` (the one style, ``module``; ``implementation`` overrides the config's)."""
    spec.resolve_implementation(FRAMEWORK, config, implementation)
    return DigitsNet(config.model, spec.compute_dtype(precision))


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)


def loss(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Batch-mean cross-entropy of ``(B, 10)`` logits against ``(B, 1)`` float32 class ids."""
    return F.cross_entropy(predictions.float(), targets.reshape(-1).long())


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _images_to_device(x: np.ndarray, device: torch.device) -> torch.Tensor:
    """``(B, 28, 28)`` float32 -> ``(B, 1, 28, 28)`` on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(1).to(device)


def predict(model: DigitsNet, images: np.ndarray, batch_size: int = PREDICT_BATCH_SIZE) -> np.ndarray:
    """float32 logits ``(N, 10)`` for ``(N, 28, 28)`` images (uint8, or float in [0, 1]).

    Runs in eval mode (no dropout) on the model's device, and restores the model's previous mode.
    """
    x = spec.model_input(images, batch_size)
    device = _device(model)

    def forward(batch: np.ndarray) -> np.ndarray:
        return model(_images_to_device(batch, device)).float().cpu().numpy()

    with torch.inference_mode():
        return _with_mode(model, False, lambda: spec.predict_batches(forward, x, batch_size))


def _to_canonical(model_name: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Canonical arrays from tensors keyed like ``named_parameters`` (``conv1.weight``): weights or gradients."""
    dense_name, hwc = spec.post_flatten_dense(model_name)
    result = {}
    for layer in spec.weighted_layers(model_name):
        weight = tensors[f"{layer.name}.weight"].detach().float().cpu().numpy()
        if isinstance(layer, spec.Conv):
            kernel = weight.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        else:
            kernel = weight.T if layer.name != dense_name else spec.chw_rows_to_hwc(weight.T, hwc)
        result[spec.weight_key(layer.name, "kernel")] = np.ascontiguousarray(kernel)
        result[spec.weight_key(layer.name, "bias")] = tensors[f"{layer.name}.bias"].detach().float().cpu().numpy()
    return {key: np.array(value) for key, value in result.items()}


def _from_canonical(model_name: str, weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Arrays keyed like ``named_parameters``, in PyTorch layout, from checked canonical weights."""
    dense_name, hwc = spec.post_flatten_dense(model_name)
    result = {}
    for layer in spec.weighted_layers(model_name):
        kernel = weights[spec.weight_key(layer.name, "kernel")]
        if isinstance(layer, spec.Conv):
            weight = kernel.transpose(3, 2, 0, 1)  # HWIO -> OIHW
        else:
            weight = (kernel if layer.name != dense_name else spec.hwc_rows_to_chw(kernel, hwc)).T
        result[f"{layer.name}.weight"] = np.ascontiguousarray(weight)
        result[f"{layer.name}.bias"] = weights[spec.weight_key(layer.name, "bias")]
    return result


def get_weights(model: DigitsNet) -> dict[str, np.ndarray]:
    """Canonical weights (copies)."""
    return _to_canonical(model.model_name, dict(model.named_parameters()))


def set_weights(model: DigitsNet, weights: Mapping[str, np.ndarray]) -> None:
    """Load canonical weights; a missing, unexpected or mis-shaped key raises before anything is written."""
    converted = _from_canonical(model.model_name, spec.check_weights(model.model_name, weights))
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in converted.items():
            parameters[name].copy_(torch.from_numpy(value))


def loss_and_gradients(
    model: DigitsNet, images: np.ndarray, targets: np.ndarray, training: bool = False
) -> tuple[float, dict[str, np.ndarray]]:
    """The batch-mean loss and its gradients (canonical keys and layout), without touching ``.grad``.

    Args:
        training: ``False`` (default) runs in eval mode (no dropout), so frameworks can be compared on a batch.
    """
    x, targets = spec.training_batch(images, targets)
    y = torch.from_numpy(targets).to(_device(model))
    parameters = dict(model.named_parameters())
    value, gradients = _with_mode(model, training, lambda: _loss_and_grads(model, x, y, parameters))
    return value, _to_canonical(model.model_name, dict(zip(parameters, gradients, strict=True)))


def _loss_and_grads(
    model: DigitsNet, x: np.ndarray, y: torch.Tensor, parameters: dict[str, nn.Parameter]
) -> tuple[float, tuple[torch.Tensor, ...]]:
    value = loss(model(_images_to_device(x, y.device)), y)
    return float(value.detach()), torch.autograd.grad(value, list(parameters.values()))


def _with_mode(model: nn.Module, training: bool, function: Callable[[], _T]) -> _T:
    """``function()`` with the model in train (``training``) or eval mode; restores the previous mode."""
    was_training = model.training
    model.train(training)
    try:
        return function()
    finally:
        model.train(was_training)
