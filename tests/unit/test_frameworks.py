"""The registries: frameworks and backends behind one interface each, twins that stay twins, and shared code
that imports no framework."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from thread_bench import backends, frameworks
from thread_bench.frameworks import Trainer

ROOT = Path(__file__).resolve().parents[2]
#: Modules that serve every framework; none may import one (they ask a registry instead).
SHARED_MODULES = (
    "thread_bench.measure",
    "thread_bench.frameworks",
    "thread_bench.backends",
    "thread_bench.training.common",
    "thread_bench.training.driver",
    "thread_bench.keras_train",
    "thread_bench.torch_train",
    "thread_bench.tensorflow_train",
    "thread_bench.pingpong",
    "thread_bench.study",
    "thread_bench.workloads",
    "thread_bench.workloads.thread_density",
    "thread_bench.workloads.digits",
    "thread_bench.workloads.digits.spec",
    "analysis.cli",
    "analysis.evaluate",
    "analysis.report",
)


def _public_functions(module: ModuleType) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(value)
        for name, value in vars(module).items()
        if inspect.isfunction(value) and value.__module__ == module.__name__ and not name.startswith("_")
    }


def _shape(signature: inspect.Signature) -> list[tuple[str, object, bool]]:
    """Parameter names, kinds and whether each has a default: what callers of either twin rely on."""
    return [(p.name, p.kind, p.default is not p.empty) for p in signature.parameters.values()]


def _assert_twins(*modules: ModuleType) -> None:
    first, *others = modules
    functions = _public_functions(first)
    for other in others:
        other_functions = _public_functions(other)
        assert sorted(functions) == sorted(other_functions), other.__name__
        for name, signature in functions.items():
            assert _shape(signature) == _shape(other_functions[name]), f"{other.__name__}.{name}"


def test_the_trainers_are_twins_with_the_same_public_functions_and_parameters() -> None:
    from thread_bench.training import keras_trainer, tensorflow_trainer, torch_trainer

    _assert_twins(keras_trainer, torch_trainer, tensorflow_trainer)


def test_each_workloads_models_modules_are_twins() -> None:
    """A workload's models in every framework expose the ``Models`` protocol with the same parameters (digits'
    modules have more in common, compared in tests/integration/test_digits_models.py)."""
    from thread_bench import workloads

    protocol = ("build_model", "count_parameters", "loss", "predict")
    for workload in workloads.WORKLOADS.values():
        shapes = {
            framework: {
                name: _shape(signature)
                for name, signature in _public_functions(workload.models_for(framework)).items()  # type: ignore[arg-type]
                if name in protocol
            }
            for framework in workload.frameworks
        }
        first = next(iter(shapes.values()))
        assert sorted(first) == sorted(protocol), workload.name
        assert all(other == first for other in shapes.values()), (workload.name, shapes)


def test_every_trainer_implements_the_protocol() -> None:
    members = [name for name in vars(Trainer) if not name.startswith("_")] + list(Trainer.__annotations__)
    assert {"fit", "log_model", "load_model", "configure", "FRAMEWORK"} <= set(members)
    for framework in frameworks.FRAMEWORKS.values():
        trainer = framework.load_trainer(framework.default_backend)
        assert framework.name == trainer.FRAMEWORK
        assert not [name for name in members if not hasattr(trainer, name)], framework.name


def test_every_backend_implements_the_protocol() -> None:
    members = [name for name in vars(backends.Backend) if not name.startswith("_")]
    assert {"device_sync", "set_precision", "startup_environment"} <= set(members)
    for name in backends.NAMES:
        backend = backends.get(name)
        assert name == backend.NAME
        assert not [member for member in members if not hasattr(backend, member)], name


def test_unknown_names_are_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"framework must be one of \['keras', 'torch', 'tensorflow'\], got 'mxnet'"):
        frameworks.get("mxnet")
    with pytest.raises(ValueError, match=r"backend must be one of \['torch', 'tensorflow', 'jax'\], got 'cntk'"):
        backends.get("cntk")


def test_a_framework_sets_its_backend_before_its_first_import() -> None:
    keras, torch = frameworks.get("keras"), frameworks.get("torch")
    assert keras.startup_environment("jax")["KERAS_BACKEND"] == "jax"
    assert keras.startup_environment("jax")["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert "KERAS_BACKEND" not in torch.startup_environment("torch")
    assert keras.backend_is_option and not torch.backend_is_option
    assert (keras.default_backend, torch.default_backend) == ("tensorflow", "torch")
    with pytest.raises(ValueError, match="--threads: the jax backend supports 0"):
        keras.startup_environment("jax", threads=2)


def test_shared_modules_import_no_framework() -> None:
    code = (
        f"import importlib, sys\nfor name in {SHARED_MODULES!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in ('torch', 'tensorflow', 'jax', 'keras') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
