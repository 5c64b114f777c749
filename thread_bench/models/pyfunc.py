"""How a trained PyTorch or plain-TensorFlow model (any workload's) is logged to MLflow and loaded back: a
pyfunc model over its weights. (Keras models use MLflow's Keras flavor.)

Why not MLflow's ``pytorch`` flavor (MLflow 3.17): its default ``pt2`` format (``torch.export``) fixes the
device of the weights inside the exported program, so a model exported on a CPU does not load on a GPU
machine (MLflow's pyfunc picks CUDA when there is one and refuses: "contains weights / buffers on 'cpu'
device, it can't be loaded on 'cuda' device" — the warning a GPU training printed when MLflow validated the
input example) and one exported on a GPU does not load without one; its ``pickle`` format is refused at load
time unless ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` is set. A ``tf.Module`` of the low-level TensorFlow styles
has no MLflow flavor at all.

So the logged model is the network's description (JSON: the workload's models module, its model config class
and values, the precision and implementation style) plus its weights — a PyTorch state dict, read back with
``torch.load(weights_only=True)`` (tensors only: no code runs) and mapped onto whatever device the loading
machine has, or the workload's framework-neutral weights (``get_weights``) as a NumPy ``.npz``. The network is
rebuilt by the models module's ``build_model``, whose package travels with the model (``code_paths``), so it
loads where thread_bench is not installed. A PyTorch model predicts on CUDA when there is a GPU, else on the
CPU; ``mlflow.pyfunc.load_model(uri, model_config={"device": "cpu"})`` chooses.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel

from thread_bench import tracking
from thread_bench.models import inputs

WEIGHTS_ARTIFACT = "weights"
ARCHITECTURE_ARTIFACT = "architecture"
#: How the weights are stored: a PyTorch state dict, or the workload's canonical weights in a NumPy archive.
TORCH_STATE_DICT = "torch_state_dict"
CANONICAL_NPZ = "canonical_npz"
#: The "model from code" file MLflow runs to build the pyfunc at load time.
_MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")
_PACKAGE = Path(__file__).resolve().parents[1]

#: What models logged before workloads existed were: RegVGG, described by its ModelConfig and compute dtype.
_REGVGG_MODELS = "thread_bench.workloads.thread_density.torch_models"
_REGVGG_CONFIG = "thread_bench.config:ModelConfig"


class WorkloadPyfunc(PythonModel):
    """``predict(images float32 in [0, 1]) -> (N, outputs)``: what the workload's model outputs (threads/cm for
    thread density, logits for digits). The images are ``(N, 1, S, S)`` for PyTorch, ``(N, S, S, 1)`` for
    TensorFlow. ``model`` is the framework's model."""

    model: Any

    def load_context(self, context: Any) -> None:
        architecture = json.loads(Path(context.artifacts[ARCHITECTURE_ARTIFACT]).read_text())
        self.models = importlib.import_module(architecture.get("models", _REGVGG_MODELS))
        module_name, class_name = architecture.get("config_class", _REGVGG_CONFIG).split(":")
        config = getattr(importlib.import_module(module_name), class_name)(**architecture["model"])
        precision = architecture.get("precision") or _precision_of(architecture["compute_dtype"])
        model = self.models.build_model(config, precision, architecture.get("implementation"))
        self.channels_first = architecture.get("weights_format", TORCH_STATE_DICT) == TORCH_STATE_DICT
        if self.channels_first:
            import torch

            device = (context.model_config or {}).get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
            state = torch.load(context.artifacts[WEIGHTS_ARTIFACT], map_location=device, weights_only=True)
            model.load_state_dict(state)
            model = model.to(device).eval()
        else:
            with np.load(context.artifacts[WEIGHTS_ARTIFACT]) as weights:
                self.models.set_weights(model, dict(weights))
        self.model = model

    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None) -> np.ndarray:
        images = np.asarray(model_input, dtype=np.float32)
        channel_axis = 1 if self.channels_first else 3
        if images.ndim != 4 or images.shape[channel_axis] != inputs.INPUT_CHANNELS:
            expected = "(N, 1, S, S)" if self.channels_first else "(N, S, S, 1)"
            raise ValueError(f"expected images of shape {expected}, got {images.shape}")
        outputs = self.models.predict(self.model, np.take(images, 0, axis=channel_axis))
        return outputs.reshape(len(images), -1)


