"""The training protocol's configuration, the profile and variant names, and how a config is resolved.

Every default is defined once: the protocol's here (:class:`TrainConfig`, the variants), a workload's data and
model settings in its folder (``thread_bench/workloads/<name>/config.py``, with its profiles). The dataclass
defaults are the reference ("paper") protocol; a profile is a named set of overrides on top of them, a variant
another, and any explicit parameter overrides both (:func:`resolve`). The MLproject parameters and the
command-line options are checked against the dataclasses by a test.

``DataConfig``, ``ModelConfig`` and ``PROFILES`` lived here before workloads had folders; they are the
thread-density workload's now and still import from here (models logged then name ``thread_bench.config``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from thread_bench import cpu_isa as isa

#: The profile used when none is given (fast enough for a laptop CPU).
DEFAULT_PROFILE = "laptop"
#: The variant used when none is given: the protocol as written (deterministic).
DEFAULT_VARIANT = "default"
#: The profiles every workload defines (``Workload.profiles``): ``paper`` is the reference protocol (meant for a
#: GPU), ``laptop`` finishes in minutes on a CPU, ``smoke`` in seconds (tests).
PROFILE_NAMES = ("laptop", "paper", "smoke")


@dataclass(frozen=True)
class TrainConfig:
    """The training protocol every framework and workload shares (docs/DESIGN.md §4)."""

    #: Seeds the weights' initialisation and the batch order (the dataset has its own, ``data_seed``).
    seed: int = 0
    #: Most epochs to train; early stopping may end sooner (``patience``).
    epochs: int = 100
    #: Images per training step.
    batch_size: int = 32
    #: Adam's learning rate at the first epoch (``lr_schedule`` says how it changes).
    learning_rate: float = 1e-3
    #: ``"none"``, ``"inverse_time"`` (learning_rate / (1 + epoch / 10)) or ``"cosine"`` (learning_rate *
    #: (1 + cos(pi * epoch / epochs)) / 2: from the full rate down to a tenth of it in the last of 5 epochs).
    lr_schedule: str = "none"
    #: Epochs without a better validation loss (by more than ``min_delta``) before training stops.
    patience: int = 20
    #: Smallest fall of the validation loss that counts as better, for ``patience``.
    min_delta: float = 0.0
    #: Adam's epsilon, the same in every framework (Keras' default; PyTorch's own is 1e-8).
    adam_epsilon: float = 1e-7
    #: Deterministic kernels and seeded shuffling: the same seed on the same machine gives the same losses.
    deterministic: bool = True
    #: Also trace Python-heap allocations (tracemalloc; slows training, sees no native memory).
    tracemalloc: bool = False
    #: CPU threads of the framework's kernels; 0 keeps the framework's default (one per core). On a machine
    #: shared with other jobs, 1 avoids PyTorch's OpenMP slowing down several-fold when a core is taken.
    threads: int = 0
    #: Which instruction sets the CPU kernels may use: ``native`` (all the processor has) or a cap every kernel
    #: library is pinned to (``avx2``: any x86-64-v3 processor, the portable setting; ``avx512``; ``sse41``),
    #: so that the same seed gives the same numbers on processors that differ above the cap (``cpu_isa.py``).
    cpu_isa: str = "native"
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
        check_float32(self, ("learning_rate", "adam_epsilon"))
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
        isa.check_choice(self.cpu_isa)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.input_pipeline not in INPUT_PIPELINES:
            raise ValueError(f"input_pipeline must be one of {list(INPUT_PIPELINES)}, got {self.input_pipeline!r}")
        if not 0.0 <= self.device_data_fraction <= 1.0:
            raise ValueError(f"device_data_fraction must be in [0, 1], got {self.device_data_fraction}")


LR_SCHEDULES = ("none", "inverse_time", "cosine")
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


def profile_names() -> list[str]:
    return sorted(PROFILE_NAMES)


def variant_names() -> list[str]:
    return list(VARIANTS)


def resolve(
    cls: type,
    profile: str,
    overrides: Mapping[str, Any] | None = None,
    *,
    variant: str = DEFAULT_VARIANT,
    profiles: Mapping[str, Mapping[str, Mapping[str, Any]]],
) -> Any:
    """Build ``cls`` from its defaults, then the profile's overrides, the variant's, then explicit ``overrides``.

    ``None`` values in ``overrides`` mean "not given" and are ignored. Unknown keys raise ``ValueError``.

    Args:
        profiles: the workload's profiles (``Workload.profiles``); the same profile names for every workload.
    """
    if profile not in PROFILE_NAMES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {profile_names()}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {variant_names()}")
    names = {f.name for f in fields(cls)}
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = set(given) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} parameter(s): {sorted(unknown)}")
    chosen = profiles.get(profile, {})
    values = {**chosen.get(cls.__name__, {}), **VARIANTS[variant].get(cls.__name__, {}), **given}
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


#: The smallest positive normal float32 and the largest: a setting the frameworks hold as float32 must lie between
#: them, or it arrives as 0 or inf (``--learning_rate 1e300`` passed every check, trained for minutes, then failed).
FLOAT32_TINY, FLOAT32_MAX = 1.1754944e-38, 3.4028235e38


def check_float32(config: Any, names: tuple[str, ...]) -> None:
    """Settings the frameworks hold as float32 (a learning rate, an epsilon): 0, or a magnitude float32 keeps."""
    for name in names:
        value = getattr(config, name)
        if value != 0 and not FLOAT32_TINY <= abs(value) <= FLOAT32_MAX:
            raise ValueError(
                f"{name} must fit in float32, as the frameworks hold it (a magnitude between {FLOAT32_TINY:.3g} "
                f"and {FLOAT32_MAX:.3g}), got {value!r}"
            )


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


#: What moved to the thread-density workload's folder, still importable from here (see the module docstring).
_MOVED = ("DataConfig", "ModelConfig", "PROFILES", "PAPER_SPLIT_FRACTIONS")


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module("thread_bench.workloads.thread_density.config"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
