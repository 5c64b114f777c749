"""Preprocessing of the thread-density workload (docs/DESIGN.md §2.3): raw corpus -> prepared dataset.

Per patch: ``subpatches_per_patch`` augmented sub-patches (crop position, small rotation, one of the eight
flips/90-degree rotations), the masks getting the identical geometric transform with nearest-neighbour
interpolation; each sub-patch histogram-equalised on its own (``equalisation="window"``, what a logged model
does with each window it is asked about) or cut from the equalised patch (``"patch"``, the reference study's);
the label of each sub-patch is counted on its transformed masks by :func:`.counting.count_threads` (times the
cut's scale, with ``scale_jitter``). Paintings, not patches, are assigned to train/val/test. The dataset is
written, reused and trusted by the machinery every workload shares (:mod:`thread_bench.data.build`).

Everything random is drawn from ``numpy.random.default_rng((seed, stream, row))``, so the result does not
depend on the number of worker processes or on their scheduling: same corpus + same settings + same seed
=> the same bytes and the same content digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from thread_bench import diskspace, lifecycle
from thread_bench.data.build import (  # re-exported: older code imported them from here
    PrepareResult,
    build_prepared,
    data_root,
    prepared_path,
    reuse_prepared,
    timing_stats,
)
from thread_bench.data.prepared import (
    FORMAT_VERSION,
    PLAUSIBLE_DENSITY_THREADS_PER_CM,
    SPLITS,
    array_filename,
    canonical_json,
    load_prepared,
)
from thread_bench.progress import Ticker
from thread_bench.workloads.thread_density import corpus, keys, synthetic
from thread_bench.workloads.thread_density.config import DataConfig
from thread_bench.workloads.thread_density.counting import CountingError, ThreadDensity, count_threads

log = logging.getLogger(__name__)


# Independent random streams per purpose (see module docstring).
_SPLIT_STREAM = 1
_AUGMENT_STREAM = 2

#: A ground-truth density in index.csv that differs from the counted one by more than this fraction is
#: reported (counting itself is within 3 % on the synthetic corpus).
DENSITY_TOLERANCE = 0.10
#: Sub-patches whose count falls outside the plausible range are skipped under this reason.
_IMPLAUSIBLE_REASON = "implausible thread density"


#: A sub-patch enlarged by the scale jitter keeps a thread period of at least this many stored pixels (the laptop
#: profile's 72 px resolve 35 threads/cm at 2.06 px; a little more margin for what the jitter adds).
_MIN_JITTERED_PERIOD_PX = 2.5


@dataclass(frozen=True)
class _Augmentation:
    centre_xy: tuple[float, float]
    angle_deg: float
    dihedral: int
    """0-3: number of 90-degree rotations; 4-7: the same after a left-right flip."""
    side_px: int | None = None
    """The cut's side in the patch's pixels, resized to the stored size like a ``crop_px`` cut (``None``:
    ``crop_px``); the scale jitter draws it, and the labels scale by ``side_px / crop_px``."""


@dataclass
class _PatchOutput:
    images: np.ndarray
    labels: np.ndarray
    density_h: np.ndarray
    skip_reasons: Counter[str]
    patch_skipped: str | None = None
    #: The index's ground truth where it disagrees with the count: (column, given, counted).
    density_mismatches: list[tuple[str, float, float]] = field(default_factory=list)


def synthetic_corpus_dir(config: DataConfig, root: Path) -> Path:
    return root / "raw" / f"synthetic-{config.styles}-seed{config.seed}-{config.n_paintings}x{config.n_patches}"


def ensure_prepared(config: DataConfig, root: str | Path | None = None, *, workers: int | None = None) -> PrepareResult:
    """Return the prepared dataset for ``config``, building it only if none with the same key exists.

    The key is a hash of the source digest (the bytes of the corpus), the seed and every preparation setting.
    """
    # Imported here, not at the top: the spawned preparation workers import this module, and tracking brings
    # MLflow with it (seconds per worker).

    root_dir = data_root(root)
    started = time.perf_counter()
    corpus_dir = _resolve_source(config, root_dir)
    corpus_time_s = time.perf_counter() - started
    records = corpus.read_index(corpus_dir)
    source_digest = corpus.source_digest(corpus_dir, records)
    key = dataset_key(config, source_digest)
    target = prepared_path(root_dir, key)
    reused = reuse_prepared(target)
    if reused is not None:
        return PrepareResult(reused, built=False, corpus_dir=corpus_dir, stats=timing_stats(started, corpus_time_s))

    log.info("preparing dataset %s from %s (%d patches)", key, corpus_dir, len(records))
    build_started = time.perf_counter()
    manifest = _build(config, corpus_dir, records, source_digest, target, workers=workers)
    stats = timing_stats(started, corpus_time_s, build_started)
    stats[keys.PREP_SKIPPED_PATCHES] = len(manifest["skipped"]["patches"])
    stats[keys.PREP_SKIPPED_SUBPATCHES] = manifest["skipped"]["subpatches"]
    return PrepareResult(load_prepared(target), built=True, corpus_dir=corpus_dir, stats=stats)


def dataset_key(config: DataConfig, source_digest: str) -> str:
    settings = _settings(config)
    payload = canonical_json({"format_version": FORMAT_VERSION, "source": source_digest, "settings": settings})
    tag = "synthetic" if config.source == "synthetic" else "corpus"
    return f"{tag}-seed{config.seed}-{config.input_size}px-{hashlib.sha256(payload.encode()).hexdigest()[:16]}"


def _settings(config: DataConfig) -> dict[str, Any]:
    """The settings that shape the prepared data (the source enters through its digest, not its path)."""
    settings = asdict(config)
    settings.pop("source")
    if config.source != "synthetic":
        # The synthetic corpus size and style mix do not apply to a user's corpus.
        settings.pop("n_paintings")
        settings.pop("n_patches")
        settings.pop("styles")
    return settings


def _resolve_source(config: DataConfig, root: Path) -> Path:
    if config.source == "synthetic":
        return synthetic.write_corpus(
            synthetic_corpus_dir(config, root),
            n_paintings=config.n_paintings,
            n_patches=config.n_patches,
            seed=config.seed,
            mix=synthetic.STYLE_MIXES[config.styles],
            cache=True,  # the preparation's own: checked on every reuse, written again when damaged or stale
        )
    directory = Path(config.source)
    if not directory.is_dir():
        raise FileNotFoundError(f"source {config.source!r}: no such directory (expected 'synthetic' or a corpus dir)")
    return directory


# --------------------------------------------------------------------------------------------- the split


def split_paintings(records: Sequence[corpus.PatchRecord], config: DataConfig) -> dict[str, list[str]]:
    """Assign whole paintings to test, then validation, until each holds its fraction of the patches."""
    patches_per_painting = Counter(r.painting_id for r in records)
    paintings = sorted(patches_per_painting)
    if len(paintings) < 3:
        raise ValueError(f"the corpus has {len(paintings)} painting(s); a split by painting needs at least 3")
    order = np.random.default_rng((config.seed, _SPLIT_STREAM)).permutation(len(paintings))
    shuffled = [paintings[i] for i in order]
    total = len(records)
    assignment: dict[str, list[str]] = {"test": [], "val": [], "train": []}
    position = 0
    for split, fraction in (("test", config.test_fraction), ("val", config.val_fraction)):
        taken = 0
        # Always at least one painting; stop before the remaining paintings could not fill train.
        while position < len(shuffled) - 1 and (
            not assignment[split] or taken + 0.5 * patches_per_painting[shuffled[position]] <= fraction * total
        ):
            assignment[split].append(shuffled[position])
            taken += patches_per_painting[shuffled[position]]
            position += 1
    assignment["train"] = shuffled[position:]
    if not assignment["train"]:
        raise ValueError("no painting left for the training split; lower val_fraction/test_fraction")
    return {split: sorted(names) for split, names in assignment.items()}


# ---------------------------------------------------------------------------------------- augmentation


def equalize_histogram(image: np.ndarray) -> np.ndarray:
    """Histogram equalisation of an 8- or 16-bit image to uint8 (one formula for both bit depths)."""
    levels = 256 if image.dtype == np.uint8 else 65536
    histogram = np.bincount(image.ravel(), minlength=levels)
    cdf = np.cumsum(histogram)
    cdf_min = cdf[np.flatnonzero(histogram)[0]]
    span = max(int(cdf[-1] - cdf_min), 1)
    lut = np.clip(np.round((cdf - cdf_min) * 255.0 / span), 0, 255).astype(np.uint8)
    equalized: np.ndarray = lut[image]
    return equalized


def draw_augmentations(
    rng: np.random.Generator, shape: tuple[int, int], config: DataConfig, max_zoom: float = 1.0
) -> list[_Augmentation]:
    """Crop centres, small rotations (half of the sub-patches, 1 to max degrees) and the eight dihedral
    transforms in equal shares; with ``config.scale_jitter``, a side per sub-patch drawn log-uniformly within
    that factor of ``crop_px`` and at most ``max_zoom`` times it (:func:`max_zoom`). The crop stays inside the
    patch after rotation (no padded corners)."""
    height, width = shape
    draws = []
    for index in range(config.subpatches_per_patch):
        side = config.crop_px
        if config.scale_jitter > 0.0:
            reach = math.log1p(config.scale_jitter)
            zoom = min(math.exp(rng.uniform(-reach, reach)), max_zoom)
            side = min(max(1, round(config.crop_px * zoom)), height, width)
        rotate = config.max_rotation_deg >= 1.0 and rng.random() < 0.5
        angle = float(rng.uniform(1.0, config.max_rotation_deg) * rng.choice((-1.0, 1.0))) if rotate else 0.0
        radians = math.radians(abs(angle))
        half_extent = 0.5 * side * (math.cos(radians) + math.sin(radians))
        low_x, high_x = half_extent, width - half_extent
        low_y, high_y = half_extent, height - half_extent
        if low_x > high_x or low_y > high_y:
            # Too small to rotate: fall back to an unrotated crop (checked to fit by the caller).
            angle = 0.0
        if angle == 0.0:
            # Unrotated crops start on a whole pixel, so that cutting them is exact slicing (no resampling).
            half = (side - 1) / 2
            centre = (
                float(rng.integers(0, width - side + 1)) + half,
                float(rng.integers(0, height - side + 1)) + half,
            )
        else:
            centre = (float(rng.uniform(low_x, high_x)), float(rng.uniform(low_y, high_y)))
        draws.append(
            _Augmentation(
                centre_xy=centre,
                angle_deg=angle,
                dihedral=index % 8,
                side_px=None if side == config.crop_px else side,
            )
        )
    return draws


def max_zoom(config: DataConfig, density: ThreadDensity, px_per_cm: float) -> float:
    """The largest side / ``crop_px`` the scale jitter may cut from a patch of ``density``: an enlarged cut
    packs more threads into the stored image, and its densest threads must keep a period of at least
    ``_MIN_JITTERED_PERIOD_PX`` stored pixels (never below 1: shrinking is always allowed)."""
    densest = max(density.vertical, density.horizontal)
    stored_px_per_cm = px_per_cm * config.input_size / config.crop_px
    return max(1.0, stored_px_per_cm / (_MIN_JITTERED_PERIOD_PX * densest))


def apply_augmentation(array: np.ndarray, augmentation: _Augmentation, crop_px: int, *, nearest: bool) -> np.ndarray:
    """Rotate about the crop centre, cut ``side_px`` (default ``crop_px``) square around it, then flip/rotate by
    90 degrees.

    ``nearest`` selects nearest-neighbour interpolation (masks) instead of bilinear (images).
    """
    side = augmentation.side_px or crop_px
    source = array.view(np.uint8) if array.dtype == bool else array
    centre = np.asarray(augmentation.centre_xy, np.float64)
    left, top = centre - (side - 1) / 2
    if augmentation.angle_deg == 0.0 and left.is_integer() and top.is_integer():
        out = source[int(top) : int(top) + side, int(left) : int(left) + side]
    else:
        matrix = np.asarray(cv2.getRotationMatrix2D(augmentation.centre_xy, augmentation.angle_deg, 1.0), np.float64)
        # Move the crop centre onto the output's centre pixel ((side - 1) / 2 in cv2's pixel coordinates).
        matrix[:, 2] += (side - 1) / 2 - centre
        # The crop never leaves the patch (draw_augmentations); should it, a mask gets no mirrored threads.
        if nearest:
            out = cv2.warpAffine(source, matrix, (side, side), flags=cv2.INTER_NEAREST, borderValue=0)
        else:
            out = cv2.warpAffine(source, matrix, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if augmentation.dihedral >= 4:
        out = out[:, ::-1]
    out = np.rot90(out, augmentation.dihedral % 4)
    return np.ascontiguousarray(out.view(bool) if array.dtype == bool else out)


def prepare_patch(task: tuple[Path, corpus.PatchRecord, DataConfig]) -> _PatchOutput:
    """All sub-patches of one patch (runs in a worker process)."""
    corpus_dir, record, config = task
    patch = corpus.load_patch(corpus_dir, record)
    height, width = patch.image.shape
    size = config.input_size
    empty = _PatchOutput(
        images=np.empty((0, size, size), np.uint8),
        labels=np.empty(0, np.float32),
        density_h=np.empty(0, np.float32),
        skip_reasons=Counter(),
    )
    if min(height, width) < config.crop_px:
        empty.patch_skipped = f"{width}x{height} px is smaller than crop_px={config.crop_px}"
        return empty
    try:
        whole = count_threads(patch.h_mask, patch.v_mask, record.px_per_cm)
    except CountingError as error:
        empty.patch_skipped = str(error)
        return empty
    check_plausible(corpus_dir, record, whole)
    mismatches = density_mismatches(record, whole)

    # Per window, the raw gray levels are cut (and rotated) and the cut is equalised; per patch, the cut is
    # taken from the equalised patch.
    per_window = config.equalisation == "window"
    source = patch.image if per_window else equalize_histogram(patch.image)
    rng = np.random.default_rng((config.seed, _AUGMENT_STREAM, record.row))
    images, labels, density_h = [], [], []
    reasons: Counter[str] = Counter()
    # Both masks in one image (bit 0: horizontal, bit 1: vertical): one warp instead of two per sub-patch.
    masks = patch.h_mask.view(np.uint8) | (patch.v_mask.view(np.uint8) << 1)
    zoom = max_zoom(config, whole, record.px_per_cm)
    for augmentation in draw_augmentations(rng, (height, width), config, zoom):
        warped = apply_augmentation(masks, augmentation, config.crop_px, nearest=True)
        h_mask, v_mask = (warped & 1).view(bool), (warped >> 1).view(bool)
        try:
            counted = count_threads(h_mask, v_mask, record.px_per_cm)
        except CountingError as error:
            reasons[_reason_kind(error)] += 1
            continue
        # A cut of side_px stored as crop_px holds side_px / crop_px times the threads a crop_px cut would.
        stretch = (augmentation.side_px or config.crop_px) / config.crop_px
        density = ThreadDensity(horizontal=counted.horizontal * stretch, vertical=counted.vertical * stretch)
        if not (_plausible(density.vertical) and _plausible(density.horizontal)):
            reasons[_IMPLAUSIBLE_REASON] += 1
            continue
        image = apply_augmentation(source, augmentation, config.crop_px, nearest=False)
        if per_window:
            image = equalize_histogram(image)
        if image.shape[0] != size:
            image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        images.append(image)
        labels.append(density.vertical)
        density_h.append(density.horizontal)
    if not images:
        empty.skip_reasons = reasons
        empty.density_mismatches = mismatches
        return empty
    return _PatchOutput(
        images=np.stack(images),
        labels=np.asarray(labels, np.float32),
        density_h=np.asarray(density_h, np.float32),
        skip_reasons=reasons,
        density_mismatches=mismatches,
    )


def _plausible(density: float) -> bool:
    low, high = PLAUSIBLE_DENSITY_THREADS_PER_CM
    return low <= density <= high  # False for NaN


def check_plausible(corpus_dir: Path, record: corpus.PatchRecord, density: ThreadDensity) -> None:
    """The whole patch's count must be a canvas density; else the resolution or the masks are wrong.

    Raises:
        ValueError: naming the row, the counts and the resolution they came from.
    """
    if _plausible(density.vertical) and _plausible(density.horizontal):
        return
    low, high = PLAUSIBLE_DENSITY_THREADS_PER_CM
    raise ValueError(
        f"{corpus_dir / corpus.INDEX} row {record.row} (patch {record.patch_id!r}): counted "
        f"{density.vertical:.3g} (vertical) and {density.horizontal:.3g} (horizontal) threads/cm at "
        f"px_per_cm={record.px_per_cm:g}; a canvas has {low:g}-{high:g}: check px_per_cm and the masks"
    )


def density_mismatches(record: corpus.PatchRecord, density: ThreadDensity) -> list[tuple[str, float, float]]:
    """(column, given, counted) for each ground-truth density of ``record`` off by more than DENSITY_TOLERANCE."""
    found = []
    for column, given, counted in (
        ("density_v", record.density_v, density.vertical),
        ("density_h", record.density_h, density.horizontal),
    ):
        if given is not None and abs(given - counted) > DENSITY_TOLERANCE * counted:
            found.append((column, given, counted))
    return found


def _reason_kind(error: CountingError) -> str:
    # Keep the first clause of the message so that reasons aggregate into a few kinds.
    return str(error).split(":")[0].split(";")[0][:80]


# ------------------------------------------------------------------------------------------ the writing


def _build(
    config: DataConfig,
    corpus_dir: Path,
    records: list[corpus.PatchRecord],
    source_digest: str,
    target: Path,
    *,
    workers: int | None,
) -> dict[str, Any]:
    assignment = split_paintings(records, config)
    split_of = {painting: split for split, paintings in assignment.items() for painting in paintings}

    def write(staging: Path) -> dict[str, Any]:
        manifest = _write_splits(config, corpus_dir, records, split_of, staging, workers)
        manifest.update(
            {
                "seed": config.seed,
                "source": {
                    "kind": "synthetic" if config.source == "synthetic" else "directory",
                    "digest": source_digest,
                    "n_patches": len(records),
                    "n_paintings": len(split_of),
                },
                "settings": _settings(config),
                "paintings": assignment,
            }
        )
        return manifest

    return build_prepared(target, write)


def _write_splits(
    config: DataConfig,
    corpus_dir: Path,
    records: list[corpus.PatchRecord],
    split_of: dict[str, str],
    staging: Path,
    workers: int | None,
) -> dict[str, Any]:
    size = config.input_size
    rows = {split: [r for r in records if split_of[r.painting_id] == split] for split in SPLITS}
    capacity = {split: len(rows[split]) * config.subpatches_per_patch for split in SPLITS}
    # Refused before a byte is written when the disk lacks the room (images, then three 4-byte columns)
    diskspace.check_room(staging.parent, sum(capacity.values()) * (size * size + 12), "the prepared dataset")
    writers = {split: _SplitWriter(staging, split, capacity[split], size) for split in SPLITS}
    skipped_patches: list[dict[str, str]] = []
    mismatches: list[dict[str, Any]] = []
    reasons: Counter[str] = Counter()
    ordered = [(split, record) for split in SPLITS for record in rows[split]]
    tasks = [(corpus_dir, record, config) for _, record in ordered]
    with (
        contextlib.closing(_map(prepare_patch, tasks, workers)) as outputs,  # closed (pool ended) on any exit
        Ticker("preprocessing", "patches", len(tasks), every_s=10.0) as ticker,
    ):
        for (split, record), output in zip(ordered, outputs, strict=True):
            mismatches += _report_mismatches(corpus_dir, record, output.density_mismatches)
            _collect(output, split, record, writers, skipped_patches, reasons)
            ticker.advance()
    splits = {split: writer.close() for split, writer in writers.items()}
    for split, summary in splits.items():
        if summary["n"] == 0:
            raise ValueError(f"the {split} split is empty after skipping uncountable patches; check the corpus")
    manifest: dict[str, Any] = {
        "splits": splits,
        "skipped": {
            "patches": skipped_patches,
            "subpatches": sum(reasons.values()),
            "reasons": dict(reasons),
        },
    }
    if mismatches:
        # Only when there are some: an unchanged manifest keeps the content digest of earlier builds.
        manifest["density_mismatches"] = mismatches
    return manifest


def _collect(
    output: _PatchOutput,
    split: str,
    record: corpus.PatchRecord,
    writers: dict[str, _SplitWriter],
    skipped_patches: list[dict[str, str]],
    reasons: Counter[str],
) -> None:
    if output.patch_skipped is not None:
        skipped_patches.append({"patch_id": record.patch_id, "reason": output.patch_skipped})
        log.warning("skipped patch %s (%s row %d): %s", record.patch_id, corpus.INDEX, record.row, output.patch_skipped)
        return
    reasons.update(output.skip_reasons)
    writers[split].append(output, record.row)


def _report_mismatches(
    corpus_dir: Path, record: corpus.PatchRecord, found: list[tuple[str, float, float]]
) -> list[dict[str, Any]]:
    for column, given, counted in found:
        log.warning(
            "%s row %d (patch %r): %s is %.3g threads/cm but the masks count %.3g (more than %.0f %% apart)",
            corpus_dir / corpus.INDEX,
            record.row,
            record.patch_id,
            column,
            given,
            counted,
            100 * DENSITY_TOLERANCE,
        )
    return [
        {"row": record.row, "patch_id": record.patch_id, "column": c, "given": g, "counted": round(n, 6)}
        for c, g, n in found
    ]


def _map(function: Any, tasks: list[Any], workers: int | None) -> Generator[_PatchOutput, None, None]:
    count = workers if workers is not None else min(os.cpu_count() or 1, 8)
    if count <= 1 or len(tasks) < 4:
        yield from map(function, tasks)
        return
    # spawn, not fork: the caller may hold OpenCV, BLAS or framework thread pools, which a forked child
    # inherits in a locked state (a fork here deadlocked in cv2). imap keeps the patch order: deterministic bytes.
    context = multiprocessing.get_context("spawn")
    pool = None
    try:
        # Workers ignore Ctrl-C (this process handles it and terminates them) and die with this process. A
        # signal while they start waits until the pool exists, so that it is terminated like any other.
        with lifecycle.deferred_signals(), lifecycle.interrupts_ignored_by_new_children():
            pool = context.Pool(count, initializer=_init_worker, initargs=(os.getpid(),))
        yield from pool.imap(function, tasks, chunksize=2)
    finally:
        if pool is not None:
            pool.terminate()  # what `with pool` does; workers still starting are stopped too


def _init_worker(parent_pid: int) -> None:
    lifecycle.die_with_parent(parent_pid)
    # The pool already uses every core; OpenCV's own threads would only contend with it (~20 % CPU measured).
    cv2.setNumThreads(1)


class _SplitWriter:
    """Streams sub-patches into memory-mapped ``.npy`` files, so the dataset never sits in RAM whole."""

    def __init__(self, directory: Path, split: str, capacity: int, size: int) -> None:
        self.directory = directory
        self.split = split
        self.count = 0
        self.capacity = capacity
        path = directory / array_filename(split, "images")
        self.images = np.lib.format.open_memmap(
            path,
            mode="w+",
            dtype=np.uint8,
            shape=(capacity, size, size),
        )
        # The file's blocks taken now: a memory map written on a full disk dies of SIGBUS, not of an error.
        with path.open("r+b") as file:
            os.posix_fallocate(file.fileno(), 0, os.fstat(file.fileno()).st_size)
        self.labels = np.empty(capacity, np.float32)
        self.density_h = np.empty(capacity, np.float32)
        self.patch_index = np.empty(capacity, np.int32)

    def append(self, output: _PatchOutput, row: int) -> None:
        n = len(output.labels)
        if not np.all(np.isfinite(output.labels)) or not np.all(np.isfinite(output.density_h)):
            raise AssertionError("count_threads returned a non-finite density")  # counting must raise instead
        end = self.count + n
        self.images[self.count : end] = output.images
        self.labels[self.count : end] = output.labels
        self.density_h[self.count : end] = output.density_h
        self.patch_index[self.count : end] = row
        self.count = end

    def close(self) -> dict[str, Any]:
        images_path = self.directory / array_filename(self.split, "images")
        self.images.flush()
        if self.count < self.capacity:
            # Some sub-patches were skipped: rewrite at the exact size (rare; streamed in blocks).
            trimmed_path = images_path.with_suffix(".trim")
            trimmed = np.lib.format.open_memmap(
                trimmed_path, mode="w+", dtype=np.uint8, shape=(self.count, *self.images.shape[1:])
            )
            for start in range(0, self.count, 4096):
                stop = min(start + 4096, self.count)
                trimmed[start:stop] = self.images[start:stop]
            trimmed.flush()
            del trimmed
            del self.images
            os.replace(trimmed_path, images_path)
        else:
            del self.images
        labels = self.labels[: self.count]
        np.save(self.directory / array_filename(self.split, "labels"), labels)
        np.save(self.directory / array_filename(self.split, "density_h"), self.density_h[: self.count])
        np.save(self.directory / array_filename(self.split, "patch_index"), self.patch_index[: self.count])
        summary: dict[str, Any] = {"n": self.count}
        if self.count:
            summary.update(
                label_mean=round(float(labels.mean()), 6),
                label_std=round(float(labels.std()), 6),
                label_min=round(float(labels.min()), 6),
                label_max=round(float(labels.max()), 6),
            )
        return summary
