"""The prepared dataset on disk: layout, content digest, checks and loading; shared by every workload.

A prepared dataset is a directory ``<root>/<key>/`` holding ``<split>_<array>.npy`` per split (``train``,
``val``, ``test``) and ``manifest.json``. The manifest says what the dataset holds, so that one loader serves
every workload without knowing any of them:

- ``"workload"``: who made it (``"digits"``, ...);
- ``"arrays"``: ``{name: dtype}`` of the arrays each split has; ``images`` (rank 3, ``(N, S, S)``) and
  ``labels`` (rank 1) always, any other name rank 1;
- ``"labels"``: what a valid label is, ``{"kind": "classes", "n_classes": 10}`` (integers in
  ``[0, n_classes)``) or ``{"kind": "density"}`` (a plausible thread density, threads/cm), and optionally
  ``"arrays"``, the arrays holding such values (default ``["labels"]``).

A manifest without these fields (every dataset written before they existed, and every thread-density dataset:
its manifest, hence its content digest, must not change) is the thread-density layout
(``DEFAULT_WORKLOAD``, ``DENSITY_ARRAYS``, ``DENSITY_LABELS``):

- ``<split>_images.npy``: uint8 ``(N, S, S)``, histogram-equalised sub-patches (divide by 255 for [0, 1]);
- ``<split>_labels.npy``: float32 ``(N,)``, vertical thread density in threads/cm (the regression target);
- ``<split>_density_h.npy``: float32 ``(N,)``, horizontal thread density (kept for analysis);
- ``<split>_patch_index.npy``: int32 ``(N,)``, row of the source patch in the corpus index.

The manifest also holds the sizes, seed, source digest, settings and content digest. It is written last and the
directory is renamed into place atomically (:mod:`thread_bench.data.prepare`), so a directory with a manifest
is complete. Arrays are plain ``.npy`` files, memory-mapped on load.

**Trust.** A dataset is checked every time it is opened: its content digest is recomputed (every byte) unless
``verified.json`` shows that no file changed since the last check (size, modification and change times and
inode of each file; the change time cannot be set back by a user, so an edit is always noticed). Damage, a
malformed array and a label that is not valid for its kind raise :class:`DamagedDatasetError`.
``verified.json`` is a cache outside the content digest; deleting it only costs one full check.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import tokenize
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MANIFEST = "manifest.json"
#: The record of the last successful content check (see the module docstring).
STAMP = "verified.json"
FORMAT_VERSION = 1
#: Thread densities a label may take, threads/cm. Canvases range over about 5-40; anything outside this
#: range comes from a wrong resolution (px_per_cm) or wrong masks, never from a canvas.
PLAUSIBLE_DENSITY_THREADS_PER_CM = (1.0, 100.0)

#: What a manifest without ``workload`` / ``arrays`` / ``labels`` holds: the thread-density layout.
DEFAULT_WORKLOAD = "thread_density"
DENSITY_ARRAYS: Mapping[str, str] = {
    "images": "uint8",
    "labels": "float32",
    "density_h": "float32",
    "patch_index": "int32",
}
DENSITY_LABELS: Mapping[str, Any] = {"kind": "density", "arrays": ["labels", "density_h"]}
#: The thread-density arrays (kept under their old name).
ARRAYS = tuple(DENSITY_ARRAYS)
#: Label kinds, and the numpy dtype kinds their arrays may have ("f" float, "i"/"u" integer).
LABEL_KINDS: Mapping[str, str] = {"density": "f", "classes": "iu"}
#: Every dataset has these; images are rank 3, every other array rank 1.
REQUIRED_ARRAYS = ("images", "labels")
#: An array name becomes part of a file name: keep it plain.
_ARRAY_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class DamagedDatasetError(ValueError):
    """The files of a prepared dataset do not match its manifest, or are unreadable: rebuild it."""


@dataclass(frozen=True)
class Layout:
    """What a prepared dataset holds, as its manifest declares it (see the module docstring)."""

    workload: str
    arrays: Mapping[str, np.dtype[Any]]
    """Every array of a split, by name, with its dtype."""
    label_kind: str
    """``"classes"`` (classification) or ``"density"`` (thread-density regression)."""
    n_classes: int | None
    """The number of classes of a ``"classes"`` dataset; None for a density one."""
    label_arrays: tuple[str, ...]
    """The arrays whose every value must be a valid label of ``label_kind``."""


@dataclass(frozen=True)
class Split:
    images: np.ndarray
    """uint8 ``(N, S, S)``; memory-mapped."""
    labels: np.ndarray
    """``(N,)``: float32 threads/cm (vertical) for a density dataset, integer classes for a classification one."""
    extra: Mapping[str, np.ndarray] = field(default_factory=dict)
    """The dataset's other arrays by name (thread density: ``density_h`` and ``patch_index``)."""

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def array(self, name: str) -> np.ndarray:
        """The array ``name`` of this split.

        Raises:
            KeyError: the dataset has no such array (naming the ones it has).
        """
        if name == "images":
            return self.images
        if name == "labels":
            return self.labels
        if name not in self.extra:
            raise KeyError(f"this dataset has no {name!r} array; it has {['images', 'labels', *self.extra]}")
        return self.extra[name]

    @property
    def density_h(self) -> np.ndarray:
        """float32 ``(N,)``: horizontal threads/cm (thread-density datasets only)."""
        return self._attribute("density_h")

    @property
    def patch_index(self) -> np.ndarray:
        """int32 ``(N,)``: the source patch's row in the corpus index (thread-density datasets only)."""
        return self._attribute("patch_index")

    def _attribute(self, name: str) -> np.ndarray:
        # AttributeError, not KeyError: hasattr(split, "patch_index") then tells whether the dataset has one.
        try:
            return self.array(name)
        except KeyError as error:
            raise AttributeError(error.args[0]) from None


