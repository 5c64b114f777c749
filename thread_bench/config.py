"""Configuration: one frozen dataclass per concern, and the named profiles.

Every default is defined here exactly once. The dataclass defaults are the reference ("paper") protocol;
a profile is a named set of overrides on top of them, and any explicit parameter overrides the profile.
The MLproject parameters and the command-line options are checked against these classes by a test.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

#: The profile used when none is given (fast enough for a laptop CPU).
DEFAULT_PROFILE = "laptop"
#: The variant used when none is given: the protocol as written (deterministic).
DEFAULT_VARIANT = "default"

#: Fraction of sub-patches per split in the reference study (24,360 / 4,368 / 1,512 of 30,240).
PAPER_SPLIT_FRACTIONS = (24360 / 30240, 4368 / 30240, 1512 / 30240)


@dataclass(frozen=True)
class DataConfig:
    """What the prepared dataset is made from and how; all of it enters the dataset's cache key."""

    #: ``"synthetic"`` (the built-in corpus generator) or a directory in the raw-corpus format.
    source: str = "synthetic"
    #: Seeds the synthetic corpus, the augmentation draws and the split by painting.
    seed: int = 0
    #: Synthetic corpus size (ignored for a user-supplied ``source``).
    n_paintings: int = 36
    n_patches: int = 240
    #: Side of a sub-patch in source pixels before resizing (1 cm at the synthetic 200 px/cm).
    crop_px: int = 200
    #: Sub-patches drawn from each patch (the reference: 30,240 from 240 patches).
    subpatches_per_patch: int = 126
    #: Largest small rotation applied in augmentation, degrees (the reference: 1 to 6 degrees).
    max_rotation_deg: float = 6.0
    #: Side of the stored images, pixels; ``crop_px`` is resized to it (area interpolation).
    input_size: int = 200
    #: Validation and test fractions of the patches, assigned whole paintings at a time.
    val_fraction: float = PAPER_SPLIT_FRACTIONS[1]
    test_fraction: float = PAPER_SPLIT_FRACTIONS[2]

    def __post_init__(self) -> None:
        check_seed(self, "seed", "the dataset's seed (--data_seed of a training, --seed of preprocessing)")
        check_positive(self, ("n_paintings", "n_patches", "crop_px", "subpatches_per_patch", "input_size"))
        check_finite(self, ("max_rotation_deg", "val_fraction", "test_fraction"))
        if self.n_patches < self.n_paintings:
            raise ValueError(f"n_patches={self.n_patches} must be >= n_paintings={self.n_paintings}")
        if not 0.0 <= self.max_rotation_deg <= 45.0:
            raise ValueError(f"max_rotation_deg must be in [0, 45], got {self.max_rotation_deg}")
        if self.input_size > self.crop_px:
            raise ValueError(f"input_size={self.input_size} must be <= crop_px={self.crop_px} (no upsampling)")
        check_split_fractions(self)


