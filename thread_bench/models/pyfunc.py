"""How every trained model of the suite is logged to MLflow and loaded back: one pyfunc over its weights, for
every framework and backend, that answers a user's raw inputs (docs/DESIGN.md §9).

The logged model is the network's description (``architecture.json``: the workload, its models module, its model
config class and values, the framework and backend it was trained on, the precision and implementation style,
the weights' format, and the workload's serving module with the preprocessing it applies), its weights, and a
copy of the ``thread_bench`` package (``code_paths``) that MLflow puts first on ``sys.path`` where it loads the
model. So it loads and predicts in a process that never imported the project, outside any checkout
(``mlflow.pyfunc.load_model``, ``mlflow models predict``, ``mlflow models serve``): the network is rebuilt by the
models module's ``build_model`` and the weights read back, without any training state (no optimizer, no loss).

The weights: a PyTorch state dict read back with ``torch.load(weights_only=True)`` (tensors only: no code runs)
and mapped onto the loading machine's device; a Keras model's ``get_weights()`` list; or a workload's
framework-neutral weights (``get_weights``, the low-level TensorFlow styles), the last two as NumPy ``.npz``.

Why not MLflow's own flavors (MLflow 3.17): the ``pytorch`` flavor's default ``pt2`` format fixes the device of
the weights inside the exported program (a model exported on a CPU refuses to load on a GPU machine and the other
way round), and its ``pickle`` format is refused unless ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` is set. The
``keras`` flavor loads a model compiled, and a Keras model compiled for training names the project's loss, which a
fresh process cannot find ("Could not locate class 'WorkloadLoss'"). A ``tf.Module`` has no flavor at all. And
none of them would apply the workload's preprocessing.

What the loader may be told (``mlflow.pyfunc.load_model(uri, model_config={...})``); a value it cannot honour is
refused by name (``ValueError``). MLflow itself passes on only these keys and drops any other with a warning that
names it (``Argument(s) … were ignored``), before the model sees it; :func:`load_model` refuses such a key.

``device``
    ``cpu``, or ``cuda``/``gpu`` (``cuda:1``…): where the network runs. Default: the first GPU when there is one.
``keras_backend``
    Keras models only: ``tensorflow``, ``jax`` or ``torch``. Keras picks its backend once per process, at its
    first import; default: the backend it was trained on (or ``KERAS_BACKEND`` when set), and where Keras already
    runs, that one (a Keras model's weights are the same on every backend).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel

from thread_bench import backends, diskspace, quiet, tracking
from thread_bench.backends import tensorflow_backend
from thread_bench.models import inputs, serving

log = logging.getLogger(__name__)

WEIGHTS_ARTIFACT = "weights"
ARCHITECTURE_ARTIFACT = "architecture"
#: How the weights are stored: a PyTorch state dict, a Keras model's weight list, or the workload's canonical
#: weights, the last two in a NumPy archive.
TORCH_STATE_DICT = "torch_state_dict"
KERAS_WEIGHTS = "keras_weights_npz"
CANONICAL_NPZ = "canonical_npz"
_WEIGHT_FILES = {TORCH_STATE_DICT: "state_dict.pt", KERAS_WEIGHTS: "weights.npz", CANONICAL_NPZ: "weights.npz"}
#: The keys ``model_config`` may hold at load time; the model is logged with each set to :data:`AUTO`, because
#: MLflow passes on only the keys a model was logged with (it drops any other, with a warning naming it).
LOADER_SETTINGS = (tracking.PARAM_MODEL_DEVICE, tracking.PARAM_MODEL_KERAS_BACKEND)
#: A loader setting's value that leaves the choice to the model (see the module docstring).
AUTO = "auto"
KERAS_BACKENDS = ("tensorflow", "jax", "torch")
#: The "model from code" file MLflow runs to build the pyfunc at load time.
_MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")
_PACKAGE = Path(__file__).resolve().parents[1]
#: Not copied into a logged model with the package: caches, and the weights of the model shipped with the package
#: (``weave_map``'s default), which no logged model needs.
_NOT_COPIED = ("__pycache__", "*.pyc", "shipped_model")

#: What models logged before workloads existed were: RegVGG, described by its ModelConfig and compute dtype.
_REGVGG_MODELS = "thread_bench.workloads.thread_density.torch_models"
_REGVGG_CONFIG = "thread_bench.config:ModelConfig"


@dataclass(frozen=True)
class Product:
    """What makes a trained network a model a user can call: its workload's serving module, the preprocessing
    that module applies (``describe``'s answer for the training's dataset) and the epoch whose weights it holds."""

    workload: str
    #: The serving module (:mod:`thread_bench.models.serving` describes what it has).
    serving: str
    preprocessing: dict[str, Any]
    #: The best epoch: the model is logged at that step, so MLflow links that epoch's metrics to it.
    step: int


class WorkloadPyfunc(PythonModel):
    """``predict(request) -> answers``: the workload's serving (:mod:`thread_bench.models.serving`) around the
    network. ``model`` is the framework's model; ``models`` the workload's models module."""

    model: Any

    def load_context(self, context: Any) -> None:
        architecture = json.loads(Path(context.artifacts[ARCHITECTURE_ARTIFACT]).read_text())
        weights_format = architecture.get("weights_format", TORCH_STATE_DICT)
        framework = architecture.get("framework") or ("torch" if weights_format == TORCH_STATE_DICT else "tensorflow")
        settings = loader_settings(context.model_config, framework)
        self.backend = architecture.get("backend") or framework
        if framework == "keras":
            self.backend = choose_keras_backend(
                architecture.get("backend"), settings.get(tracking.PARAM_MODEL_KERAS_BACKEND)
            )
        self.framework = framework
        if self.backend == "tensorflow":
            tensorflow_backend.prefer_onednn()
        self.device = resolve_device(framework, settings.get(tracking.PARAM_MODEL_DEVICE), self.backend)
        self.models = quiet.framework_import(architecture.get("models", _REGVGG_MODELS))
        module_name, class_name = architecture.get("config_class", _REGVGG_CONFIG).split(":")
        config = getattr(importlib.import_module(module_name), class_name)(**architecture["model"])
        precision = architecture.get("precision") or _precision_of(architecture["compute_dtype"])
        with self.device_scope():
            model = self.models.build_model(config, precision, architecture.get("implementation"))
            self.model = _load_weights(
                model, self.models, context.artifacts[WEIGHTS_ARTIFACT], weights_format, self.device
            )
        self.channels_first = weights_format == TORCH_STATE_DICT
        self.serving = importlib.import_module(architecture["serving"]) if "serving" in architecture else None
        self.preprocessing = architecture.get("preprocessing", {})

    def device_scope(self) -> contextlib.AbstractContextManager[Any]:
        """Where the framework places what it computes: Keras' and TensorFlow's device scopes; PyTorch's model
        was moved to its device."""
        if self.framework == "keras":
            import keras

            return keras.device(self.device)
        if self.framework == "tensorflow":
            import tensorflow as tf

            return tf.device(self.device)
        return contextlib.nullcontext()

    def predict_images(self, images: np.ndarray) -> np.ndarray:
        """The network's outputs for uint8 ``(N, S, S)`` images (the workload's ``models.predict``)."""
        with self.device_scope():
            return np.asarray(self.models.predict(self.model, images))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        if self.serving is None:
            return self._predict_tensors(model_input)
        return self.serving.predict(self.predict_images, model_input, self.preprocessing)

    def _predict_tensors(self, model_input: Any) -> np.ndarray:
        """Models logged before serving existed: images float32 in [0, 1], ``(N, 1, S, S)`` for PyTorch,
        ``(N, S, S, 1)`` for TensorFlow, in; the network's outputs ``(N, outputs)`` out."""
        images = np.asarray(model_input, dtype=np.float32)
        channel_axis = 1 if self.channels_first else 3
        if images.ndim != 4 or images.shape[channel_axis] != inputs.INPUT_CHANNELS:
            expected = "(N, 1, S, S)" if self.channels_first else "(N, S, S, 1)"
            raise ValueError(f"expected images of shape {expected}, got {images.shape}")
        outputs = self.models.predict(self.model, np.take(images, 0, axis=channel_axis))
        return np.asarray(outputs).reshape(len(images), -1)