def _precision_of(compute_dtype: str) -> str:
    return "bf16" if compute_dtype == "bfloat16" else "fp32"


def log_model(
    model: Any,
    models: Any,
    config: Any,
    precision: str,
    example_images: np.ndarray,
    *,
    weights_format: str,
    requirements: list[str],
) -> str:
    """Log ``model`` (its weights as they are now) under the active run; returns the model URI.

    Args:
        models: the workload's models module (``build_model``, ``predict``; ``get_weights``/``set_weights`` for
            :data:`CANONICAL_NPZ`), by which it is rebuilt.
        config: the model config it was built from (a dataclass, with its implementation style resolved where it
            has one), and ``precision`` the precision.
        example_images: a few ``(N, S, S)`` images for the signature and input example (float32 in [0, 1]).
        weights_format: :data:`TORCH_STATE_DICT` (a PyTorch module) or :data:`CANONICAL_NPZ`.
        requirements: the pip requirements of the framework.
    """
    x = inputs.as_model_input(example_images, config.input_size)
    x = x[:, np.newaxis] if weights_format == TORCH_STATE_DICT else x[..., np.newaxis]
    y = models.predict(model, example_images).reshape(len(example_images), -1)
    with tempfile.TemporaryDirectory(prefix="thread-bench-model-") as directory:
        weights = Path(directory) / ("state_dict.pt" if weights_format == TORCH_STATE_DICT else "weights.npz")
        _save_weights(model, models, weights, weights_format)
        architecture = Path(directory) / "architecture.json"
        description = {
            "models": models.__name__,
            "config_class": f"{type(config).__module__}:{type(config).__qualname__}",
            "precision": precision,
            "implementation": getattr(config, "implementation", None),
            "weights_format": weights_format,
        }
        architecture.write_text(json.dumps({**description, "model": dataclasses.asdict(config)}))
        info = mlflow.pyfunc.log_model(
            name=tracking.ARTIFACT_MODEL,
            python_model=str(_MODEL_CODE),
            artifacts={WEIGHTS_ARTIFACT: str(weights), ARCHITECTURE_ARTIFACT: str(architecture)},
            code_paths=[str(_PACKAGE)],
            signature=mlflow.models.infer_signature(x, y),
            input_example=x,
            pip_requirements=[*requirements, f"numpy=={np.__version__}"],
        )
    return str(info.model_uri)


def _save_weights(model: Any, models: Any, path: Path, weights_format: str) -> None:
    if weights_format == TORCH_STATE_DICT:
        import torch

        torch.save({name: value.detach().cpu() for name, value in model.state_dict().items()}, path)
    elif weights_format == CANONICAL_NPZ:
        np.savez(path, **models.get_weights(model))
    else:
        raise ValueError(f"weights_format must be {TORCH_STATE_DICT!r} or {CANONICAL_NPZ!r}, got {weights_format!r}")


def load_model(uri: str, device: str | None = None) -> Any:
    """The framework model of a model logged by :func:`log_model` (a PyTorch one on ``device``, default: CUDA
    if present)."""
    loaded = mlflow.pyfunc.load_model(uri, model_config={"device": device} if device else None)
    wrapped = loaded.unwrap_python_model()
    if not isinstance(wrapped, WorkloadPyfunc):
        raise ValueError(f"{uri} is not a model thread_bench logged as pyfunc (found {type(wrapped).__name__})")
    return wrapped.model
