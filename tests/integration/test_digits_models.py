"""The digits reference models: every implementation follows the spec, given the same canonical weights gives the
same logits, loss and gradients, and moves weights exactly; bad inputs fail with one-line errors.

Tolerances and achieved deviations are the constants of ``digits_parity``. Keras runs in this process on its
default backend (TensorFlow unless KERAS_BACKEND says otherwise); cnn3 parity under the other two Keras backends
runs ``digits_parity.py`` in subprocesses.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import keras
import numpy as np
import pytest
import torch

import digits_parity
import isa_helpers
from thread_bench.workloads.digits import keras_models, spec, tensorflow_models, torch_models
from thread_bench.workloads.digits.config import IMPLEMENTATIONS, DigitsModelConfig

MODULES: dict[str, ModuleType] = {"keras": keras_models, "torch": torch_models, "tensorflow": tensorflow_models}
PUBLIC_API = ("build_model", "count_parameters", "loss", "predict", "get_weights", "set_weights", "loss_and_gradients")
#: The reference tutorials' parameter counts; cnn5 (not stated by its tutorial) is the analytic count with
#: 'valid' padding: 832 + 51,264 + 65,600 + 650.
EXPECTED_PARAMETERS = {"cnn3": 34_826, "cnn5": 118_346, "mlp": 109_386}
ALL_IMPLEMENTATIONS = [(m, f, s) for m in spec.MODELS for f, s in digits_parity.implemented(m)]
CNN3_IMPLEMENTATIONS = digits_parity.implemented("cnn3")


def _ids(cases: Sequence[tuple[str, ...]]) -> list[str]:
    return ["-".join(case) for case in cases]


# ---------------------------------------------------------------------------------------------------------
# Spec and API


def test_the_three_modules_expose_the_same_api() -> None:
    def shape(function: Callable[..., Any]) -> list[tuple[str, object, object]]:
        return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]

    for name in PUBLIC_API:
        shapes = {framework: shape(getattr(module, name)) for framework, module in MODULES.items()}
        assert len({json.dumps(s, default=str) for s in shapes.values()}) == 1, (name, shapes)


def test_spec_shapes_and_styles() -> None:
    assert spec.layer_input_shapes("cnn3")["flatten"] == (5, 5, 64)
    assert spec.layer_input_shapes("cnn5")["flatten"] == (4, 4, 64)  # 28 -> 24 -> 12 -> 8 -> 4
    assert spec.post_flatten_dense("cnn3") == ("output", (5, 5, 64))
    assert spec.post_flatten_dense("mlp") == ("dense1", (28, 28, 1))
    assert spec.implementations("cnn3", "keras") == IMPLEMENTATIONS["keras"]
    assert spec.implementations("mlp", "tensorflow") == ("lowlevel",)
    for framework, styles in IMPLEMENTATIONS.items():
        assert spec.resolve_implementation(framework, DigitsModelConfig(model="cnn5")) == styles[0]
    kernel = np.arange(5 * 5 * 64 * 3, dtype=np.float32).reshape(-1, 3)
    np.testing.assert_array_equal(spec.chw_rows_to_hwc(spec.hwc_rows_to_chw(kernel, (5, 5, 64)), (5, 5, 64)), kernel)


@pytest.mark.parametrize(("model_name", "framework", "style"), ALL_IMPLEMENTATIONS, ids=_ids(ALL_IMPLEMENTATIONS))
def test_parameter_counts(model_name: str, framework: str, style: str) -> None:
    expected = EXPECTED_PARAMETERS[model_name]
    assert spec.count_parameters_analytic(model_name) == expected
    module = MODULES[framework]
    model = module.build_model(DigitsModelConfig(model=model_name), implementation=style)
    assert module.count_parameters(model) == expected
    weights = module.get_weights(model)
    assert {k: v.shape for k, v in weights.items()} == spec.weight_shapes(model_name)
    assert all(not weights[k].any() for k in weights if k.endswith("/bias")), "biases start at zero"
    for key, value in weights.items():  # glorot-uniform kernels: inside the bound, and using most of it
        if key.endswith("/kernel"):
            limit = spec.glorot_limit(value.shape)
            assert np.abs(value).max() <= limit and np.abs(value).max() > 0.9 * limit, key


# ---------------------------------------------------------------------------------------------------------
# Parity


@pytest.mark.parametrize("model_name", list(spec.MODELS))
def test_every_implementation_gives_the_reference_logits(model_name: str) -> None:
    # cnn3: all five styles; cnn5 and mlp: Keras functional, PyTorch module, TensorFlow lowlevel.
    deviations = digits_parity.check_logits(model_name, tuple(IMPLEMENTATIONS))
    assert len(deviations) == len(digits_parity.implemented(model_name))


@pytest.mark.parametrize("model_name", list(spec.MODELS))
def test_one_step_loss_and_gradients_agree(model_name: str) -> None:
    """Same weights, same batch, dropout off: loss and gradients of every style against PyTorch's."""
    digits_parity.check_step(model_name, tuple(IMPLEMENTATIONS))


