"""Exact weight transfer between the Keras and the PyTorch RegVGG, both ways, running statistics included.

Layers are matched by name (``stage1_module2_conv5`` <-> ``stage1.module2.conv5``), never by order:

===================  ==============================  ====================================
layer                Keras (NHWC)                    PyTorch (NCHW)
===================  ==============================  ====================================
Conv2D               kernel (kh, kw, in, out) HWIO   weight (out, in, kh, kw) OIHW; bias
BatchNormalization   gamma, beta, moving_mean/var    weight, bias, running_mean/var
Dense                kernel (in, out)                weight (out, in); bias
first Dense          rows in (h, w, c) order         columns in (c, h, w) order
===================  ==============================  ====================================

Only the Keras public API is used (``get_weights`` / ``set_weights``), so the transfer works whichever Keras
backend is active. Everything is checked before anything is written: a mismatch raises ``ValueError``
naming the layer and both shapes, and leaves both models untouched.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from thread_bench.workloads.thread_density import spec

_WEIGHTED_TORCH_TYPES = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)
#: Keras BatchNormalization variables in ``get_weights`` order, and the torch tensors they map to.
_BATCHNORM_KERAS_TO_TORCH = {
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}


def keras_to_torch(keras_model: Any, torch_model: nn.Module) -> None:
    """Copy every weight and BatchNorm statistic of ``keras_model`` into ``torch_model`` (in place)."""
    pairs = _pair_layers(keras_model, torch_model)
    flatten_hwc = _flatten_input_shape(keras_model)
    converted: list[tuple[str, torch.Tensor, np.ndarray]] = []
    for name, (layer, module) in pairs.items():
        for tensor_name, value in _keras_to_torch_arrays(layer, flatten_hwc).items():
            target = getattr(module, tensor_name)
            _check_shape(name, f"torch {tensor_name}", tuple(target.shape), value.shape)
            converted.append((name, target, value))
    with torch.no_grad():
        for _, target, value in converted:
            target.copy_(torch.from_numpy(np.ascontiguousarray(value)))


def torch_to_keras(torch_model: nn.Module, keras_model: Any) -> None:
    """Copy every weight and BatchNorm statistic of ``torch_model`` into ``keras_model`` (in place)."""
    pairs = _pair_layers(keras_model, torch_model)
    flatten_hwc = _flatten_input_shape(keras_model)
    converted: list[tuple[Any, list[np.ndarray]]] = []
    for name, (layer, module) in pairs.items():
        values = _torch_to_keras_arrays(layer, module, flatten_hwc)
        for variable, value in zip(layer.weights, values, strict=True):
            _check_shape(name, f"Keras {_short_name(variable)}", tuple(variable.shape), value.shape)
        converted.append((layer, values))
    for layer, values in converted:
        layer.set_weights(values)


def _pair_layers(keras_model: Any, torch_model: nn.Module) -> dict[str, tuple[Any, nn.Module]]:
    """Keras layers with weights and their PyTorch twins, by Keras name; checks the two sets agree."""
    keras_layers = {layer.name: layer for layer in keras_model.layers if layer.weights}
    torch_modules = {
        path: module for path, module in torch_model.named_modules() if isinstance(module, _WEIGHTED_TORCH_TYPES)
    }
    expected_paths = {spec.torch_module_path(name): name for name in keras_layers}
    missing_in_torch = sorted(name for path, name in expected_paths.items() if path not in torch_modules)
    missing_in_keras = sorted(path for path in torch_modules if path not in expected_paths)
    if missing_in_torch or missing_in_keras:
        raise ValueError(
            "the Keras and PyTorch models do not have the same layers (different base_filters or "
            f"architecture?): only in Keras {missing_in_torch[:5]}, only in PyTorch {missing_in_keras[:5]}"
        )
    pairs: dict[str, tuple[Any, nn.Module]] = {}
    for path, name in expected_paths.items():
        layer, module = keras_layers[name], torch_modules[path]
        _check_kind(name, layer, module)
        pairs[name] = (layer, module)
    return pairs


def _check_kind(name: str, layer: Any, module: nn.Module) -> None:
    kind = type(layer).__name__
    expected = {"Conv2D": nn.Conv2d, "BatchNormalization": nn.BatchNorm2d, "Dense": nn.Linear}.get(kind)
    if expected is None or not isinstance(module, expected):
        raise ValueError(f"layer {name!r}: Keras {kind} cannot be transferred to torch {type(module).__name__}")
    if isinstance(module, nn.BatchNorm2d) and not np.isclose(layer.epsilon, module.eps, rtol=1e-6, atol=0.0):
        # A different epsilon changes the outputs for the same weights: refuse rather than break parity.
        raise ValueError(
            f"layer {name!r}: BatchNorm epsilon differs (Keras {layer.epsilon}, PyTorch {module.eps}); "
            "build both models from the same ModelConfig"
        )


def _flatten_input_shape(keras_model: Any) -> tuple[int, int, int]:
    """(H, W, C) of the feature map that the Keras ``flatten`` layer flattens."""
    height, width, channels = (int(d) for d in keras_model.get_layer(spec.FLATTEN_NAME).input.shape[1:])
    return height, width, channels


def _keras_to_torch_arrays(layer: Any, flatten_hwc: tuple[int, int, int]) -> dict[str, np.ndarray]:
    values = {_short_name(v): np.asarray(w) for v, w in zip(layer.weights, layer.get_weights(), strict=True)}
    kind = type(layer).__name__
    if kind == "Conv2D":
        return {"weight": values["kernel"].transpose(3, 2, 0, 1), "bias": values["bias"]}
    if kind == "BatchNormalization":
        return {torch_name: values[keras_name] for keras_name, torch_name in _BATCHNORM_KERAS_TO_TORCH.items()}
    kernel = values["kernel"]
    if layer.name == spec.DENSE_NAMES[0]:
        kernel = _hwc_rows_to_chw(kernel, flatten_hwc, layer.name)
    return {"weight": kernel.T, "bias": values["bias"]}


def _torch_to_keras_arrays(layer: Any, module: nn.Module, flatten_hwc: tuple[int, int, int]) -> list[np.ndarray]:
    """The values for ``layer.set_weights``, in the order of ``layer.weights``."""
    kind = type(layer).__name__
    tensors = {name: t.detach().cpu().numpy() for name, t in [*module.named_parameters(), *module.named_buffers()]}
    if kind == "Conv2D":
        by_name = {"kernel": tensors["weight"].transpose(2, 3, 1, 0), "bias": tensors["bias"]}
    elif kind == "BatchNormalization":
        by_name = {keras_name: tensors[torch_name] for keras_name, torch_name in _BATCHNORM_KERAS_TO_TORCH.items()}
    else:
        kernel = tensors["weight"].T
        if layer.name == spec.DENSE_NAMES[0]:
            kernel = _chw_rows_to_hwc(kernel, flatten_hwc, layer.name)
        by_name = {"kernel": kernel, "bias": tensors["bias"]}
    return [np.ascontiguousarray(by_name[_short_name(variable)]) for variable in layer.weights]


def _hwc_rows_to_chw(kernel: np.ndarray, flatten_hwc: tuple[int, int, int], name: str) -> np.ndarray:
    height, width, channels = flatten_hwc
    _check_shape(name, "Keras kernel rows (flatten H*W*C)", (height * width * channels,), kernel.shape[:1])
    return kernel.reshape(height, width, channels, -1).transpose(2, 0, 1, 3).reshape(kernel.shape)


def _chw_rows_to_hwc(kernel: np.ndarray, flatten_hwc: tuple[int, int, int], name: str) -> np.ndarray:
    height, width, channels = flatten_hwc
    _check_shape(name, "PyTorch weight columns (flatten C*H*W)", (height * width * channels,), kernel.shape[:1])
    return kernel.reshape(channels, height, width, -1).transpose(1, 2, 0, 3).reshape(kernel.shape)


def _short_name(variable: Any) -> str:
    """``kernel`` for a variable whose path is ``stage1_module1_conv3/kernel`` (Keras 3 ``name``)."""
    return str(variable.name).split("/")[-1].split(":")[0]


def _check_shape(layer_name: str, what: str, expected: tuple[int, ...], got: tuple[int, ...]) -> None:
    if tuple(expected) != tuple(got):
        raise ValueError(
            f"layer {layer_name!r}: {what} has shape {tuple(expected)} but the other model's weight converts "
            f"to {tuple(got)}; the models were built from different configs (base_filters / input_size)"
        )