def loader_settings(model_config: Mapping[str, Any] | None, framework: str) -> dict[str, Any]:
    """``model_config`` checked: only :data:`LOADER_SETTINGS`, and ``keras_backend`` only for a Keras model.

    Raises:
        ValueError: naming the key that is not a setting of this model.
    """
    settings = {key: value for key, value in (model_config or {}).items() if value not in (None, AUTO)}
    unknown = sorted(set(settings) - set(LOADER_SETTINGS))
    if unknown:
        raise ValueError(
            f"model_config {unknown} is not a setting of this model: expected some of {list(LOADER_SETTINGS)}"
        )
    keras_backend = settings.get(tracking.PARAM_MODEL_KERAS_BACKEND)
    if keras_backend is not None and framework != "keras":
        raise ValueError(f"model_config keras_backend={keras_backend!r}: this is a {framework} model, not a Keras one")
    return settings


def choose_keras_backend(recorded: str | None, requested: str | None) -> str:
    """The backend a Keras model runs on here (see the module docstring); imports Keras on it when it is not
    imported yet.

    Raises:
        ValueError: an unknown backend, or one other than the one Keras already runs on in this process.
    """
    if requested is not None and requested not in KERAS_BACKENDS:
        raise ValueError(f"model_config keras_backend={requested!r}: expected one of {list(KERAS_BACKENDS)}")
    if "keras" in sys.modules:
        import keras

        current = str(keras.backend.backend())
        if requested is not None and requested != current:
            raise ValueError(
                f"model_config keras_backend={requested!r}: Keras already runs on {current!r} in this process (it "
                "picks its backend at its first import); load the model in a fresh process"
            )
        return current
    chosen = requested or os.environ.get("KERAS_BACKEND") or recorded or "tensorflow"
    if requested is None and not os.environ.get("KERAS_BACKEND") and importlib.util.find_spec(chosen) is None:
        available = [name for name in KERAS_BACKENDS if importlib.util.find_spec(name) is not None]
        if not available:
            raise ValueError(f"Keras needs one of {list(KERAS_BACKENDS)} installed; none is")
        log.warning("the model was trained on %s, which is not installed here: running it on %s", chosen, available[0])
        chosen = available[0]
    if chosen == "tensorflow":
        tensorflow_backend.prefer_onednn()
    previous = os.environ.get("KERAS_BACKEND")
    os.environ["KERAS_BACKEND"] = chosen
    try:
        quiet.framework_import("keras")  # Keras reads the variable now, once; the process's own is put back
    finally:
        if previous is None:
            del os.environ["KERAS_BACKEND"]
        else:
            os.environ["KERAS_BACKEND"] = previous
    return chosen