@pytest.mark.parametrize("framework", list(MODULES))
def test_loss_is_the_mean_cross_entropy(framework: str) -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(0.0, 4.0, (6, spec.N_CLASSES)).astype(np.float32)
    targets = rng.integers(0, spec.N_CLASSES, (6, 1)).astype(np.float32)
    if framework == "torch":
        value = float(torch_models.loss(torch.from_numpy(logits), torch.from_numpy(targets)))
    elif framework == "tensorflow":
        value = float(tensorflow_models.loss(logits, targets))
    else:
        per_sample = keras.ops.convert_to_numpy(keras_models.loss(keras.ops.array(logits), keras.ops.array(targets)))
        assert per_sample.shape == (6,), "Keras losses are per sample; Keras averages"
        value = float(per_sample.mean())
    expected = digits_parity.reference_cross_entropy(logits, targets)
    assert abs(value - expected) <= digits_parity.REFERENCE_LOSS_ATOL, (value, expected)


@pytest.mark.parametrize(("framework", "style"), CNN3_IMPLEMENTATIONS, ids=_ids(CNN3_IMPLEMENTATIONS))
def test_dropout_only_in_training(framework: str, style: str) -> None:
    module = MODULES[framework]
    model = digits_parity.build(framework, style, "cnn3", digits_parity.weights_for("cnn3", 0))
    images, targets = digits_parity.batch(0)
    inference = module.loss_and_gradients(model, images, targets)[0]
    assert module.loss_and_gradients(model, images, targets)[0] == inference
    assert module.loss_and_gradients(model, images, targets, training=True)[0] != inference


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_cnn3_parity_under_other_keras_backends(backend: str) -> None:
    if keras.backend.backend() == backend:
        pytest.skip(f"{backend} is this process's backend; covered by the in-process tests")
    env = {**os.environ, "KERAS_BACKEND": backend}
    completed = subprocess.run(
        [sys.executable, str(Path(digits_parity.__file__))],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["backend"] == backend
    assert set(report["logits"]) == {"keras/functional", "keras/sequential", "torch/module"}


# ---------------------------------------------------------------------------------------------------------
# Transfer


@pytest.mark.parametrize(("model_name", "framework", "style"), ALL_IMPLEMENTATIONS, ids=_ids(ALL_IMPLEMENTATIONS))
def test_weights_round_trip_exactly(model_name: str, framework: str, style: str) -> None:
    weights = digits_parity.weights_for(model_name, 1)
    module = MODULES[framework]
    model = digits_parity.build(framework, style, model_name, weights)
    returned = module.get_weights(model)
    assert list(returned) == list(spec.weight_shapes(model_name))
    for key, value in weights.items():
        assert returned[key].dtype == np.float32
        np.testing.assert_array_equal(returned[key], value, err_msg=key)


@pytest.mark.parametrize("model_name", list(spec.MODELS))
def test_keras_to_torch_to_keras_is_bitwise(model_name: str) -> None:
    config = DigitsModelConfig(model=model_name)
    source = keras_models.build_model(config)
    torch_twin = torch_models.build_model(config)
    torch_models.set_weights(torch_twin, keras_models.get_weights(source))
    back = keras_models.build_model(config)
    keras_models.set_weights(back, torch_models.get_weights(torch_twin))
    for original, returned in zip(source.weights, back.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(returned), keras.ops.convert_to_numpy(original))


# ---------------------------------------------------------------------------------------------------------
# bf16


@pytest.mark.parametrize(("framework", "style"), CNN3_IMPLEMENTATIONS, ids=_ids(CNN3_IMPLEMENTATIONS))
def test_bf16_computes_in_bfloat16_with_float32_logits(framework: str, style: str) -> None:
    isa_helpers.skip_unless_bf16_runs(keras.backend.backend() if framework == "keras" else framework)
    module = MODULES[framework]
    weights, (images, _) = digits_parity.weights_for("cnn3", 0), digits_parity.batch(0)
    expected = module.predict(digits_parity.build(framework, style, "cnn3", weights), images, 4)
    model = digits_parity.build(framework, style, "cnn3", weights, precision="bf16")
    logits = module.predict(model, images, 4)
    assert logits.dtype == np.float32
    deviation = digits_parity.relative_deviation(logits, expected)
    assert digits_parity.BF16_MIN_DEVIATION <= deviation <= digits_parity.BF16_MAX_DEVIATION, deviation
    weights_back = module.get_weights(model)  # float32 weights, unchanged by the bf16 compute
    assert all(weights_back[k].dtype == np.float32 and np.array_equal(weights_back[k], v) for k, v in weights.items())


# ---------------------------------------------------------------------------------------------------------
# Bad inputs


@pytest.mark.parametrize(
    ("framework", "implementation", "message"),
    [
        (
            "torch",
            "sequential",
            r"implementation='sequential' does not fit framework torch \(expected one of \['module'\]\)",
        ),
        ("keras", "lowlevel", "does not fit framework keras"),
        ("tensorflow", "functional", "does not fit framework tensorflow"),
        ("keras", "no_such_style", "does not fit framework keras"),
    ],
)
def test_implementation_that_does_not_fit_the_framework(framework: str, implementation: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MODULES[framework].build_model(DigitsModelConfig(), implementation=implementation)


@pytest.mark.parametrize("framework", list(MODULES))
def test_style_that_exists_for_cnn3_only(framework: str) -> None:
    style = IMPLEMENTATIONS[framework][-1] if framework != "torch" else "module"
    config = DigitsModelConfig(model="mlp", implementation=style)
    if framework == "torch":
        assert isinstance(torch_models.build_model(config), torch.nn.Module)
        return
    with pytest.raises(ValueError, match=rf"model 'mlp' is implemented only as \['{IMPLEMENTATIONS[framework][0]}'\]"):
        MODULES[framework].build_model(config)


def test_unknown_model_and_precision() -> None:
    with pytest.raises(ValueError, match="unknown digits model 'resnet'"):
        spec.model_spec("resnet")
    with pytest.raises(ValueError, match="model must be one of"):
        DigitsModelConfig(model="resnet")
    with pytest.raises(ValueError, match="unknown framework 'jax'"):
        spec.implementations("cnn3", "jax")
    for module in MODULES.values():
        with pytest.raises(ValueError, match="precision must be one of"):
            module.build_model(DigitsModelConfig(), precision="fp16")


@pytest.mark.parametrize(("framework", "style"), CNN3_IMPLEMENTATIONS, ids=_ids(CNN3_IMPLEMENTATIONS))
def test_bad_weights_raise_and_change_nothing(framework: str, style: str) -> None:
    module = MODULES[framework]
    weights = digits_parity.weights_for("cnn3", 0)
    model = digits_parity.build(framework, style, "cnn3", weights)
    # Valid new values for every other key: a set_weights that wrote before checking would be caught below.
    other = digits_parity.weights_for("cnn3", 5)
    cases = [
        ({k: v for k, v in other.items() if k != "conv2/bias"}, r"lack 'conv2/bias' \(layer 'conv2'\)"),
        (
            {**other, "conv2/kernel": np.zeros((3, 3, 32, 16), np.float32)},
            r"'conv2/kernel' \(layer 'conv2'\) has shape \(3, 3, 32, 16\), expected \(3, 3, 32, 64\)",
        ),
        ({**other, "dense9/kernel": other["output/kernel"]}, r"unexpected keys \['dense9/kernel'\]"),
        ({**other, "output/bias": np.zeros(10, np.int64)}, "'output/bias' has dtype int64"),
    ]
    for bad, message in cases:
        with pytest.raises(ValueError, match=message) as raised:
            module.set_weights(model, bad)
        assert "\n" not in str(raised.value)
    after = module.get_weights(model)
    assert all(np.array_equal(after[k], v) for k, v in weights.items()), "a failed set_weights wrote something"


def test_keras_layers_style_needs_the_tensorflow_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(
        ValueError, match="'keras_layers' needs Keras on the TensorFlow backend, but KERAS_BACKEND is jax"
    ):
        tensorflow_models.build_model(DigitsModelConfig(), implementation="keras_layers")


@pytest.mark.parametrize("framework", list(MODULES))
def test_bad_images_targets_and_batch_size(framework: str) -> None:
    module = MODULES[framework]
    model = module.build_model(DigitsModelConfig(model="mlp"))
    assert module.predict(model, np.zeros((0, 28, 28), np.uint8), 4).shape == (0, spec.N_CLASSES)
    with pytest.raises(ValueError, match=r"shape \(N, 28, 28\)"):
        module.predict(model, np.zeros((2, 32, 32), np.uint8), 4)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        module.predict(model, np.zeros((2, 28, 28), np.uint8), 0)
    with pytest.raises(ValueError, match=r"class ids in \[0, 10\)"):
        module.loss_and_gradients(model, np.zeros((2, 28, 28), np.uint8), np.array([[1.0], [10.0]], np.float32))


def test_a_foreign_keras_model_is_refused() -> None:
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)], name="other")
    with pytest.raises(ValueError, match=r"was not built by digits\.keras_models\.build_model"):
        keras_models.get_weights(model)