@dataclass(frozen=True)
class ModelConfig:
    """The RegVGG network (docs/DESIGN.md §3). Defaults reproduce the reference's 10,166,505 parameters."""

    base_filters: int = 8
    #: The images' side: the prepared data's (``DataConfig.input_size``; profiles state it there, once).
    input_size: int = DataConfig.input_size
    dropout: float = 0.1
    #: BatchNorm momentum in the Keras convention (running = m * running + (1 - m) * batch).
    batchnorm_momentum: float = 0.99
    batchnorm_eps: float = 1e-3

    def __post_init__(self) -> None:
        check_positive(self, ("base_filters", "input_size"))
        check_finite(self, ("dropout", "batchnorm_momentum", "batchnorm_eps"))
        if self.input_size < 32:
            raise ValueError(f"input_size must be >= 32 (five 2x2 poolings), got {self.input_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.batchnorm_momentum < 1.0:
            raise ValueError(f"batchnorm_momentum must be in [0, 1), got {self.batchnorm_momentum}")
        if not self.batchnorm_eps > 0:
            raise ValueError(f"batchnorm_eps must be > 0, got {self.batchnorm_eps}")

    @property
    def torch_batchnorm_momentum(self) -> float:
        """The same momentum in PyTorch's convention (running = (1 - m) * running + m * batch)."""
        return 1.0 - self.batchnorm_momentum


@dataclass(frozen=True)
class TrainConfig:
    """The training protocol shared by both frameworks (docs/DESIGN.md §4)."""

    seed: int = 0
    epochs: int = 100
    batch_size: int = 32
    learning_rate: float = 1e-3
    #: ``"none"`` or ``"inverse_time"`` (learning_rate / (1 + epoch / 10)).
    lr_schedule: str = "none"
    patience: int = 20
    min_delta: float = 0.0
    adam_epsilon: float = 1e-7
    #: Deterministic kernels and seeded shuffling: the same seed on the same machine gives the same losses.
    deterministic: bool = True
    #: Also trace Python-heap allocations (tracemalloc; slows training, sees no native memory).
    tracemalloc: bool = False
    #: CPU threads of the framework's kernels; 0 keeps the framework's default (one per core). On a machine
    #: shared with other jobs, 1 avoids PyTorch's OpenMP slowing down several-fold when a core is taken.
    threads: int = 0
    #: Numerics of every framework and backend alike: ``fp32`` (strict IEEE float32, TF32 off everywhere),
    #: ``tf32`` (TF32 allowed for matmuls and convolutions where the hardware has it) or ``bf16`` (mixed:
    #: bfloat16 compute; float32 weights, optimizer state, output layer and loss). Frameworks' own defaults
    #: differ on GPUs (JAX and TensorFlow use TF32 for float32, PyTorch only for convolutions), so it is set
    #: explicitly, never left to them.
    precision: str = "fp32"
    #: How batches reach the model: ``device`` keeps the uint8 train and validation images on the device and
    #: gathers and converts each batch there; ``host`` gathers on the host and copies each batch (pinned,
    #: asynchronous); ``auto`` picks ``device`` when the images fit in ``device_data_fraction`` of the
    #: device's memory. ``staged`` is for measurement only: every step reuses one pre-made batch, so the
    #: epoch times are those of the model alone (the losses mean nothing). The batches and their order are
    #: the same with ``device`` and ``host``.
    input_pipeline: str = "auto"
    #: Largest share of the device's memory that ``input_pipeline=auto`` lets the resident images take.
    device_data_fraction: float = 0.25

    def __post_init__(self) -> None:
        check_seed(self, "seed")
        check_positive(self, ("epochs", "batch_size", "patience"))
        check_finite(self, ("learning_rate", "min_delta", "adam_epsilon", "device_data_fraction"))
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.adam_epsilon <= 0:
            raise ValueError(f"adam_epsilon must be > 0, got {self.adam_epsilon}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {sorted(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {self.min_delta}")
        if not isinstance(self.threads, int) or isinstance(self.threads, bool) or self.threads < 0:
            raise ValueError(f"threads must be an integer >= 0 (0 = the framework's default), got {self.threads!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.input_pipeline not in INPUT_PIPELINES:
            raise ValueError(f"input_pipeline must be one of {list(INPUT_PIPELINES)}, got {self.input_pipeline!r}")
        if not 0.0 <= self.device_data_fraction <= 1.0:
            raise ValueError(f"device_data_fraction must be in [0, 1], got {self.device_data_fraction}")


LR_SCHEDULES = ("none", "inverse_time")
PRECISIONS = ("fp32", "tf32", "bf16")
INPUT_PIPELINES = ("auto", "device", "host", "staged")

#: Images per prediction batch, everywhere a model predicts (validation scores, evaluation, benchmarks).
#: Prediction is memory-bound at any size; 64 keeps a paper-size batch small on any device.
PREDICT_BATCH_SIZE = 64

#: Named sets of knobs, applied on top of the profile (explicit parameters still win); keyed by dataclass
#: name like the profiles. A comparison is made within one variant; the variant is logged.
#: - ``default``: the protocol as written (deterministic kernels, the framework's default speed knobs).
#: - ``nondeterministic``: the same with deterministic kernels off; against ``default`` it isolates what
#:   determinism costs each framework (PyTorch then also lets cuDNN benchmark its convolution algorithms).
#: - ``tuned``: each framework's known-good speed knobs, non-deterministic where they need it: PyTorch
#:   channels_last + torch.compile (and cuDNN benchmarking). Keras' speed knob, XLA, stays at its ``auto``:
#:   Keras compiles with XLA on JAX and on TensorFlow with a GPU, not on a CPU, where forcing it made the laptop
#:   epoch 3.6x slower (69 s instead of 19 s, benchmarks/gpu_epoch.py on a 2-core EPYC).
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "default": {},
    "nondeterministic": {"TrainConfig": {"deterministic": False}},
    "tuned": {
        "TrainConfig": {"deterministic": False},
        "TorchOptions": {"channels_last": True, "compile": True},
    },
}

#: Profile overrides, keyed by dataclass name. ``paper`` is the reference protocol (meant for a GPU);
#: ``laptop`` finishes in minutes on a CPU; ``smoke`` finishes in seconds (tests).
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {"DataConfig": {}, "ModelConfig": {}, "TrainConfig": {}},
    "laptop": {
        # Tuned for a 2-core CPU: the whole `mlflow run . -e torch_train` (or keras_train), preprocessing
        # included, in under 5 minutes, reaching a validation normalised MAE of a few percent (README).
        # 64 px per cm still resolves the densest canvases (23 threads/cm: a period of 2.8 px).
        "DataConfig": {"subpatches_per_patch": 24, "input_size": 64},
        "ModelConfig": {"base_filters": 2, "batchnorm_momentum": 0.9},
        "TrainConfig": {"epochs": 5, "patience": 5},
    },
    "smoke": {
        "DataConfig": {
            "n_paintings": 6,
            "n_patches": 12,
            "subpatches_per_patch": 4,
            "input_size": 32,
            "val_fraction": 0.2,
            "test_fraction": 0.2,
        },
        "ModelConfig": {"base_filters": 2, "batchnorm_momentum": 0.9},
        "TrainConfig": {"epochs": 2, "batch_size": 8, "patience": 2},
    },
}


