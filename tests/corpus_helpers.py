"""Small hand-made raw corpora for tests: perfect thread grids whose densities are known exactly."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import cv2
import numpy as np

from thread_bench.workloads.thread_density import synthetic
from thread_bench.workloads.thread_density.config import DataConfig
from thread_bench.workloads.thread_density.prepare import _Augmentation, apply_augmentation, equalize_histogram

COLUMNS = ["painting_id", "patch_id", "image", "h_mask", "v_mask", "px_per_cm", "density_h", "density_v"]


def grid_patch(
    size_px: int = 300, period_v_px: float = 20.0, period_h_px: float = 25.0, line_px: int = 3
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An image and masks of vertical threads every ``period_v_px`` and horizontal every ``period_h_px``."""
    coords = np.arange(size_px)
    v_mask = np.zeros((size_px, size_px), bool)
    h_mask = np.zeros((size_px, size_px), bool)
    for centre in np.arange(period_v_px / 2, size_px, period_v_px):
        v_mask[:, np.abs(coords - centre) <= line_px // 2] = True
    for centre in np.arange(period_h_px / 2, size_px, period_h_px):
        h_mask[np.abs(coords - centre) <= line_px // 2, :] = True
    x = np.cos(2 * np.pi * (coords[None, :] - period_v_px / 2) / period_v_px)
    y = np.cos(2 * np.pi * (coords[:, None] - period_h_px / 2) / period_h_px)
    image = (128 - 50 * x - 50 * y).clip(0, 255).astype(np.uint8)
    return image, h_mask, v_mask


def write_grid_corpus(
    directory: Path,
    *,
    n_paintings: int = 4,
    patches_per_painting: int = 2,
    px_per_cm: float = 200.0,
    size_px: int = 300,
) -> Path:
    """Write a valid corpus; painting ``p`` has vertical period ``14 + 2p`` px and horizontal ``18 + 2p`` px."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = []
    for painting in range(n_paintings):
        period_v, period_h = 14.0 + 2 * painting, 18.0 + 2 * painting
        for patch in range(patches_per_painting):
            patch_id = f"p{painting}_{patch}"
            image, h_mask, v_mask = grid_patch(size_px, period_v, period_h)
            bit16 = patch % 2 == 1
            image_name = f"{patch_id}.tif" if bit16 else f"{patch_id}.png"
            cv2.imwrite(str(directory / image_name), image.astype(np.uint16) * 257 if bit16 else image)
            cv2.imwrite(str(directory / f"{patch_id}_h.png"), h_mask.astype(np.uint8) * 255)
            cv2.imwrite(str(directory / f"{patch_id}_v.png"), v_mask.astype(np.uint8) * 255)
            rows.append(
                {
                    "painting_id": f"painting{painting}",
                    "patch_id": patch_id,
                    "image": image_name,
                    "h_mask": f"{patch_id}_h.png",
                    "v_mask": f"{patch_id}_v.png",
                    "px_per_cm": px_per_cm,
                    "density_h": px_per_cm / period_h,
                    "density_v": px_per_cm / period_v,
                }
            )
    write_index(directory, rows)
    return directory


def read_index_rows(directory: Path) -> list[dict[str, str]]:
    with open(directory / "index.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def write_index(directory: Path, rows: list[dict[str, object]], columns: list[str] | None = None) -> None:
    with open(directory / "index.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns or COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def grid_config(source: Path, *, subpatches_per_patch: int, input_size: int, **overrides: object) -> DataConfig:
    """Preparation settings for a grid corpus: a quarter of the patches each for validation and test."""
    values: dict[str, object] = {
        "source": str(source),
        "subpatches_per_patch": subpatches_per_patch,
        "input_size": input_size,
        "val_fraction": 0.25,
        "test_fraction": 0.25,
    }
    values.update(overrides)
    return DataConfig(**values)  # type: ignore[arg-type]


def raw_patch(seed: int = 0, *, bit_depth: int = 8, size_px: int = 300) -> np.ndarray:
    """A synthetic raw patch as a scanner stores it (8- or 16-bit), at 200 px/cm."""
    rng = np.random.default_rng(seed)
    canvas = synthetic.CanvasParams.random(rng)
    imaging = dataclasses.replace(synthetic.ImagingParams.random(rng), bit_depth=bit_depth)
    return synthetic.generate_patch(rng, canvas, imaging=imaging, size_px=size_px).image


def training_window(
    patch: np.ndarray, top: int, left: int, crop_px: int = 200, size: int = 64, *, equalisation: str = "window"
) -> np.ndarray:
    """What the preparation makes of the unrotated, unflipped sub-patch at ``(top, left)``, equalised on its own
    (``window``, the default) or cut from the equalised patch (``patch``), written out here step by step."""
    half = (crop_px - 1) / 2
    augmentation = _Augmentation(centre_xy=(left + half, top + half), angle_deg=0.0, dihedral=0)
    if equalisation == "window":
        image = equalize_histogram(apply_augmentation(patch, augmentation, crop_px, nearest=False))
    else:
        image = apply_augmentation(equalize_histogram(patch), augmentation, crop_px, nearest=False)
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