@dataclass(frozen=True)
class PreparedDataset:
    path: Path
    manifest: dict[str, Any]
    train: Split
    val: Split
    test: Split

    @property
    def digest(self) -> str:
        return str(self.manifest["content_digest"])

    @property
    def input_size(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def layout(self) -> Layout:
        return dataset_layout(self.manifest, self.path / MANIFEST)

    @property
    def workload(self) -> str:
        """Who made the dataset (manifest ``workload``; ``"thread_density"`` when it does not say)."""
        return self.layout.workload

    @property
    def label_kind(self) -> str:
        """``"classes"`` for a classification dataset, ``"density"`` for a thread-density one."""
        return self.layout.label_kind

    @property
    def n_classes(self) -> int | None:
        return self.layout.n_classes

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        split: Split = getattr(self, name)
        return split


def array_filename(split: str, array: str) -> str:
    return f"{split}_{array}.npy"


def dataset_layout(manifest: Mapping[str, Any], where: Path | str = MANIFEST) -> Layout:
    """The layout ``manifest`` declares, the thread-density one for each field it lacks.

    Raises:
        DamagedDatasetError: naming ``where``, a field that is not what the module docstring describes.
    """
    workload = manifest.get("workload", DEFAULT_WORKLOAD)
    if not isinstance(workload, str) or not workload:
        raise DamagedDatasetError(f"{where}: workload {workload!r} is not a name")
    arrays = _declared_arrays(manifest.get("arrays", DENSITY_ARRAYS), where)
    labels = manifest.get("labels", DENSITY_LABELS)
    if not isinstance(labels, Mapping) or labels.get("kind") not in LABEL_KINDS:
        raise DamagedDatasetError(f"{where}: labels {labels!r}; expected a kind among {sorted(LABEL_KINDS)}")
    kind = str(labels["kind"])
    n_classes = labels.get("n_classes")
    if kind == "classes" and (not isinstance(n_classes, int) or isinstance(n_classes, bool) or n_classes < 2):
        raise DamagedDatasetError(f"{where}: labels n_classes {n_classes!r}; expected an integer >= 2")
    label_arrays = labels.get("arrays", ["labels"])
    if not isinstance(label_arrays, list) or not set(label_arrays) <= set(arrays) or "labels" not in label_arrays:
        raise DamagedDatasetError(f"{where}: labels arrays {label_arrays!r}; expected some of {list(arrays)}")
    for name in label_arrays:
        if arrays[name].kind not in LABEL_KINDS[kind]:
            raise DamagedDatasetError(f"{where}: {name} is {arrays[name].name}, which cannot hold {kind} labels")
    return Layout(workload, arrays, kind, n_classes if kind == "classes" else None, tuple(label_arrays))


def _declared_arrays(declared: Any, where: Path | str) -> dict[str, np.dtype[Any]]:
    if not isinstance(declared, Mapping) or not set(REQUIRED_ARRAYS) <= set(declared):
        raise DamagedDatasetError(f"{where}: arrays {declared!r}; expected a mapping with {list(REQUIRED_ARRAYS)}")
    arrays = {}
    for name, dtype_name in declared.items():
        try:
            dtype = np.dtype(dtype_name) if isinstance(dtype_name, str) else None
        except TypeError:
            dtype = None
        if not isinstance(name, str) or not _ARRAY_NAME.match(name) or dtype is None or dtype.kind not in "biuf":
            raise DamagedDatasetError(
                f"{where}: array {name!r}: {dtype_name!r}; expected a plain name and a numeric dtype"
            )
        arrays[name] = dtype
    return arrays


def _array_files(manifest: Mapping[str, Any], where: Path | str) -> list[str]:
    """The array files of every split, in the fixed order the content digest reads them."""
    arrays = dataset_layout(manifest, where).arrays
    return sorted(array_filename(s, a) for s in SPLITS for a in arrays)


def content_digest(directory: Path, manifest_without_digest: dict[str, Any]) -> str:
    """SHA-256 over every array file the manifest declares (fixed order) and the canonical JSON of the manifest.

    Raises:
        DamagedDatasetError: an array file is missing, or the manifest's layout is malformed.
    """
    hasher = hashlib.sha256()
    for name in _array_files(manifest_without_digest, directory / MANIFEST):
        hasher.update(name.encode())
        try:
            with open(directory / name, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 22), b""):
                    hasher.update(block)
        except FileNotFoundError:
            raise DamagedDatasetError(f"{directory / name}: missing from the prepared dataset") from None
    hasher.update(canonical_json(manifest_without_digest).encode())
    return hasher.hexdigest()


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def load_prepared(path: str | Path, *, verify: bool = True) -> PreparedDataset:
    """Open a prepared dataset (arrays memory-mapped), checked as the module docstring says.

    Args:
        path: the dataset directory (the one holding ``manifest.json``).
        verify: check the content digest (cheap when ``verified.json`` is current; else reads every byte).
            The shapes, types and labels are checked either way.

    Raises:
        FileNotFoundError: no ``manifest.json`` in ``path``.
        DamagedDatasetError: the manifest, a file or a label is not what a prepared dataset holds.
    """
    directory = Path(path)
    manifest = read_manifest(directory)
    if verify:
        verify_content(directory, manifest)
    layout = dataset_layout(manifest, directory / MANIFEST)
    splits = {split: _load_split(directory, split, manifest, layout) for split in SPLITS}
    return PreparedDataset(path=directory, manifest=manifest, **splits)