def resolve_device(framework: str, requested: str | None, backend: str) -> Any:
    """The device the network runs on, in the framework's spelling; the first GPU when there is one unless
    ``requested`` (``cpu``, ``cuda``, ``gpu``, ``cuda:1``…) says otherwise.

    Raises:
        ValueError: an unknown device, or a GPU where the framework sees none.
    """
    kind, _, index = (requested or "").lower().partition(":")
    if requested is not None and (kind not in ("cpu", "cuda", "gpu") or (index and not index.isdigit())):
        raise ValueError(f"model_config device={requested!r}: expected 'cpu', 'cuda' or 'gpu' (optionally ':<index>')")
    number = int(index or 0)
    has_gpu = backends.get(backend).gpu_count() > number
    if kind in ("cuda", "gpu") and not has_gpu:
        raise ValueError(f"model_config device={requested!r}: {framework} sees no such GPU on this machine")
    gpu = kind in ("cuda", "gpu") or (requested is None and has_gpu)
    if framework == "torch":
        import torch

        return torch.device(f"cuda:{number}" if gpu else "cpu")
    if framework == "tensorflow":
        return f"/GPU:{number}" if gpu else "/CPU:0"
    # Keras' spelling; "cpu", not "cpu:0": Keras 3.15 on torch fails to build a Dropout layer under "cpu:0".
    return f"gpu:{number}" if gpu else "cpu"


def _precision_of(compute_dtype: str) -> str:
    return "bf16" if compute_dtype == "bfloat16" else "fp32"


def _load_weights(model: Any, models: Any, path: str, weights_format: str, device: Any) -> Any:
    if weights_format == TORCH_STATE_DICT:
        import torch

        model.load_state_dict(torch.load(path, map_location=device, weights_only=True))
        return model.to(device).eval()
    with np.load(path) as archive:
        weights = {name: archive[name] for name in archive.files}
    if weights_format == KERAS_WEIGHTS:
        model.set_weights([weights[name] for name in sorted(weights)])
    else:
        models.set_weights(model, weights)
    return model


