"""The prepared dataset on disk: layout, content digest, checks and loading.

A prepared dataset is a directory ``<root>/<key>/`` holding, per split (``train``, ``val``, ``test``):

- ``<split>_images.npy``: uint8 ``(N, S, S)``, histogram-equalised sub-patches (divide by 255 for [0, 1]);
- ``<split>_labels.npy``: float32 ``(N,)``, vertical thread density in threads/cm (the regression target);
- ``<split>_density_h.npy``: float32 ``(N,)``, horizontal thread density (kept for analysis);
- ``<split>_patch_index.npy``: int32 ``(N,)``, row of the source patch in the corpus index;

and ``manifest.json`` (sizes, seed, source digest, settings, skipped patches, content digest). The manifest
is written last and the directory is renamed into place atomically, so a directory with a manifest is
complete. Arrays are plain ``.npy`` files, memory-mapped on load.

**Trust.** A dataset is checked every time it is opened: its content digest is recomputed (every byte) unless
``verified.json`` shows that no file changed since the last check (size, modification and change times and
inode of each file; the change time cannot be set back by a user, so an edit is always noticed). Damage, a
malformed array and a label that is not a plausible thread density raise :class:`DamagedDatasetError`.
``verified.json`` is a cache outside the content digest; deleting it only costs one full check.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tokenize
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
ARRAYS = ("images", "labels", "density_h", "patch_index")
MANIFEST = "manifest.json"
#: The record of the last successful content check (see the module docstring).
STAMP = "verified.json"
FORMAT_VERSION = 1
#: Thread densities a label may take, threads/cm. Canvases range over about 5-40; anything outside this
#: range comes from a wrong resolution (px_per_cm) or wrong masks, never from a canvas.
PLAUSIBLE_DENSITY_THREADS_PER_CM = (1.0, 100.0)
_DTYPES: dict[str, type] = {"images": np.uint8, "labels": np.float32, "density_h": np.float32, "patch_index": np.int32}


class DamagedDatasetError(ValueError):
    """The files of a prepared dataset do not match its manifest, or are unreadable: rebuild it."""


@dataclass(frozen=True)
class Split:
    images: np.ndarray
    """uint8 ``(N, S, S)``; memory-mapped."""
    labels: np.ndarray
    """float32 ``(N,)``: vertical threads/cm."""
    density_h: np.ndarray
    patch_index: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


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

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        split: Split = getattr(self, name)
        return split


def array_filename(split: str, array: str) -> str:
    return f"{split}_{array}.npy"


def content_digest(directory: Path, manifest_without_digest: dict[str, Any]) -> str:
    """SHA-256 over every array file (fixed order) and the canonical JSON of the manifest.

    Raises:
        DamagedDatasetError: an array file is missing.
    """
    hasher = hashlib.sha256()
    for name in sorted(array_filename(s, a) for s in SPLITS for a in ARRAYS):
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
    splits = {split: _load_split(directory, split, manifest) for split in SPLITS}
    return PreparedDataset(path=directory, manifest=manifest, **splits)


def read_manifest(directory: Path) -> dict[str, Any]:
    """The parsed ``manifest.json`` of ``directory``.

    Raises:
        FileNotFoundError: no manifest.
        DamagedDatasetError: not JSON, not this format version, or without a content digest.
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
    return manifest


def verify_content(directory: Path, manifest: dict[str, Any]) -> None:
    """Check the files against the manifest's content digest; record a stamp when they match.

    Raises:
        DamagedDatasetError: a file is missing, or the digest differs (the files changed after the build).
    """
    expected = manifest["content_digest"]
    files = file_stamps(directory)
    if _read_stamp(directory) == {"content_digest": expected, "files": files}:
        return
    actual = content_digest(directory, _without_digest(manifest))
    if actual != expected:
        raise DamagedDatasetError(
            f"{directory}: content digest {actual[:16]}… does not match the manifest's {expected[:16]}… "
            "(its files changed after it was built)"
        )
    write_stamp(directory, expected, files)


def file_stamps(directory: Path) -> dict[str, list[int]]:
    """(size, mtime_ns, ctime_ns, inode) of every array file and of the manifest.

    Raises:
        DamagedDatasetError: a file is missing.
    """
    stamps = {}
    for name in (*sorted(array_filename(s, a) for s in SPLITS for a in ARRAYS), MANIFEST):
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


def _load_split(directory: Path, split: str, manifest: dict[str, Any]) -> Split:
    arrays = {array: _load_array(directory / array_filename(split, array), array) for array in ARRAYS}
    summary = manifest.get("splits", {}).get(split, {})
    expected_n = summary.get("n", arrays["labels"].shape[0])
    for array, values in arrays.items():
        if values.shape[0] != expected_n:
            raise DamagedDatasetError(
                f"{directory / array_filename(split, array)}: {values.shape[0]} rows, but the manifest gives the "
                f"{split} split {expected_n}"
            )
    for array in ("labels", "density_h"):
        check_densities(arrays[array], directory / array_filename(split, array))
    return Split(**arrays)


def _load_array(file: Path, array: str) -> np.ndarray:
    if not file.is_file():
        raise DamagedDatasetError(f"{file}: missing from the prepared dataset")
    try:
        values = np.load(file, mmap_mode="r")
    except (ValueError, OSError, EOFError, SyntaxError, tokenize.TokenError) as error:
        raise DamagedDatasetError(f"{file}: not a readable .npy array ({error})") from None
    rank = 3 if array == "images" else 1
    if values.dtype != _DTYPES[array] or values.ndim != rank:
        expected = np.dtype(_DTYPES[array]).name
        raise DamagedDatasetError(
            f"{file}: {values.dtype} array of shape {values.shape}; expected {expected} of rank {rank}"
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


def _without_digest(manifest: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in manifest.items() if k != "content_digest"}

