"""How a trained PyTorch RegVGG is logged to MLflow and loaded back: a pyfunc model over its weights.

Why not the ``mlflow.pytorch`` flavor (MLflow 3.17): its default ``pt2`` format (``torch.export``) fixes the
device of the weights inside the exported program, so a model exported on a CPU does not load on a GPU
machine (MLflow's pyfunc picks CUDA when there is one and refuses: "contains weights / buffers on 'cpu'
device, it can't be loaded on 'cuda' device" — the warning a GPU training printed when MLflow validated the
input example) and one exported on a GPU does not load without one; its ``pickle`` format is refused at load
time unless ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` is set.

So the logged model is the network's ``ModelConfig`` and compute dtype (JSON) plus its state dict, read back
with ``torch.load(weights_only=True)`` (tensors only: no code runs) and mapped onto whatever device the
loading machine has; the network is rebuilt by this package's code, which travels with the model
(``code_paths``), so it loads where thread_bench is not installed. It predicts on CUDA when there is a GPU,
else on the CPU; ``mlflow.pyfunc.load_model(uri, model_config={"device": "cpu"})`` chooses.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.pyfunc import PythonModel

from thread_bench import tracking
from thread_bench.config import ModelConfig
from thread_bench.models import spec, torch_model

WEIGHTS_ARTIFACT = "weights"
ARCHITECTURE_ARTIFACT = "architecture"
#: The "model from code" file MLflow runs to build the pyfunc at load time.
_MODEL_CODE = Path(__file__).with_name("torch_pyfunc_model.py")
_PACKAGE = Path(__file__).resolve().parents[1]


class RegVGGPyfunc(PythonModel):
    """``predict((N, 1, S, S) float32 in [0, 1]) -> (N, 1)`` threads/cm; ``model`` is the ``nn.Module``."""

    model: torch_model.RegVGG

    def load_context(self, context: Any) -> None:
        device = (context.model_config or {}).get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        architecture = json.loads(Path(context.artifacts[ARCHITECTURE_ARTIFACT]).read_text())
        model = torch_model.build_model(ModelConfig(**architecture["model"]), architecture["compute_dtype"])
        state = torch.load(context.artifacts[WEIGHTS_ARTIFACT], map_location=device, weights_only=True)
        model.load_state_dict(state)
        self.model = model.to(device).eval()

    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None) -> np.ndarray:
        images = np.asarray(model_input, dtype=np.float32)
        if images.ndim != 4 or images.shape[1] != spec.INPUT_CHANNELS:
            raise ValueError(f"expected images of shape (N, 1, S, S), got {images.shape}")
        return torch_model.predict(self.model, images[:, 0]).reshape(-1, 1)


def log_model(model: torch_model.RegVGG, example_images: np.ndarray) -> str:
    """Log ``model`` (its weights as they are now) under the active run; returns the model URI.

    Args:
        example_images: a few ``(N, S, S)`` images for the signature and input example
            (``(N, 1, S, S)`` float32 in [0, 1]).
    """
    x = spec.as_model_input(example_images, model.config.input_size)[:, np.newaxis]
    y = torch_model.predict(model, example_images).reshape(-1, 1)
    with tempfile.TemporaryDirectory(prefix="thread-bench-model-") as directory:
        weights = Path(directory) / "state_dict.pt"
        architecture = Path(directory) / "architecture.json"
        torch.save({name: value.detach().cpu() for name, value in model.state_dict().items()}, weights)
        architecture.write_text(
            json.dumps({"model": dataclasses.asdict(model.config), "compute_dtype": model.compute_dtype})
        )
        info = mlflow.pyfunc.log_model(
            name=tracking.ARTIFACT_MODEL,
            python_model=str(_MODEL_CODE),
            artifacts={WEIGHTS_ARTIFACT: str(weights), ARCHITECTURE_ARTIFACT: str(architecture)},
            code_paths=[str(_PACKAGE)],
            signature=mlflow.models.infer_signature(x, y),
            input_example=x,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"],
        )
    return str(info.model_uri)


def load_model(uri: str, device: str | None = None) -> torch_model.RegVGG:
    """The ``nn.Module`` of a model logged by :func:`log_model`, on ``device`` (default: CUDA if present)."""
    loaded = mlflow.pyfunc.load_model(uri, model_config={"device": device} if device else None)
    wrapped = loaded.unwrap_python_model()
    if not isinstance(wrapped, RegVGGPyfunc):
        raise ValueError(f"{uri} is not a thread_bench PyTorch model (found {type(wrapped).__name__})")
    return wrapped.model
