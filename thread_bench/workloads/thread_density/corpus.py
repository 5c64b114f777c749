"""Reading and validating a raw corpus (docs/DESIGN.md §2.1): ``index.csv`` plus image and mask files.

Every problem is reported with the file and row it comes from and what was expected.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

INDEX = "index.csv"
REQUIRED_COLUMNS = ("painting_id", "patch_id", "image", "h_mask", "v_mask", "px_per_cm")
OPTIONAL_COLUMNS = ("density_h", "density_v")


@dataclass(frozen=True)
class PatchRecord:
    """One row of ``index.csv``; paths are relative to the corpus directory."""

    row: int
    """1-based data row number in ``index.csv`` (the header is row 0)."""
    painting_id: str
    patch_id: str
    image: str
    h_mask: str
    v_mask: str
    px_per_cm: float
    density_h: float | None
    density_v: float | None


@dataclass(frozen=True)
class Patch:
    record: PatchRecord
    image: np.ndarray
    """uint8 or uint16, 2-D."""
    h_mask: np.ndarray
    """bool, same shape as ``image``."""
    v_mask: np.ndarray


def read_index(directory: Path) -> list[PatchRecord]:
    """Parse and validate ``directory/index.csv`` (columns, ids, numbers, that the files exist)."""
    if not directory.is_dir():
        raise FileNotFoundError(f"corpus directory {directory} does not exist")
    index_path = directory / INDEX
    if not index_path.is_file():
        raise FileNotFoundError(f"{index_path}: missing; a corpus directory needs an index.csv ({_columns_hint()})")
    records = _read_rows(index_path)
    if not records:
        raise ValueError(f"{index_path}: no rows")
    seen: dict[str, int] = {}
    for record in records:
        if record.patch_id in seen:
            raise ValueError(
                f"{index_path} row {record.row}: patch_id {record.patch_id!r} repeats row {seen[record.patch_id]}"
            )
        seen[record.patch_id] = record.row
        for column in ("image", "h_mask", "v_mask"):
            path = directory / getattr(record, column)
            if not path.is_file():
                raise FileNotFoundError(f"{index_path} row {record.row} ({column}): file {path} not found")
    return records


def _read_rows(index_path: Path) -> list[PatchRecord]:
    # utf-8-sig: spreadsheet programs save "CSV UTF-8" with a byte-order mark, which would glue itself to
    # the first column's name.
    try:
        with open(index_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in REQUIRED_COLUMNS if c not in columns]
            if missing:
                raise ValueError(f"{index_path}: missing column(s) {missing}; expected {_columns_hint()}")
            return [_parse_row(index_path, number, row) for number, row in enumerate(reader, start=1)]
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{index_path}: not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset {error.start}); "
            "save it as CSV in UTF-8"
        ) from None
    except csv.Error as error:
        raise ValueError(f"{index_path}: not a readable CSV file ({error})") from None


def _columns_hint() -> str:
    return "columns " + ", ".join(REQUIRED_COLUMNS) + " and optionally " + ", ".join(OPTIONAL_COLUMNS)


def _parse_row(index_path: Path, number: int, row: dict[str, str | None]) -> PatchRecord:
    where = f"{index_path} row {number}"
    values = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
    for column in ("painting_id", "patch_id", "image", "h_mask", "v_mask"):
        if not values.get(column):
            raise ValueError(f"{where}: column {column!r} is empty")
        if column in ("image", "h_mask", "v_mask") and not _inside(values[column]):
            raise ValueError(
                f"{where}: column {column!r} must be a path inside the corpus directory, relative to it; "
                f"got {values[column]!r}"
            )
    px_per_cm = _number(where, "px_per_cm", values["px_per_cm"])
    if px_per_cm is None or not px_per_cm > 0:
        raise ValueError(f"{where}: px_per_cm must be a number > 0, got {values['px_per_cm']!r}")
    densities = {c: _number(where, c, values.get(c, "")) for c in OPTIONAL_COLUMNS}
    return PatchRecord(
        row=number,
        painting_id=values["painting_id"],
        patch_id=values["patch_id"],
        image=values["image"],
        h_mask=values["h_mask"],
        v_mask=values["v_mask"],
        px_per_cm=px_per_cm,
        density_h=densities["density_h"],
        density_v=densities["density_v"],
    )


def _inside(relative: str) -> bool:
    """A relative path that stays in the corpus directory (judged by its text: a symbolic link inside the
    corpus may still point elsewhere, which is the corpus owner's choice, not a typo in index.csv)."""
    if Path(relative).is_absolute():
        return False
    normal = os.path.normpath(relative)
    return normal != ".." and not normal.startswith(".." + os.sep)


def _number(where: str, column: str, text: str) -> float | None:
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: column {column!r} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: column {column!r} must be finite, got {text!r}")
    return value


def load_patch(directory: Path, record: PatchRecord) -> Patch:
    """Read one patch's image and masks; check sizes, bit depth and that the masks are binary and non-empty."""
    where = f"{directory / INDEX} row {record.row} (patch {record.patch_id!r})"
    image = _read(directory / record.image, where)
    if image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{where}: image {record.image} is {image.dtype}; expected 8- or 16-bit grayscale")
    masks = []
    for column in ("h_mask", "v_mask"):
        name = getattr(record, column)
        mask = _read(directory / name, where)
        if mask.shape != image.shape:
            raise ValueError(
                f"{where}: {column} {name} is {mask.shape[1]}x{mask.shape[0]} px but the image "
                f"{record.image} is {image.shape[1]}x{image.shape[0]} px; they must be the same size"
            )
        values = np.unique(mask)
        if not set(values.tolist()) <= {0, 1, 255, 65535} or values.size > 2:
            raise ValueError(
                f"{where}: {column} {name} is not binary (values {values[:6].tolist()}...); expected 0 and 255"
            )
        if values.max() == 0:
            raise ValueError(f"{where}: {column} {name} is empty (no thread centre lines marked)")
        masks.append(mask > 0)
    return Patch(record=record, image=image, h_mask=masks[0], v_mask=masks[1])


def _read(path: Path, where: str) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{where}: file {path} not found")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"{where}: {path} is not a readable PNG/TIFF image")
    if image.ndim != 2:
        raise ValueError(f"{where}: {path} has {image.shape[2]} channels; expected a single-channel grayscale image")
    return image


def source_digest(directory: Path, records: list[PatchRecord]) -> str:
    """SHA-256 of ``index.csv`` and every file it references (so a changed pixel changes the digest)."""
    hasher = hashlib.sha256()
    hasher.update((directory / INDEX).read_bytes())
    for name in sorted({getattr(r, c) for r in records for c in ("image", "h_mask", "v_mask")}):
        hasher.update(name.encode())
        hasher.update((directory / name).read_bytes())
    return hasher.hexdigest()
