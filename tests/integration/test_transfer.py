"""Weight transfer Keras <-> PyTorch: same weights give the same outputs, exactly invertible, clear errors.

Tolerances and achieved deviations are the constants of ``model_parity``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import model_parity
from thread_bench.workloads.thread_density import keras_model, torch_model, transfer
from thread_bench.workloads.thread_density.config import ModelConfig

SMALL = ModelConfig(base_filters=2, input_size=64)


@pytest.mark.parametrize(
    "config", model_parity.SMALL_CONFIGS, ids=lambda c: f"base{c.base_filters}-input{c.input_size}"
)
def test_outputs_agree_after_transfer_both_ways_and_round_trip_is_exact(config: ModelConfig) -> None:
    # Final feature maps of 2x2 and 3x3: the NHWC/NCHW permutation of dense1 is exercised.
    deviations = model_parity.check_transfer_both_ways(config)
    assert max(deviations.values()) <= model_parity.OUTPUT_ATOL


def test_transfer_matches_keras_predict() -> None:
    config = model_parity.SMALL_CONFIGS[0]
    k_model, t_model = keras_model.build_model(config), torch_model.build_model(config)
    model_parity.randomise_keras_state(k_model, np.random.default_rng(1))
    transfer.keras_to_torch(k_model, t_model)
    images = np.random.default_rng(2).integers(0, 256, (5, config.input_size, config.input_size), dtype=np.uint8)
    np.testing.assert_allclose(
        torch_model.predict(t_model, images),
        keras_model.predict(k_model, images),
        rtol=model_parity.OUTPUT_RTOL,
        atol=model_parity.OUTPUT_ATOL,
    )


@pytest.mark.parametrize(
    ("keras_config", "torch_config", "message"),
    [
        (
            ModelConfig(base_filters=2, input_size=64),
            ModelConfig(base_filters=3, input_size=64),
            "stage1_module1_conv3",
        ),
        (ModelConfig(base_filters=2, input_size=64), ModelConfig(base_filters=2, input_size=96), "dense1"),
        (
            ModelConfig(base_filters=2, input_size=64),
            ModelConfig(base_filters=2, input_size=64, batchnorm_eps=1e-5),
            "epsilon",
        ),
    ],
    ids=["base_filters", "input_size", "batchnorm_eps"],
)
def test_mismatched_configs_raise_and_change_nothing(
    keras_config: ModelConfig, torch_config: ModelConfig, message: str
) -> None:
    k_model, t_model = keras_model.build_model(keras_config), torch_model.build_model(torch_config)
    keras_before = [w.copy() for w in k_model.get_weights()]
    torch_before = {k: v.clone() for k, v in t_model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        transfer.keras_to_torch(k_model, t_model)
    with pytest.raises(ValueError, match=message):
        transfer.torch_to_keras(t_model, k_model)
    for before, after in zip(keras_before, k_model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
    for name, tensor in t_model.state_dict().items():
        assert bool((tensor == torch_before[name]).all()), name


def test_dropout_and_momentum_do_not_block_a_transfer() -> None:
    # They are training hyperparameters, not weights: eval-mode outputs are still equal.
    k_model = keras_model.build_model(ModelConfig(base_filters=1, input_size=32, dropout=0.5))
    t_model = torch_model.build_model(ModelConfig(base_filters=1, input_size=32, dropout=0.0, batchnorm_momentum=0.9))
    transfer.keras_to_torch(k_model, t_model)
    images = model_parity.random_images(np.random.default_rng(0), 2, 32)
    np.testing.assert_allclose(
        model_parity.torch_outputs(t_model, images),
        model_parity.keras_outputs(k_model, images),
        rtol=model_parity.OUTPUT_RTOL,
        atol=model_parity.OUTPUT_ATOL,
    )


@pytest.mark.slow
def test_outputs_agree_at_the_default_config() -> None:
    model_parity.check_transfer_both_ways(
        ModelConfig(),
        rtol=model_parity.DEFAULT_CONFIG_OUTPUT_RTOL,
        atol=model_parity.DEFAULT_CONFIG_OUTPUT_ATOL,
    )


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_parity_under_other_keras_backends(backend: str) -> None:
    """Transfer both ways, round trip and one training step, in a fresh process with that backend."""
    if keras.backend.backend() == backend:
        pytest.skip(f"{backend} is this process's backend; covered by the in-process tests")
    script = Path(model_parity.__file__)
    env = {**os.environ, "KERAS_BACKEND": backend}
    if backend == "jax":
        # Eager JAX compiles every op once per shape; XLA's optimisation level 0 halves that (60 -> 30 s).
        # It changes fusion, not the semantics under test.
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()
    completed = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["backend"] == backend
