"""Preprocessing: determinism, atomicity, reuse, split by painting, label consistency, skips."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from corpus_helpers import grid_config, grid_patch, read_index_rows, write_grid_corpus, write_index
from thread_bench.data import build
from thread_bench.data.prepared import MANIFEST, SPLITS, STAMP, load_prepared
from thread_bench.workloads.thread_density import prepare
from thread_bench.workloads.thread_density.config import EQUALISATIONS, DataConfig
from thread_bench.workloads.thread_density.corpus import load_patch, read_index
from thread_bench.workloads.thread_density.counting import ThreadDensity, count_threads
from thread_bench.workloads.thread_density.prepare import (
    _Augmentation,
    apply_augmentation,
    ensure_prepared,
    equalize_histogram,
)


def _config(source: Path, **overrides: object) -> DataConfig:
    return grid_config(source, subpatches_per_patch=8, input_size=64, **overrides)


@pytest.fixture(scope="module")
def grid_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_grid_corpus(tmp_path_factory.mktemp("corpus"), n_paintings=4, patches_per_painting=2)


@pytest.fixture(scope="module")
def prepared(grid_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> prepare.PrepareResult:
    return ensure_prepared(_config(grid_corpus), tmp_path_factory.mktemp("data"), workers=1)


def test_layout_and_manifest(prepared: prepare.PrepareResult) -> None:
    dataset = prepared.dataset
    assert prepared.built
    for split in SPLITS:
        part = dataset.split(split)
        assert part.images.dtype == np.uint8 and part.images.shape[1:] == (64, 64)
        assert part.labels.dtype == np.float32 and len(part) == part.images.shape[0] > 0
        assert np.all(np.isfinite(part.labels))
    manifest = dataset.manifest
    assert sum(manifest["splits"][s]["n"] for s in SPLITS) == 8 * 8
    assert manifest["source"]["n_patches"] == 8
    assert manifest["settings"]["input_size"] == 64
    assert len(dataset.digest) == 64
    load_prepared(dataset.path, verify=True)


def test_split_is_by_painting(prepared: prepare.PrepareResult) -> None:
    paintings = prepared.dataset.manifest["paintings"]
    seen = [name for split in SPLITS for name in paintings[split]]
    assert sorted(seen) == [f"painting{i}" for i in range(4)]
    assert all(paintings[split] for split in SPLITS)
    # Painting p has vertical period 14 + 2p px: the labels of a split come only from its paintings.
    for split in SPLITS:
        allowed = {200 / (14 + 2 * int(name[-1])) for name in paintings[split]}
        allowed |= {200 / (18 + 2 * int(name[-1])) for name in paintings[split]}  # 90-degree rotations
        labels = prepared.dataset.split(split).labels
        assert all(min(abs(label - a) / a for a in allowed) < 0.03 for label in labels)


def test_labels_match_known_densities(prepared: prepare.PrepareResult) -> None:
    labels = np.concatenate([prepared.dataset.split(s).labels for s in SPLITS])
    truths = np.array([200 / (14 + 2 * p) for p in range(4)] + [200 / (18 + 2 * p) for p in range(4)])
    errors = np.min(np.abs(labels[:, None] - truths[None, :]) / truths[None, :], axis=1)
    assert errors.mean() < 0.01


def test_same_seed_same_bytes_and_digest(grid_corpus: Path, prepared: prepare.PrepareResult, tmp_path: Path) -> None:
    again = ensure_prepared(_config(grid_corpus), tmp_path / "again", workers=2)
    assert again.built
    assert again.dataset.digest == prepared.dataset.digest
    for name in sorted(p.name for p in prepared.dataset.path.iterdir() if p.name != STAMP):  # stamp: inodes
        assert (again.dataset.path / name).read_bytes() == (prepared.dataset.path / name).read_bytes(), name


def test_different_seed_different_digest(grid_corpus: Path, prepared: prepare.PrepareResult, tmp_path: Path) -> None:
    other = ensure_prepared(_config(grid_corpus, seed=1), tmp_path, workers=1)
    assert other.dataset.digest != prepared.dataset.digest
    assert other.dataset.path.name != prepared.dataset.path.name


def test_existing_dataset_is_reused(grid_corpus: Path, prepared: prepare.PrepareResult) -> None:
    root = prepared.dataset.path.parent.parent
    again = ensure_prepared(_config(grid_corpus), root, workers=1)
    assert not again.built
    assert again.dataset.path == prepared.dataset.path


def test_interrupted_build_leaves_nothing(grid_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: object, **kwargs: object) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "content_digest", explode)
    with pytest.raises(KeyboardInterrupt):
        ensure_prepared(_config(grid_corpus), tmp_path, workers=1)
    assert list((tmp_path / "prepared").iterdir()) == []
    monkeypatch.undo()
    assert ensure_prepared(_config(grid_corpus), tmp_path, workers=1).built


def test_uncountable_patch_is_skipped_and_reported(grid_corpus: Path, tmp_path: Path) -> None:
    corpus_dir = write_grid_corpus(tmp_path / "corpus", n_paintings=4, patches_per_painting=2)
    # One horizontal thread only: a single row of crossings cannot give a horizontal spacing.
    h_mask = np.zeros((300, 300), np.uint8)
    h_mask[150:153, :] = 255
    cv2.imwrite(str(corpus_dir / "p0_1_h.png"), h_mask)
    result = ensure_prepared(_config(corpus_dir), tmp_path / "data", workers=1)
    skipped = result.dataset.manifest["skipped"]
    assert [entry["patch_id"] for entry in skipped["patches"]] == ["p0_1"]
    assert skipped["patches"][0]["reason"]
    total = sum(len(result.dataset.split(s)) for s in SPLITS)
    assert total == 7 * 8
    assert result.stats["skipped_patches"] == 1
    for split in SPLITS:
        assert np.all(np.isfinite(result.dataset.split(split).labels))


def test_ninety_degree_rotation_swaps_densities() -> None:
    _, h_mask, v_mask = grid_patch(300, period_v_px=16.0, period_h_px=25.0)
    plain = _Augmentation(centre_xy=(150.0, 150.0), angle_deg=0.0, dihedral=0)
    turned = _Augmentation(centre_xy=(150.0, 150.0), angle_deg=0.0, dihedral=1)
    flipped = _Augmentation(centre_xy=(150.0, 150.0), angle_deg=0.0, dihedral=4)
    before = count_threads(*(apply_augmentation(m, plain, 200, nearest=True) for m in (h_mask, v_mask)), 200.0)
    after = count_threads(*(apply_augmentation(m, turned, 200, nearest=True) for m in (h_mask, v_mask)), 200.0)
    mirrored = count_threads(*(apply_augmentation(m, flipped, 200, nearest=True) for m in (h_mask, v_mask)), 200.0)
    assert before.vertical == pytest.approx(200 / 16, rel=0.01)
    assert before.horizontal == pytest.approx(200 / 25, rel=0.01)
    assert after.vertical == pytest.approx(before.horizontal, rel=1e-6)
    assert after.horizontal == pytest.approx(before.vertical, rel=1e-6)
    assert mirrored.vertical == pytest.approx(before.vertical, rel=1e-6)


@pytest.mark.parametrize("dihedral", range(8))
def test_image_and_masks_get_the_same_transform(dihedral: int) -> None:
    _, h_mask, v_mask = grid_patch(300, period_v_px=17.0, period_h_px=23.0)
    image = ((h_mask | v_mask) * 255).astype(np.uint8)  # the image *is* the mask here
    augmentation = _Augmentation(centre_xy=(147.3, 152.8), angle_deg=4.5, dihedral=dihedral)
    warped_image = apply_augmentation(image, augmentation, 200, nearest=False) > 127
    warped_mask = apply_augmentation(h_mask | v_mask, augmentation, 200, nearest=True)
    agreement = (warped_image == warped_mask).mean()
    assert agreement > 0.97


def test_small_rotation_keeps_the_crop_inside_the_patch() -> None:
    config = DataConfig(subpatches_per_patch=64, crop_px=200, max_rotation_deg=6.0)
    draws = prepare.draw_augmentations(np.random.default_rng(0), (300, 300), config)
    ones = np.ones((300, 300), np.uint8)
    for augmentation in draws:
        # BORDER_REFLECT would hide padding; a constant border of 0 makes it visible.
        matrix = cv2.getRotationMatrix2D(augmentation.centre_xy, augmentation.angle_deg, 1.0)
        matrix[:, 2] += 99.5 - np.asarray(augmentation.centre_xy)
        out = cv2.warpAffine(ones, matrix, (200, 200), flags=cv2.INTER_NEAREST, borderValue=0)
        assert out.all()
    angles = np.array([abs(a.angle_deg) for a in draws])
    assert ((angles == 0) | ((angles >= 1) & (angles <= 6))).all() and (angles > 0).any() and (angles == 0).any()
    assert sorted(a.dihedral for a in draws) == sorted(list(range(8)) * 8)


@pytest.mark.parametrize("equalisation", EQUALISATIONS)
def test_each_sub_patch_is_equalised_as_configured(grid_corpus: Path, equalisation: str) -> None:
    """``window``: each (rotated, flipped) cut of the raw patch equalised on its own, as a logged model treats a
    window; ``patch``: the cut taken from the equalised patch (the reference study's). Rebuilt step by step from
    the same draws, for an 8-bit and a 16-bit patch."""
    config = _config(grid_corpus, equalisation=equalisation)
    other = _config(grid_corpus, equalisation=next(e for e in EQUALISATIONS if e != equalisation))
    for record in read_index(grid_corpus)[:2]:
        made = prepare.prepare_patch((grid_corpus, record, config)).images
        raw = load_patch(grid_corpus, record).image
        rng = np.random.default_rng((config.seed, prepare._AUGMENT_STREAM, record.row))
        draws = prepare.draw_augmentations(rng, raw.shape, config)
        assert len(made) == len(draws) == config.subpatches_per_patch
        for image, augmentation in zip(made, draws, strict=True):
            if equalisation == "window":
                cut = equalize_histogram(apply_augmentation(raw, augmentation, config.crop_px, nearest=False))
            else:
                cut = apply_augmentation(equalize_histogram(raw), augmentation, config.crop_px, nearest=False)
            expected = cv2.resize(cut, (config.input_size,) * 2, interpolation=cv2.INTER_AREA)
            assert np.array_equal(image, expected)
        assert not np.array_equal(made, prepare.prepare_patch((grid_corpus, record, other)).images)


def test_scale_jitter_cuts_sides_in_its_range_inside_the_patch() -> None:
    config = DataConfig(subpatches_per_patch=400, crop_px=200, max_rotation_deg=6.0, scale_jitter=0.25)
    draws = prepare.draw_augmentations(np.random.default_rng(0), (300, 320), config, max_zoom=1.1)
    sides = np.array([a.side_px or 200 for a in draws])
    assert sides.min() >= round(200 / 1.25) and sides.max() <= round(200 * 1.1)  # the zoom cap, not 1.25
    assert len(set(sides.tolist())) > 50 and (sides < 200).mean() > 0.4  # a range, shrinking as often as not
    ones = np.ones((300, 320), np.uint8)
    for augmentation in draws:  # no padded corner: every cut lies inside the patch (a 0 border would show)
        side = augmentation.side_px or 200
        matrix = cv2.getRotationMatrix2D(augmentation.centre_xy, augmentation.angle_deg, 1.0)
        matrix[:, 2] += (side - 1) / 2 - np.asarray(augmentation.centre_xy)
        assert cv2.warpAffine(ones, matrix, (side, side), flags=cv2.INTER_NEAREST, borderValue=0).all()
    unjittered = prepare.draw_augmentations(np.random.default_rng(0), (300, 320), DataConfig(subpatches_per_patch=8))
    assert all(a.side_px is None for a in unjittered)


def test_scale_jitter_labels_count_the_threads_per_stored_centimetre(grid_corpus: Path) -> None:
    """A cut of side s x crop_px stored at input_size holds s times the threads of a crop_px cut: its labels are
    the painting's density times s (painting p: vertical period 14 + 2p px, horizontal 18 + 2p, at 200 px/cm)."""
    config = grid_config(grid_corpus, subpatches_per_patch=24, input_size=64, scale_jitter=0.25)
    checked = 0
    for record in read_index(grid_corpus):
        output = prepare.prepare_patch((grid_corpus, record, config))
        rng = np.random.default_rng((config.seed, prepare._AUGMENT_STREAM, record.row))
        patch = load_patch(grid_corpus, record)
        whole = count_threads(patch.h_mask, patch.v_mask, record.px_per_cm)
        draws = prepare.draw_augmentations(rng, (300, 300), config, prepare.max_zoom(config, whole, record.px_per_cm))
        assert len(output.labels) == len(draws)
        painting = int(record.painting_id.removeprefix("painting"))
        for augmentation, vertical, horizontal in zip(draws, output.labels, output.density_h, strict=True):
            stretch = (augmentation.side_px or config.crop_px) / config.crop_px
            # a quarter turn (odd dihedral) swaps the families
            period_v, period_h = (14 + 2 * painting, 18 + 2 * painting)[:: 1 if augmentation.dihedral % 2 == 0 else -1]
            assert vertical == pytest.approx(200 / period_v * stretch, rel=0.03)
            assert horizontal == pytest.approx(200 / period_h * stretch, rel=0.03)
            checked += augmentation.side_px is not None
    assert checked > 100


def test_scale_jitter_never_packs_threads_past_the_stored_resolution() -> None:
    config = DataConfig(crop_px=200, input_size=72, scale_jitter=0.25)
    sparse, dense = ThreadDensity(horizontal=10.0, vertical=12.0), ThreadDensity(horizontal=30.0, vertical=34.0)
    assert prepare.max_zoom(config, sparse, 200.0) == pytest.approx(72 / (2.5 * 12))  # 2.4: the jitter's 1.25 rules
    assert prepare.max_zoom(config, dense, 200.0) == 1.0  # already near 2 px a period: never enlarged


def test_the_equalisation_is_part_of_the_dataset_key(grid_corpus: Path) -> None:
    keys = {prepare.dataset_key(_config(grid_corpus, equalisation=e), "digest") for e in EQUALISATIONS}
    assert len(keys) == len(EQUALISATIONS)


def test_equalisation_is_the_same_for_8_and_16_bit() -> None:
    image, _, _ = grid_patch(120)
    eight = equalize_histogram(image)
    sixteen = equalize_histogram(image.astype(np.uint16) * 257)
    np.testing.assert_array_equal(eight, sixteen)
    assert eight.min() == 0 and eight.max() == 255


def test_manifest_is_written_last(prepared: prepare.PrepareResult) -> None:
    manifest_time = (prepared.dataset.path / MANIFEST).stat().st_mtime_ns
    content = [p for p in prepared.dataset.path.iterdir() if p.name != STAMP]  # the stamp records the manifest
    assert all(p.stat().st_mtime_ns <= manifest_time for p in content)


def test_missing_source_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"source '.*nowhere': no such directory"):
        ensure_prepared(DataConfig(source=str(tmp_path / "nowhere")), tmp_path)


def test_too_few_paintings(tmp_path: Path) -> None:
    corpus_dir = write_grid_corpus(tmp_path / "corpus", n_paintings=2, patches_per_painting=2)
    with pytest.raises(ValueError, match=r"2 painting.*at least 3"):
        ensure_prepared(_config(corpus_dir), tmp_path / "data")


def test_bad_row_names_the_row(tmp_path: Path) -> None:
    corpus_dir = write_grid_corpus(tmp_path / "corpus", n_paintings=3, patches_per_painting=1)
    rows: list[dict[str, object]] = list(read_index_rows(corpus_dir))
    rows[2]["px_per_cm"] = "0"
    write_index(corpus_dir, rows)
    with pytest.raises(ValueError, match=r"index\.csv row 3: px_per_cm must be a number > 0"):
        ensure_prepared(_config(corpus_dir), tmp_path / "data")