#: (dataclass, field) -> the dataclass whose profile value it takes: one field of two configs, stated once.
_SHARED_FIELDS = {("ModelConfig", "input_size"): "DataConfig"}


def profile_names() -> list[str]:
    return sorted(PROFILES)


def variant_names() -> list[str]:
    return list(VARIANTS)


def resolve(
    cls: type,
    profile: str,
    overrides: Mapping[str, Any] | None = None,
    *,
    variant: str = DEFAULT_VARIANT,
    profiles: Mapping[str, Mapping[str, Mapping[str, Any]]] = PROFILES,
) -> Any:
    """Build ``cls`` from its defaults, then the profile's overrides, the variant's, then explicit ``overrides``.

    ``None`` values in ``overrides`` mean "not given" and are ignored. Unknown keys raise ``ValueError``.

    Args:
        profiles: the workload's profiles (``Workload.profiles``); the same profile names for every workload.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {profile_names()}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {variant_names()}")
    names = {f.name for f in fields(cls)}
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = set(given) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} parameter(s): {sorted(unknown)}")
    chosen = profiles.get(profile, {})
    shared = {
        field: chosen.get(owner, {})[field]
        for (name, field), owner in _SHARED_FIELDS.items()
        if name == cls.__name__ and field in chosen.get(owner, {})
    }
    values = {**shared, **chosen.get(cls.__name__, {}), **VARIANTS[variant].get(cls.__name__, {}), **given}
    return cls(**values)


#: Seeds are taken as unsigned 32-bit integers everywhere (NumPy's legacy seeding, TensorFlow, JAX).
_SEED_LIMIT = 2**32


def check_positive(config: Any, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_finite(config: Any, names: tuple[str, ...]) -> None:
    """Numbers, and finite: a check written ``if value <= 0: raise`` lets NaN through, and inf passes ``> 0``."""
    for name in names:
        value = getattr(config, name)
        try:
            finite = not isinstance(value, bool) and math.isfinite(value)
        except TypeError:
            finite = False
        if not finite:
            raise ValueError(f"{name} must be a finite number, got {value!r}")


def check_split_fractions(config: Any) -> None:
    """``val_fraction`` and ``test_fraction`` each in (0, 1), leaving room for a training split."""
    for name in ("val_fraction", "test_fraction"):
        value = getattr(config, name)
        if not 0.0 < value < 1.0:
            raise ValueError(f"{name} must be in (0, 1), got {value}")
    if config.val_fraction + config.test_fraction >= 1.0:
        raise ValueError("val_fraction + test_fraction must leave room for a training split")


def check_seed(config: Any, name: str, described: str | None = None) -> None:
    value = getattr(config, name)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < _SEED_LIMIT:
        raise ValueError(f"{described or name} must be an integer in [0, 2**32), got {value!r}")