def _save_weights(model: Any, models: Any, path: Path, weights_format: str) -> None:
    if weights_format == TORCH_STATE_DICT:
        import torch

        torch.save({name: value.detach().cpu() for name, value in model.state_dict().items()}, path)
    elif weights_format == KERAS_WEIGHTS:
        arrays: dict[str, Any] = {f"w{index:04d}": np.asarray(value) for index, value in enumerate(model.get_weights())}
        np.savez(path, **arrays)
    elif weights_format == CANONICAL_NPZ:
        np.savez(path, **models.get_weights(model))
    else:
        raise ValueError(f"weights_format must be one of {list(_WEIGHT_FILES)}, got {weights_format!r}")


def log_model(
    model: Any,
    models: Any,
    config: Any,
    precision: str,
    example_images: np.ndarray,
    product: Product,
    *,
    framework: str,
    backend: str,
    weights_format: str,
    requirements: list[str],
) -> str:
    """Log ``model`` (its weights as they are now) under the active run, at ``product.step``; returns its URI.

    Args:
        models: the workload's models module (``build_model``, ``predict``; ``get_weights``/``set_weights`` for
            :data:`CANONICAL_NPZ`), by which it is rebuilt.
        config: the model config it was built from (a dataclass, with its implementation style resolved where it
            has one), and ``precision`` the precision.
        example_images: a few prepared uint8 ``(N, S, S)`` images, from which the serving makes the input example.
        framework, backend: what it was trained with (a Keras model is rebuilt on that backend by default).
        weights_format: :data:`TORCH_STATE_DICT`, :data:`KERAS_WEIGHTS` or :data:`CANONICAL_NPZ`.
        requirements: the pip requirements of the framework.
    """
    module = importlib.import_module(product.serving)
    example = module.input_example(example_images, product.preprocessing)
    signature = ModelSignature(
        inputs=module.input_schema(product.preprocessing), outputs=module.output_schema(product.preprocessing)
    )
    with tempfile.TemporaryDirectory(prefix="thread-bench-model-") as directory:
        weights = Path(directory) / _WEIGHT_FILES[weights_format]
        _save_weights(model, models, weights, weights_format)
        architecture = Path(directory) / "architecture.json"
        description = {
            "workload": product.workload,
            "framework": framework,
            "backend": backend,
            "models": models.__name__,
            "config_class": f"{type(config).__module__}:{type(config).__qualname__}",
            "precision": precision,
            "implementation": getattr(config, "implementation", None),
            "weights_format": weights_format,
            "serving": product.serving,
            "preprocessing": product.preprocessing,
            "step": product.step,
        }
        architecture.write_text(json.dumps({**description, "model": dataclasses.asdict(config)}, indent=1))
        code = _package_copy(Path(directory))
        destination, needed = _artifact_destination(), diskspace.directory_bytes(directory)
        if destination is not None:  # refused before MLflow writes a byte: the store keeps room to end the run
            diskspace.check_room(destination, needed, "the model")
        # A remote artifact store: MLflow writes the model to a local temporary folder first, then uploads it.
        written = destination or Path(tempfile.gettempdir())
        with diskspace.writing(written, "the model", needed), _discarded_if_full():
            info = mlflow.pyfunc.log_model(
                name=tracking.ARTIFACT_MODEL,
                python_model=str(_MODEL_CODE),
                artifacts={WEIGHTS_ARTIFACT: str(weights), ARCHITECTURE_ARTIFACT: str(architecture)},
                code_paths=[str(code)],
                signature=signature,
                input_example=example,
                pip_requirements=[*requirements, *serving.pinned(("numpy", "pandas", *module.REQUIREMENTS))],
                # Both keys for every framework: a keras_backend given for another model reaches it and is refused by
                # name. MLflow also logs them as params of the run (device=auto, keras_backend=auto: how it loads).
                model_config=dict.fromkeys(LOADER_SETTINGS, AUTO),
                metadata={"thread_bench": {key: description[key] for key in _METADATA}},
                step=product.step,
            )
    return str(info.model_uri)


