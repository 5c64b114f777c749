"""The twin RegVGG builders follow the spec: parameter counts, layer kinds, BatchNorm settings, init."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import torch
from torch import nn

from thread_bench.workloads.thread_density import keras_model, spec, torch_model
from thread_bench.workloads.thread_density.config import ModelConfig

PAPER_PARAMETERS = 10_166_505  # docs/DESIGN.md §3; the reference study reports exactly this
SMALL = ModelConfig(base_filters=2, input_size=64)
#: Same conv shapes as the default model, tiny Dense layers: for the init statistics.
INIT_CONFIG = ModelConfig(base_filters=8, input_size=32)
#: A conv with 602,112 weights (stage4 module2, 7x7, 192 -> 64) pins its statistics to about 0.3 %.
BIG_CONV = "stage4_module2_conv7"
TRUNCATED_STD_FACTOR = 0.87962566103423978  # std of a unit normal truncated to [-2, 2]


@pytest.fixture(scope="module")
def default_keras() -> keras.Model:
    return keras_model.build_model(ModelConfig())


@pytest.fixture(scope="module")
def init_models() -> tuple[keras.Model, torch_model.RegVGG]:
    keras.utils.set_random_seed(0)
    torch.manual_seed(0)
    return keras_model.build_model(INIT_CONFIG), torch_model.build_model(INIT_CONFIG)


def test_default_parameter_count_is_the_papers(default_keras: keras.Model) -> None:
    config = ModelConfig()
    assert spec.count_parameters_analytic(config) == PAPER_PARAMETERS
    assert keras_model.count_parameters(default_keras) == PAPER_PARAMETERS
    assert torch_model.count_parameters(torch_model.build_model(config)) == PAPER_PARAMETERS
    assert spec.flatten_features(config) == 6 * 6 * 192
    assert spec.dense_units(config) == 512


@pytest.mark.parametrize(
    "config",
    [
        ModelConfig(base_filters=1, input_size=32),
        ModelConfig(base_filters=2, input_size=47),  # odd sides: floor pooling 47 -> 23 -> 11 -> 5 -> 2 -> 1
        ModelConfig(base_filters=3, input_size=100),
        ModelConfig(base_filters=4, input_size=96),
    ],
    ids=lambda c: f"base{c.base_filters}-input{c.input_size}",
)
def test_analytic_count_matches_both_builders(config: ModelConfig) -> None:
    expected = spec.count_parameters_analytic(config)
    assert keras_model.count_parameters(keras_model.build_model(config)) == expected
    assert torch_model.count_parameters(torch_model.build_model(config)) == expected


def test_spec_shapes_and_flops() -> None:
    config = ModelConfig()
    modules = spec.modules(config)
    assert len(modules) == sum(spec.STAGE_MODULES) == 13
    assert [m.side for m in modules if m.index == 1] == [200, 100, 50, 25, 12]
    assert modules[0].in_channels == 1 and modules[1].in_channels == 24
    assert spec.final_side(config) == 6
    # One 3x3+5x5+7x7 branch set: 2 * 83 multiply-adds per input channel per output element, plus 4.
    assert spec.inception_flops(side=10, in_channels=2, filters=1, batch=1) == 100 * (2 * 2 * 83 + 3 * 4)
    assert 10.4e9 < spec.model_flops(config, batch=1) < 10.6e9
    assert spec.train_step_flops(config, batch=2) < 3 * spec.model_flops(config, batch=2)


def test_layer_names_are_the_twins(default_keras: keras.Model) -> None:
    config = ModelConfig()
    keras_weighted = {layer.name for layer in default_keras.layers if layer.weights}
    torch_weighted = {
        name
        for name, module in torch_model.build_model(config).named_modules()
        if isinstance(module, (nn.Conv2d, nn.BatchNorm2d, nn.Linear))
    }
    assert {spec.torch_module_path(name) for name in keras_weighted} == torch_weighted
    assert "stage1_module2_conv5" in keras_weighted and "stage5_module3_bn7" in keras_weighted
    assert {"dense1", "dense2", "output"} <= keras_weighted


def test_dropout_is_elementwise_in_both() -> None:
    config = ModelConfig(base_filters=1, input_size=32, dropout=0.25)
    k_model = keras_model.build_model(config)
    kinds = [type(layer).__name__ for layer in k_model.layers]
    assert kinds.count("Dropout") == len(spec.STAGE_MODULES)
    assert not any("SpatialDropout" in kind for kind in kinds)
    assert all(layer.rate == 0.25 for layer in k_model.layers if type(layer).__name__ == "Dropout")

    t_model = torch_model.build_model(config)
    dropouts = [m for m in t_model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    assert len(dropouts) == len(spec.STAGE_MODULES)
    assert all(type(m) is nn.Dropout and m.p == 0.25 for m in dropouts)


def test_batchnorm_settings_are_the_same_in_both() -> None:
    config = ModelConfig(base_filters=1, input_size=32, batchnorm_momentum=0.9, batchnorm_eps=1e-4)
    k_layers = [
        layer for layer in keras_model.build_model(config).layers if type(layer).__name__ == "BatchNormalization"
    ]
    t_layers = [m for m in torch_model.build_model(config).modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(k_layers) == len(t_layers) == 3 * sum(spec.STAGE_MODULES)
    assert all(layer.momentum == 0.9 and layer.epsilon == 1e-4 for layer in k_layers)
    # Keras keeps momentum * running; PyTorch keeps (1 - momentum) * running.
    assert all(math.isclose(m.momentum, 0.1) and m.eps == 1e-4 for m in t_layers)
    assert all(m.affine and m.track_running_stats for m in t_layers)


def test_default_batchnorm_is_keras_099_and_torch_001() -> None:
    t_model = torch_model.build_model(ModelConfig(base_filters=1, input_size=32))
    assert all(
        math.isclose(m.momentum, 0.01) and m.eps == 1e-3 for m in t_model.modules() if isinstance(m, nn.BatchNorm2d)
    )


def _he_normal_checks(weights: np.ndarray, fan_in: int) -> None:
    target_std = math.sqrt(2.0 / fan_in)
    bound = 2.0 * target_std / TRUNCATED_STD_FACTOR
    assert np.abs(weights).max() <= bound * (1 + 1e-6)  # truncated at 2 sigma of the untruncated normal
    assert np.abs(weights).max() > 0.99 * bound  # ... and actually reaching it (not a narrower law)
    assert weights.std() == pytest.approx(target_std, rel=0.01)  # the truncated law has the He std
    assert abs(weights.mean()) < 0.01 * target_std
    # Kurtosis of a normal truncated at 2 sigma is 2.36 (3 untruncated, 1.8 uniform).
    standardised = weights / weights.std()
    assert (standardised**4).mean() == pytest.approx(2.36, abs=0.05)


def test_conv_init_is_truncated_he_normal_in_both(init_models: tuple[keras.Model, torch_model.RegVGG]) -> None:
    k_model, t_model = init_models
    k_kernel = k_model.get_layer(BIG_CONV).get_weights()[0]  # HWIO
    t_weight = t_model.get_submodule(spec.torch_module_path(BIG_CONV)).weight.detach().numpy()  # OIHW
    fan_in = 7 * 7 * 192
    _he_normal_checks(k_kernel, fan_in)
    _he_normal_checks(t_weight, fan_in)


def test_biases_start_at_zero_and_dense_is_glorot(init_models: tuple[keras.Model, torch_model.RegVGG]) -> None:
    k_model, t_model = init_models
    for layer in k_model.layers:
        if type(layer).__name__ in ("Conv2D", "Dense"):
            assert not layer.get_weights()[1].any(), layer.name
    for name, module in t_model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            assert not module.bias.detach().any(), name
    n_in, n_out = spec.dense_units(INIT_CONFIG), spec.dense_units(INIT_CONFIG)
    limit = math.sqrt(6.0 / (n_in + n_out))
    for weights in (k_model.get_layer("dense2").get_weights()[0], t_model.dense2.weight.detach().numpy()):
        assert np.abs(weights).max() <= limit
        assert weights.std() == pytest.approx(limit / math.sqrt(3.0), rel=0.02)  # uniform(-limit, limit)


def test_batchnorm_starts_at_identity(init_models: tuple[keras.Model, torch_model.RegVGG]) -> None:
    k_model, t_model = init_models
    gamma, beta, mean, variance = k_model.get_layer("stage1_module1_bn3").get_weights()
    bn = t_model.stage1.module1.bn3
    for k_value, t_value, expected in (
        (gamma, bn.weight, 1.0),
        (beta, bn.bias, 0.0),
        (mean, bn.running_mean, 0.0),
        (variance, bn.running_var, 1.0),
    ):
        assert np.all(k_value == expected) and torch.all(t_value == expected)


@pytest.mark.parametrize(
    "overrides",
    [{"base_filters": 0}, {"input_size": 31}, {"dropout": 1.0}, {"batchnorm_momentum": 1.0}, {"base_filters": 2.5}],
)
def test_invalid_model_config_is_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ModelConfig(**overrides)  # type: ignore[arg-type]


def test_output_shapes_and_predict_semantics() -> None:
    config = SMALL
    k_model, t_model = keras_model.build_model(config), torch_model.build_model(config)
    rng = np.random.default_rng(0)
    images_uint8 = rng.integers(0, 256, (3, 64, 64), dtype=np.uint8)
    images_float = images_uint8.astype(np.float32) / 255.0
    for predict, model in ((keras_model.predict, k_model), (torch_model.predict, t_model)):
        from_uint8 = predict(model, images_uint8, batch_size=2)
        assert from_uint8.shape == (3,) and from_uint8.dtype == np.float32
        np.testing.assert_array_equal(from_uint8, predict(model, images_float, batch_size=2))
    assert k_model.output_shape == (None, 1)
    assert t_model(torch.zeros(2, 1, 64, 64)).shape == (2, 1)
    assert t_model.training  # predict restored the mode


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((2, 32, 32), np.float32), "shape"),
        (np.zeros((2, 64, 64, 1), np.float32), "shape"),
        (np.full((2, 64, 64), 2.0, np.float32), r"\[0, 1\]"),
        (np.zeros((2, 64, 64), np.uint16), "dtype"),
    ],
)
def test_predict_rejects_bad_images(images: np.ndarray, message: str) -> None:
    t_model = torch_model.build_model(SMALL)
    with pytest.raises(ValueError, match=message):
        torch_model.predict(t_model, images)
    with pytest.raises(ValueError, match=message):
        spec.as_model_input(images, SMALL.input_size)
