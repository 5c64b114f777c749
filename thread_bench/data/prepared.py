"""The prepared dataset on disk: layout, content digest and loading.

A prepared dataset is a directory ``<root>/<key>/`` holding, per split (``train``, ``val``, ``test``):

- ``<split>_images.npy``: uint8 ``(N, S, S)``, histogram-equalised sub-patches (divide by 255 for [0, 1]);
- ``<split>_labels.npy``: float32 ``(N,)``, vertical thread density in threads/cm (the regression target);
- ``<split>_density_h.npy``: float32 ``(N,)``, horizontal thread density (kept for analysis);
- ``<split>_patch_index.npy``: int32 ``(N,)``, row of the source patch in the corpus index;

and ``manifest.json`` (sizes, seed, source digest, settings, skipped patches, content digest). The manifest
is written last and the directory is renamed into place atomically, so a directory with a manifest is
complete. Arrays are plain ``.npy`` files, memory-mapped on load.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SPLITS = ("train", "val", "test")
ARRAYS = ("images", "labels", "density_h", "patch_index")
MANIFEST = "manifest.json"
FORMAT_VERSION = 1


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
    """SHA-256 over every array file (fixed order) and the canonical JSON of the manifest."""
    hasher = hashlib.sha256()
    for name in sorted(array_filename(s, a) for s in SPLITS for a in ARRAYS):
        hasher.update(name.encode())
        with open(directory / name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                hasher.update(block)
    hasher.update(canonical_json(manifest_without_digest).encode())
    return hasher.hexdigest()


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def load_prepared(path: str | Path, *, verify: bool = False) -> PreparedDataset:
    """Open a prepared dataset (arrays memory-mapped).

    Args:
        path: the dataset directory (the one holding ``manifest.json``).
        verify: recompute the content digest and compare it with the manifest (reads every byte).
    """
    directory = Path(path)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path}: no prepared dataset here (manifest.json missing)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{manifest_path}: not valid JSON ({error})") from error
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{manifest_path}: format_version {manifest.get('format_version')!r}, expected {FORMAT_VERSION}"
        )
    splits = {}
    for split in SPLITS:
        arrays = {}
        for array in ARRAYS:
            file = directory / array_filename(split, array)
            if not file.is_file():
                raise FileNotFoundError(f"{file}: missing from the prepared dataset")
            arrays[array] = np.load(file, mmap_mode="r")
        splits[split] = Split(**arrays)
    if verify:
        expected = manifest["content_digest"]
        actual = content_digest(directory, _without_digest(manifest))
        if actual != expected:
            raise ValueError(f"{directory}: content digest {actual} does not match the manifest's {expected}")
    return PreparedDataset(path=directory, manifest=manifest, **splits)


def _without_digest(manifest: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in manifest.items() if k != "content_digest"}


def iter_array_files(directory: Path) -> Iterable[Path]:
    for split in SPLITS:
        for array in ARRAYS:
            yield directory / array_filename(split, array)