def read_manifest(directory: Path) -> dict[str, Any]:
    """The parsed ``manifest.json`` of ``directory``.

    Raises:
        FileNotFoundError: no manifest.
        DamagedDatasetError: not JSON, not this format version, without a content digest, or declaring a
            malformed layout.
    """
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path}: no prepared dataset here (manifest.json missing)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DamagedDatasetError(f"{manifest_path}: not valid JSON ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        found = manifest.get("format_version") if isinstance(manifest, dict) else type(manifest).__name__
        raise DamagedDatasetError(f"{manifest_path}: format_version {found!r}, expected {FORMAT_VERSION}")
    if not isinstance(manifest.get("content_digest"), str):
        raise DamagedDatasetError(f"{manifest_path}: no content_digest")
    dataset_layout(manifest, manifest_path)
    return manifest


def verify_content(directory: Path, manifest: dict[str, Any]) -> None:
    """Check the files against the manifest's content digest; record a stamp when they match.

    Raises:
        DamagedDatasetError: a file is missing, or the digest differs (the files changed after the build).
    """
    expected = manifest["content_digest"]
    files = file_stamps(directory, dataset_layout(manifest, directory / MANIFEST).arrays)
    if _read_stamp(directory) == {"content_digest": expected, "files": files}:
        return
    actual = content_digest(directory, _without_digest(manifest))
    if actual != expected:
        raise DamagedDatasetError(
            f"{directory}: content digest {actual[:16]}… does not match the manifest's {expected[:16]}… "
            "(its files changed after it was built)"
        )
    write_stamp(directory, expected, files)


def file_stamps(directory: Path, arrays: Iterable[str]) -> dict[str, list[int]]:
    """(size, mtime_ns, ctime_ns, inode) of the files of ``arrays`` in every split and of the manifest.

    Raises:
        DamagedDatasetError: a file is missing.
    """
    stamps = {}
    for name in (*sorted(array_filename(s, a) for s in SPLITS for a in arrays), MANIFEST):
        try:
            found = os.stat(directory / name)
        except FileNotFoundError:
            raise DamagedDatasetError(f"{directory / name}: missing from the prepared dataset") from None
        stamps[name] = [found.st_size, found.st_mtime_ns, found.st_ctime_ns, found.st_ino]
    return stamps


def write_stamp(directory: Path, digest: str, files: dict[str, list[int]]) -> None:
    """Record that ``files`` matched ``digest`` (atomically). A read-only dataset keeps no stamp: it is then
    checked in full each time it is opened, which is slower but as safe."""
    temporary = directory / f".{STAMP}.{os.getpid()}"
    try:
        temporary.write_text(json.dumps({"content_digest": digest, "files": files}) + "\n")
        os.replace(temporary, directory / STAMP)
    except OSError as error:
        log.info("%s: cannot record the content check (%s); the next open checks every byte again", directory, error)
        temporary.unlink(missing_ok=True)


def _read_stamp(directory: Path) -> Any:
    try:
        return json.loads((directory / STAMP).read_text())
    except (OSError, ValueError):
        return None  # no stamp, or a torn one: the full check decides


def _load_split(directory: Path, split: str, manifest: dict[str, Any], layout: Layout) -> Split:
    arrays = {
        array: _load_array(directory / array_filename(split, array), dtype, rank=3 if array == "images" else 1)
        for array, dtype in layout.arrays.items()
    }
    summary = manifest.get("splits", {}).get(split, {})
    expected_n = summary.get("n", arrays["labels"].shape[0])
    for array, values in arrays.items():
        if values.shape[0] != expected_n:
            raise DamagedDatasetError(
                f"{directory / array_filename(split, array)}: {values.shape[0]} rows, but the manifest gives the "
                f"{split} split {expected_n}"
            )
    for array in layout.label_arrays:
        where = directory / array_filename(split, array)
        if layout.n_classes is not None:
            check_classes(arrays[array], layout.n_classes, where)
        else:
            check_densities(arrays[array], where)
    images, labels = arrays.pop("images"), arrays.pop("labels")
    return Split(images, labels, arrays)


def _load_array(file: Path, dtype: np.dtype[Any], *, rank: int) -> np.ndarray:
    if not file.is_file():
        raise DamagedDatasetError(f"{file}: missing from the prepared dataset")
    try:
        values = np.load(file, mmap_mode="r")
    except (ValueError, OSError, EOFError, SyntaxError, tokenize.TokenError) as error:
        raise DamagedDatasetError(f"{file}: not a readable .npy array ({error})") from None
    if values.dtype != dtype or values.ndim != rank:
        raise DamagedDatasetError(
            f"{file}: {values.dtype} array of shape {values.shape}; expected {dtype.name} of rank {rank}"
        )
    return values


def check_densities(values: np.ndarray, where: Path | str) -> None:
    """Every value a plausible thread density (finite, within ``PLAUSIBLE_DENSITY_THREADS_PER_CM``).

    Raises:
        DamagedDatasetError: naming ``where``, how many values are off, the first one and its index.
    """
    low, high = PLAUSIBLE_DENSITY_THREADS_PER_CM
    bad = np.flatnonzero(~((values >= low) & (values <= high)))  # NaN fails both comparisons
    if bad.size:
        first = float(values[bad[0]])
        shown = "NaN" if math.isnan(first) else f"{first:.6g}"
        raise DamagedDatasetError(
            f"{where}: {bad.size} value(s) outside the plausible {low:g}-{high:g} threads/cm, the first at index "
            f"{bad[0]} ({shown}); the loss divides by the label, so this dataset cannot be trained on"
        )


def check_classes(values: np.ndarray, n_classes: int, where: Path | str) -> None:
    """Every value a class, an integer in ``[0, n_classes)`` (the one-hot encoding and the loss index by it).

    Raises:
        DamagedDatasetError: naming ``where``, how many values are off, the first one and its index.
    """
    if values.dtype.kind not in "iu":
        raise DamagedDatasetError(f"{where}: {values.dtype} labels; classes must be integers")
    bad = np.flatnonzero((values < 0) | (values >= n_classes))
    if bad.size:
        raise DamagedDatasetError(
            f"{where}: {bad.size} label(s) outside the classes 0-{n_classes - 1}, the first at index {bad[0]} "
            f"({int(values[bad[0]])})"
        )


def _without_digest(manifest: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in manifest.items() if k != "content_digest"}