@contextlib.contextmanager
def _discarded_if_full() -> Iterator[None]:
    """On a full disk (met although the room was checked: another process took it), remove what MLflow had
    written of the active run's model, which gives the room back, and mark that logged model FAILED: the store,
    often on the same disk, can then record the run's end."""
    try:
        yield
    except Exception as error:
        if diskspace.disk_full(error) is not None and (run := mlflow.active_run()) is not None:
            _discard_partial_models(run.info.run_id, run.info.experiment_id)
        raise


def _discard_partial_models(run_id: str, experiment_id: str) -> None:
    client = mlflow.MlflowClient()
    with contextlib.suppress(Exception):  # best effort: the error being raised says what happened
        found = client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'")
        for logged in found:
            if str(logged.status) == "READY":
                continue
            location = logged.artifact_location
            if location.startswith("file:"):
                location = urllib.parse.unquote(urllib.parse.urlparse(location).path)
            if "://" not in location:
                shutil.rmtree(location, ignore_errors=True)
            client.finalize_logged_model(logged.model_id, "FAILED")


#: What a logged model's MLflow metadata says of it (``description``'s keys).
_METADATA = ("workload", "framework", "backend", "step")


def _artifact_destination() -> Path | None:
    """The local folder the active run's artifacts go to; None for a remote artifact store."""
    uri = mlflow.get_artifact_uri()
    if uri.startswith("file:"):
        return Path(urllib.parse.unquote(urllib.parse.urlparse(uri).path))
    return Path(uri) if "://" not in uri and ":" not in uri[:3] else None


def _package_copy(directory: Path) -> Path:
    """The ``thread_bench`` package's code, copied into ``directory`` for the logged model (``code_paths``)."""
    copy = directory / _PACKAGE.name
    shutil.copytree(_PACKAGE, copy, ignore=shutil.ignore_patterns(*_NOT_COPIED))
    return copy


def unwrap(uri: str, model_config: dict[str, Any] | None = None) -> WorkloadPyfunc:
    """The pyfunc of a model logged by :func:`log_model` (or by an earlier version of it).

    Raises:
        ValueError: the model is not one thread_bench logged as pyfunc.
    """
    loader_settings(model_config, "keras")  # what MLflow would drop with a warning is refused here
    loaded = mlflow.pyfunc.load_model(uri, model_config=model_config)
    wrapped = loaded.unwrap_python_model()
    if not isinstance(wrapped, WorkloadPyfunc):
        raise ValueError(f"{uri} is not a model thread_bench logged as pyfunc (found {type(wrapped).__name__})")
    return wrapped


def load_files(directory: str | Path, model_config: dict[str, Any] | None = None) -> WorkloadPyfunc:
    """The pyfunc of a model kept as its two files outside MLflow (``architecture.json`` and the weights, as
    :func:`log_model` writes them into a logged model's artifacts): a model shipped with the package.

    Raises:
        ValueError: naming the file that is missing or unreadable.
    """
    folder = Path(directory)
    architecture = folder / "architecture.json"
    try:
        weights_format = json.loads(architecture.read_text()).get("weights_format", TORCH_STATE_DICT)
    except (OSError, ValueError) as error:
        raise ValueError(f"{architecture}: expected a model description (architecture.json) there ({error})") from None
    weights = folder / _WEIGHT_FILES.get(weights_format, "?")
    if not weights.is_file():
        raise ValueError(f"{weights}: the weights of {architecture} are missing (format {weights_format!r})")
    context = SimpleNamespace(
        artifacts={ARCHITECTURE_ARTIFACT: str(architecture), WEIGHTS_ARTIFACT: str(weights)},
        model_config=model_config or {},
    )
    model = WorkloadPyfunc()
    model.load_context(context)
    return model


def load_model(uri: str, device: str | None = None) -> Any:
    """The framework model of a model logged by :func:`log_model` (on ``device``, default: a GPU if present)."""
    return unwrap(uri, {tracking.PARAM_MODEL_DEVICE: device} if device else None).model


def is_pyfunc(uri: str) -> bool:
    """Whether ``uri`` is a model logged by :func:`log_model` (not by an MLflow framework flavor)."""
    flavors = mlflow.models.get_model_info(uri).flavors
    return "python_function" in flavors and len(flavors) == 1
