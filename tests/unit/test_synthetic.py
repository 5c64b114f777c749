"""The synthetic corpus generator: physics sanity, determinism, the raw-corpus format, atomic writing."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from thread_bench.workloads.thread_density import synthetic
from thread_bench.workloads.thread_density.synthetic import (
    INDEX_COLUMNS,
    NO_ARTEFACTS,
    CanvasParams,
    ImagingParams,
    SyntheticPatch,
    generate_corpus,
    generate_patch,
    patches_per_painting,
    write_corpus,
)

N_PAINTINGS, N_PATCHES = 6, 12  # paintings 2 and 5 are 16-bit: both formats appear


@pytest.fixture(scope="module")
def small_corpus() -> list[SyntheticPatch]:
    return list(generate_corpus(seed=7, n_paintings=N_PAINTINGS, n_patches=N_PATCHES))


@pytest.fixture(scope="module")
def written_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(
        tmp_path_factory.mktemp("corpus") / "synthetic", seed=7, n_paintings=N_PAINTINGS, n_patches=N_PATCHES
    )


def _files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------ one patch


def test_patch_has_the_documented_shapes_types_and_ranges(small_corpus: list[SyntheticPatch]) -> None:
    for patch in small_corpus:
        assert patch.image.shape == patch.h_mask.shape == patch.v_mask.shape == (300, 300)
        assert patch.image.dtype in (np.uint8, np.uint16)
        assert patch.h_mask.dtype == patch.v_mask.dtype == np.bool_
        assert patch.px_per_cm == 200.0
        for density in (patch.density_h, patch.density_v):
            assert 5.5 <= density <= 36.0
        # A centre line is ~3 px wide (1-2 px above 23 threads/cm); 6-35 threads/cm over 1.5 cm is 9-53
        # lines, so 2-40 % of the pixels.
        for mask in (patch.h_mask, patch.v_mask):
            assert 0.02 < mask.mean() < 0.4
        assert patch.image.std() > 0


def _density_along_rows(mask: np.ndarray, px_per_cm: float) -> float:
    """Lines per cm along each row, from the first to the last line centre (no border effects)."""
    densities = []
    for row in mask.astype(np.int8):
        edges = np.diff(np.concatenate(([0], row, [0])))
        centres = (np.flatnonzero(edges == 1) + np.flatnonzero(edges == -1) - 1) / 2.0
        if len(centres) >= 3:
            densities.append(px_per_cm * (len(centres) - 1) / (centres[-1] - centres[0]))
    return float(np.mean(densities))


def test_density_is_the_number_of_centre_lines_crossed_per_cm() -> None:
    # Independent of how the generator computes it: walk every row (column) and count the v (h) lines.
    rng = np.random.default_rng(3)
    for _ in range(4):
        patch = generate_patch(rng, CanvasParams.random(rng), artefacts=NO_ARTEFACTS)
        assert _density_along_rows(patch.v_mask, patch.px_per_cm) == pytest.approx(patch.density_v, rel=0.02)
        assert _density_along_rows(patch.h_mask.T, patch.px_per_cm) == pytest.approx(patch.density_h, rel=0.02)


def test_centre_lines_lie_on_the_threads_not_the_ground() -> None:
    # Threads displace the radio-opaque ground: under the centre lines the image is darker on average.
    rng = np.random.default_rng(5)
    for _ in range(3):
        patch = generate_patch(rng, CanvasParams.random(rng), artefacts=NO_ARTEFACTS)
        lines = patch.h_mask | patch.v_mask
        image = patch.image.astype(np.float64)
        assert image[lines].mean() < image[~lines].mean()


def test_masks_stay_connected_after_a_nearest_neighbour_rotation(small_corpus: list[SyntheticPatch]) -> None:
    patch = small_corpus[0]
    rotation = cv2.getRotationMatrix2D((149.5, 149.5), 6.0, 1.0)
    for mask in (patch.h_mask, patch.v_mask):
        before = cv2.connectedComponents(mask[50:250, 50:250].astype(np.uint8), connectivity=8)[0]
        rotated = cv2.warpAffine(mask.astype(np.uint8), rotation, (300, 300), flags=cv2.INTER_NEAREST)
        _, _, stats, _ = cv2.connectedComponentsWithStats(rotated[50:250, 50:250], connectivity=8)
        left, top, width, height = (stats[1:, i] for i in range(4))
        # Every line crosses the whole crop, so a piece that touches no side of it would be a broken line.
        # (Tilted lines do cut small extra pieces off at the crop's corners.)
        interior = (left > 0) & (top > 0) & (left + width < 200) & (top + height < 200)
        assert before >= 9 and not interior.any()


def test_parameters_are_validated() -> None:
    with pytest.raises(ValueError, match="density_v_threads_per_cm must be a positive number"):
        CanvasParams(density_h_threads_per_cm=10.0, density_v_threads_per_cm=0.0)
    with pytest.raises(ValueError, match="irregularity_h"):
        CanvasParams(density_h_threads_per_cm=10.0, density_v_threads_per_cm=10.0, irregularity_h=0.9)
    with pytest.raises(ValueError, match="bit_depth must be 8 or 16"):
        ImagingParams(bit_depth=12)
    canvas = CanvasParams(density_h_threads_per_cm=10.0, density_v_threads_per_cm=10.0)
    with pytest.raises(ValueError, match="px_per_cm must be a positive finite number"):
        generate_patch(np.random.default_rng(0), canvas, px_per_cm=float("nan"))
    with pytest.raises(ValueError, match="size_px must be an integer >= 16"):
        generate_patch(np.random.default_rng(0), canvas, size_px=8)


def test_sixteen_bit_imaging_uses_the_sixteen_bit_range() -> None:
    rng = np.random.default_rng(0)
    canvas = CanvasParams.random(rng)
    patch = generate_patch(rng, canvas, imaging=ImagingParams(bit_depth=16, max_level_16bit=4095))
    assert patch.image.dtype == np.uint16
    assert 255 < patch.image.max() <= 4095


# -------------------------------------------------------------------------------------------- corpus


def test_same_seed_gives_identical_arrays_and_other_seeds_differ(small_corpus: list[SyntheticPatch]) -> None:
    again = list(generate_corpus(seed=7, n_paintings=N_PAINTINGS, n_patches=N_PATCHES))
    assert [p.patch_id for p in again] == [p.patch_id for p in small_corpus]
    for a, b in zip(small_corpus, again, strict=True):
        assert np.array_equal(a.image, b.image)
        assert np.array_equal(a.h_mask, b.h_mask) and np.array_equal(a.v_mask, b.v_mask)
        assert (a.density_h, a.density_v) == (b.density_h, b.density_v)
    other = next(iter(generate_corpus(seed=8, n_paintings=N_PAINTINGS, n_patches=N_PATCHES)))
    assert not np.array_equal(other.image, small_corpus[0].image)
    assert other.density_v != small_corpus[0].density_v


def test_patches_are_grouped_by_painting_sharing_one_canvas(small_corpus: list[SyntheticPatch]) -> None:
    by_painting: dict[str, list[SyntheticPatch]] = {}
    for patch in small_corpus:
        by_painting.setdefault(patch.painting_id, []).append(patch)
    assert len(by_painting) == N_PAINTINGS
    assert len({p.patch_id for p in small_corpus}) == N_PATCHES
    canvases = []
    for patches in by_painting.values():
        assert len({id(p.canvas) for p in patches}) == 1  # one canvas object per painting
        canvas = patches[0].canvas
        assert canvas is not None
        canvases.append(canvas)
        # Patch densities scatter around the painting's base density (density_spread = 1.5 %).
        for patch in patches:
            assert patch.density_v == pytest.approx(canvas.density_v_threads_per_cm, rel=0.1)
    assert len({c.density_v_threads_per_cm for c in canvases}) == len(canvases)


def test_patch_counts_are_uneven_deterministic_and_at_least_one() -> None:
    counts = patches_per_painting(np.random.default_rng(0), 36, 240)
    assert sum(counts) == 240 and min(counts) >= 1 and len(set(counts)) > 3
    assert counts == patches_per_painting(np.random.default_rng(0), 36, 240)
    assert patches_per_painting(np.random.default_rng(0), 5, 5) == [1] * 5
    with pytest.raises(ValueError, match="need 1 <= n_paintings <= n_patches"):
        patches_per_painting(np.random.default_rng(0), 10, 5)


def test_written_corpus_has_the_raw_corpus_format(written_corpus: Path, small_corpus: list[SyntheticPatch]) -> None:
    with open(written_corpus / "index.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == INDEX_COLUMNS
        rows = list(reader)
    assert len(rows) == N_PATCHES
    suffixes = set()
    for row, patch in zip(rows, small_corpus, strict=True):
        assert (row["painting_id"], row["patch_id"]) == (patch.painting_id, patch.patch_id)
        assert float(row["density_v"]) == patch.density_v  # exact round trip
        assert float(row["density_h"]) == patch.density_h
        assert float(row["px_per_cm"]) == 200.0
        image_path = written_corpus / row["image"]
        assert not Path(row["image"]).is_absolute()
        suffixes.add(image_path.suffix)
        image = cv2.imread(str(image_path), cv2.IMREAD_UNCHANGED)
        assert image is not None
        assert image.dtype == (np.uint8 if image_path.suffix == ".png" else np.uint16)
        assert np.array_equal(image, patch.image)
        for column, mask in (("h_mask", patch.h_mask), ("v_mask", patch.v_mask)):
            stored = cv2.imread(str(written_corpus / row[column]), cv2.IMREAD_UNCHANGED)
            assert stored is not None
            assert stored.dtype == np.uint8 and set(np.unique(stored)) <= {0, 255}
            assert np.array_equal(stored == 255, mask)
    assert suffixes == {".png", ".tiff"}


def test_same_seed_writes_byte_identical_files(written_corpus: Path, tmp_path: Path) -> None:
    again = write_corpus(tmp_path / "again", seed=7, n_paintings=N_PAINTINGS, n_patches=N_PATCHES)
    assert _files(again) == _files(written_corpus)


def test_existing_complete_corpus_is_reused_not_rewritten(
    written_corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the corpus was regenerated")

    monkeypatch.setattr(synthetic, "generate_corpus", must_not_run)
    assert write_corpus(written_corpus, seed=7, n_paintings=N_PAINTINGS, n_patches=N_PATCHES) == written_corpus
    with pytest.raises(ValueError, match="holds a synthetic corpus with settings"):
        write_corpus(written_corpus, seed=8, n_paintings=N_PAINTINGS, n_patches=N_PATCHES)


def test_incomplete_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("not a corpus")
    with pytest.raises(ValueError, match="exists but is not a complete synthetic corpus"):
        write_corpus(tmp_path / "junk", n_paintings=2, n_patches=2)


def test_interrupted_write_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = synthetic._write_image
    calls = {"n": 0}

    def failing_write(path: Path, array: np.ndarray) -> None:
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError("disk full (simulated)")
        real_write(path, array)

    monkeypatch.setattr(synthetic, "_write_image", failing_write)
    target = tmp_path / "corpus"
    with pytest.raises(OSError, match="disk full"):
        write_corpus(target, n_paintings=3, n_patches=4)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []  # the staging directory is gone too
    monkeypatch.setattr(synthetic, "_write_image", real_write)
    assert (write_corpus(target, n_paintings=3, n_patches=4) / "index.csv").is_file()


# ------------------------------------------------------------------------------------------- preview


def test_preview_figure_is_pure_and_main_saves_it(small_corpus: list[SyntheticPatch], tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    figure = synthetic.preview_figure(small_corpus[:3])
    assert len(figure.axes) == 6
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="at least one patch"):
        synthetic.preview_figure([])
    out = tmp_path / "docs" / "preview.png"
    assert synthetic.main(["--preview", str(out), "--n-paintings", "3", "--n-patches", "4", "--seed", "1"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
