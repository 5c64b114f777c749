"""Configuration: profiles resolve in order (dataclass defaults < profile < explicit), bad values are refused."""

from __future__ import annotations

import pytest

from thread_bench import config
from thread_bench.config import DEFAULT_PROFILE, PROFILE_NAMES, VARIANTS, TrainConfig
from thread_bench.training.options import KerasOptions, TorchOptions
from thread_bench.workloads.thread_density.config import PROFILES, DataConfig, ModelConfig


def resolve(cls: type, profile: str, overrides: dict[str, object] | None = None, **options: str) -> object:
    """The thread-density workload's resolution (its profiles)."""
    return config.resolve(cls, profile, overrides, profiles=PROFILES, **options)


def test_paper_profile_is_the_dataclass_defaults() -> None:
    assert resolve(DataConfig, "paper") == DataConfig()
    assert resolve(ModelConfig, "paper") == ModelConfig()
    assert resolve(TrainConfig, "paper") == TrainConfig()
    assert DataConfig().n_patches == 240 and DataConfig().n_paintings == 36
    assert TrainConfig().epochs == 100 and TrainConfig().patience == 20 and TrainConfig().batch_size == 32


def test_explicit_values_override_the_profile_and_none_means_not_given() -> None:
    config = resolve(DataConfig, "smoke", {"seed": 7, "input_size": None})
    assert config.seed == 7
    assert config.input_size == PROFILES["smoke"]["DataConfig"]["input_size"]


def test_every_profile_builds_consistent_configs() -> None:
    assert DEFAULT_PROFILE in PROFILE_NAMES and sorted(PROFILES) == sorted(PROFILE_NAMES)
    for name in PROFILES:
        data, model = resolve(DataConfig, name), resolve(ModelConfig, name)
        resolve(TrainConfig, name)
        assert data.input_size == model.input_size, name


def test_unknown_profile_and_parameter() -> None:
    with pytest.raises(ValueError, match="unknown profile 'huge'; expected one of"):
        resolve(DataConfig, "huge")
    with pytest.raises(ValueError, match=r"unknown DataConfig parameter\(s\): \['colour'\]"):
        resolve(DataConfig, "paper", {"colour": 1})


@pytest.mark.parametrize(
    ("cls", "values", "message"),
    [
        (DataConfig, {"n_patches": 0}, "n_patches must be a positive integer"),
        (DataConfig, {"n_paintings": 10, "n_patches": 5}, "n_patches=5 must be >= n_paintings=10"),
        (DataConfig, {"styles": "fancy"}, "styles must be one of"),
        (DataConfig, {"scale_jitter": 1.5}, r"scale_jitter must be in \[0, 1\] .*got 1.5"),
        (DataConfig, {"equalisation": "global"}, r"equalisation must be one of \('window', 'patch'\).*got 'global'"),
        (DataConfig, {"input_size": 300}, "input_size=300 must be <= crop_px=200"),
        (DataConfig, {"val_fraction": 0.6, "test_fraction": 0.5}, "must leave room for a training split"),
        (DataConfig, {"max_rotation_deg": 90.0}, r"max_rotation_deg must be in \[0, 45\]"),
        (ModelConfig, {"input_size": 16}, "input_size must be >= 32"),
        (ModelConfig, {"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        (TrainConfig, {"epochs": -1}, "epochs must be a positive integer, got -1"),
        (TrainConfig, {"learning_rate": 0.0}, "learning_rate must be > 0"),
        (TrainConfig, {"lr_schedule": "step"}, "lr_schedule must be one of"),
        (TrainConfig, {"precision": "fp16"}, r"precision must be one of \['fp32', 'tf32', 'bf16'\], got 'fp16'"),
        (TrainConfig, {"input_pipeline": "gpu"}, "input_pipeline must be one of"),
        (TrainConfig, {"device_data_fraction": 1.5}, r"device_data_fraction must be in \[0, 1\]"),
    ],
)
def test_invalid_values_are_refused(cls: type, values: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cls(**values)


def test_batchnorm_momentum_converts_between_conventions() -> None:
    assert ModelConfig(batchnorm_momentum=0.99).torch_batchnorm_momentum == pytest.approx(0.01)


def test_variants_sit_between_the_profile_and_explicit_values() -> None:
    assert resolve(TrainConfig, "smoke", variant="default") == resolve(TrainConfig, "smoke")
    tuned = resolve(TrainConfig, "smoke", variant="tuned")
    assert not tuned.deterministic and tuned.epochs == PROFILES["smoke"]["TrainConfig"]["epochs"]
    assert resolve(TrainConfig, "smoke", {"deterministic": True}, variant="tuned").deterministic
    assert resolve(TorchOptions, "smoke", variant="tuned") == TorchOptions(channels_last=True, compile=True)
    assert resolve(KerasOptions, "smoke", variant="tuned").jit_compile == "auto"  # XLA where Keras finds it pays
    assert not resolve(TrainConfig, "paper", variant="nondeterministic").deterministic
    assert resolve(TorchOptions, "paper", variant="nondeterministic") == TorchOptions()


def test_every_variant_names_only_known_fields() -> None:
    classes = {cls.__name__: cls for cls in (DataConfig, ModelConfig, TrainConfig, TorchOptions, KerasOptions)}
    for name, overrides in VARIANTS.items():
        for class_name, values in overrides.items():
            resolve(classes[class_name], "paper", values, variant=name)


def test_unknown_variant() -> None:
    with pytest.raises(ValueError, match="unknown variant 'fast'; expected one of"):
        resolve(TrainConfig, "paper", variant="fast")
