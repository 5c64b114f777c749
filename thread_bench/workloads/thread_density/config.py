"""The thread-density workload's settings: its data and model dataclasses and its profiles (defaults once).

The data is a corpus of canvas X-ray patches (synthetic by default, :mod:`.synthetic`; or a user's directory in
the raw-corpus format, :mod:`.corpus`) prepared into sub-patches labelled with their vertical thread density
(:mod:`.prepare`); the model is RegVGG (:mod:`.spec`). The training protocol's own settings
(:class:`thread_bench.config.TrainConfig`) are shared by every workload; the profiles below set them too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from thread_bench.config import check_finite, check_float32, check_positive, check_seed, check_split_fractions

#: The synthetic generator's style mixes (:data:`.synthetic.STYLE_MIXES`; a test keeps the two equal). Named
#: here so that the settings need not import the generator (and OpenCV) to validate ``styles``.
STYLE_MIX_NAMES = ("classic", "training", "held_out")
#: Where the histogram equalisation takes its histogram: ``window`` each sub-patch's own (what a logged model does
#: with every window it is asked about, so training sees what serving sees), ``patch`` the whole patch before
#: the sub-patches are cut (the reference study's; a window then depends on the pixels around it).
EQUALISATIONS = ("window", "patch")
#: Fraction of sub-patches per split in the reference study (24,360 / 4,368 / 1,512 of 30,240).
PAPER_SPLIT_FRACTIONS = (24360 / 30240, 4368 / 30240, 1512 / 30240)


@dataclass(frozen=True)
class DataConfig:
    """What the prepared dataset is made from and how; all of it enters the dataset's cache key."""

    #: ``"synthetic"`` (the built-in corpus generator) or a directory in the raw-corpus format.
    source: str = "synthetic"
    #: Seeds the synthetic corpus, the augmentation draws and the split by painting.
    seed: int = 0
    #: Synthetic corpus size in paintings (ignored for a user-supplied ``source``).
    n_paintings: int = 36
    #: Synthetic corpus size in patches, spread over the paintings (ignored for a user-supplied ``source``).
    n_patches: int = 240
    #: The synthetic corpus's style mix (one of ``STYLE_MIX_NAMES``; ignored for a user-supplied ``source``):
    #: ``training`` varied weaves, yarns and imaging; ``held_out`` styles training never sees; ``classic``
    #: the single style of the generator's first version.
    styles: str = "training"
    #: Side of a sub-patch in source pixels before resizing (1 cm at the synthetic 200 px/cm).
    crop_px: int = 200
    #: Sub-patches drawn from each patch (the reference: 30,240 from 240 patches).
    subpatches_per_patch: int = 126
    #: Largest small rotation applied in augmentation, degrees (the reference: 1 to 6 degrees).
    max_rotation_deg: float = 6.0
    #: Scale jitter: each sub-patch is cut with a side of ``crop_px`` times a factor drawn log-uniformly in
    #: [1 / (1 + j), 1 + j] and stored at ``input_size`` like any other, its labels scaled by the same factor (the
    #: threads it holds per stored centimetre); 0 cuts ``crop_px`` exactly (the reference). A cut is never enlarged
    #: past a thread period of 2.5 stored pixels. It turns each painting's one density into a range of them.
    scale_jitter: float = 0.0
    #: Histogram equalisation of each sub-patch alone or of the whole patch (one of ``EQUALISATIONS``).
    equalisation: str = EQUALISATIONS[0]
    #: Side of the stored images, pixels; ``crop_px`` is resized to it (area interpolation).
    input_size: int = 200
    #: Validation fraction of the patches, assigned whole paintings at a time.
    val_fraction: float = PAPER_SPLIT_FRACTIONS[1]
    #: Test fraction of the patches, assigned whole paintings at a time.
    test_fraction: float = PAPER_SPLIT_FRACTIONS[2]

    def __post_init__(self) -> None:
        check_seed(self, "seed", "the dataset's seed (--data_seed of a training, --seed of preprocessing)")
        check_positive(self, ("n_paintings", "n_patches", "crop_px", "subpatches_per_patch", "input_size"))
        check_finite(self, ("max_rotation_deg", "scale_jitter", "val_fraction", "test_fraction"))
        if self.styles not in STYLE_MIX_NAMES:
            raise ValueError(f"styles must be one of {STYLE_MIX_NAMES} (a synthetic style mix), got {self.styles!r}")
        if not 0.0 <= self.scale_jitter <= 1.0:
            raise ValueError(f"scale_jitter must be in [0, 1] (a factor of 1/2 to 2 at most), got {self.scale_jitter}")
        if self.equalisation not in EQUALISATIONS:
            raise ValueError(
                f"equalisation must be one of {EQUALISATIONS} (each sub-patch alone or the whole patch), "
                f"got {self.equalisation!r}"
            )
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

    #: Width of the network: each inception branch's filters and the dense layers' units are multiples of it.
    base_filters: int = 8
    #: The images' side: the prepared data's (``DataConfig.input_size``; profiles state it there, once).
    input_size: int = DataConfig.input_size
    #: Dropout rate after each of the five pooling stages (element-wise).
    dropout: float = 0.1
    #: BatchNorm momentum in the Keras convention (running = m * running + (1 - m) * batch).
    batchnorm_momentum: float = 0.99
    #: BatchNorm's epsilon (Keras' default; PyTorch's own is 1e-5).
    batchnorm_eps: float = 1e-3

    def __post_init__(self) -> None:
        check_positive(self, ("base_filters", "input_size"))
        check_finite(self, ("dropout", "batchnorm_momentum", "batchnorm_eps"))
        check_float32(self, ("batchnorm_eps",))
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


#: Profile overrides, keyed by dataclass name. ``paper`` is the reference protocol (meant for a GPU);
#: ``laptop`` finishes in minutes on a CPU; ``smoke`` finishes in seconds (tests).
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {"DataConfig": {}, "ModelConfig": {}, "TrainConfig": {}},
    "laptop": {
        # Tuned for a 2-core CPU: the whole `mlflow run . -e torch_train` (or keras_train), preprocessing
        # included, in under 5 minutes (README). 72 px per cm is the least that resolves the training mix's
        # densest canvases (35 threads/cm: a period of 2.06 px, above Nyquist's 2; 64 px aliased them at 1.8 px);
        # the labels come from the masks at 200 px. Five epochs leave the model far from converged, so the
        # learning rate decays over them (cosine): the last epochs settle instead of bouncing (README,
        # "Does the CNN generalise?", measures it). The scale jitter gives the 31 training paintings' densities
        # a range each: PyTorch's held-out error fell on each of 3 seeds (0.103 -> 0.083 on average; README).
        "DataConfig": {"subpatches_per_patch": 24, "input_size": 72, "scale_jitter": 0.25},
        "ModelConfig": {"base_filters": 2, "batchnorm_momentum": 0.9},
        "TrainConfig": {"epochs": 5, "patience": 5, "lr_schedule": "cosine"},
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


def _shared_input_size(profiles: dict[str, dict[str, dict[str, Any]]]) -> None:
    """The images' side is one setting of both configs, stated once in each profile's ``DataConfig``: the
    profile's ``ModelConfig`` takes it from there."""
    for overrides in profiles.values():
        if "input_size" in overrides.get("DataConfig", {}):
            overrides.setdefault("ModelConfig", {})["input_size"] = overrides["DataConfig"]["input_size"]


_shared_input_size(PROFILES)
