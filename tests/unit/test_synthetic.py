"""The synthetic corpus generator: physics sanity, determinism, the raw-corpus format, atomic writing."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import shutil
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from thread_bench import cpu_isa
from thread_bench.workloads.thread_density import synthetic
from thread_bench.workloads.thread_density.config import STYLE_MIX_NAMES
from thread_bench.workloads.thread_density.counting import count_threads
from thread_bench.workloads.thread_density.synthetic import (
    CLASSIC_MIX,
    HELD_OUT_MIX,
    INDEX_COLUMNS,
    NO_ARTEFACTS,
    STYLE_MIXES,
    TRAINING_MIX,
    CanvasParams,
    ImagingParams,
    PatchStyle,
    StyleMix,
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


def _damaged_copy(written_corpus: Path, target: Path) -> Path:
    """A copy of the corpus with one image truncated, as a full disk or a killed copy leaves it."""
    shutil.copytree(written_corpus, target)
    image = next(path for path in sorted((target / "images").iterdir()) if path.suffix == ".png")
    image.write_bytes(image.read_bytes()[:100])
    return target


def test_a_damaged_corpus_is_refused_naming_it(written_corpus: Path, tmp_path: Path) -> None:
    damaged = _damaged_copy(written_corpus, tmp_path / "damaged")
    with pytest.raises(ValueError, match=f"the synthetic corpus {damaged} changed since it was written"):
        write_corpus(damaged, seed=7, n_paintings=N_PAINTINGS, n_patches=N_PATCHES)


def test_a_damaged_or_unverifiable_cache_is_written_again(
    written_corpus: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The preparation's own corpus (cache=True) is rebuilt, byte for byte, rather than prepared from damage."""
    damaged = _damaged_copy(written_corpus, tmp_path / "damaged")
    with caplog.at_level(logging.WARNING):
        assert write_corpus(damaged, seed=7, n_paintings=N_PAINTINGS, n_patches=N_PATCHES, cache=True) == damaged
    assert _files(damaged) == _files(written_corpus)
    assert "changed since it was written" in caplog.text and "writing it again" in caplog.text
    older = tmp_path / "older"  # written before the digest existed
    shutil.copytree(written_corpus, older)
    (older / synthetic.CONTENT_NAME).unlink()
    write_corpus(older, seed=7, n_paintings=N_PAINTINGS, n_patches=N_PATCHES, cache=True)
    assert _files(older) == _files(written_corpus)
    stale = tmp_path / "stale"  # other settings in the cache's folder: written again with these
    write_corpus(stale, seed=8, n_paintings=N_PAINTINGS, n_patches=N_PATCHES)
    write_corpus(stale, seed=7, n_paintings=N_PAINTINGS, n_patches=N_PATCHES, cache=True)
    assert _files(stale) == _files(written_corpus)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["damaged", "older", "stale"]  # nothing set aside


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


# -------------------------------------------------------------------------------------------- styles

NOISELESS = ImagingParams(blur_sigma_px=0.0, photons_per_px=1e12, read_noise=0.0)


def _digest(patches: Iterable[SyntheticPatch]) -> str:
    digest = hashlib.sha256()
    for patch in patches:
        for array in (patch.image, patch.h_mask, patch.v_mask):
            digest.update(np.ascontiguousarray(array).tobytes())
        digest.update(repr((patch.density_v, patch.density_h, patch.artefacts)).encode())
    return digest.hexdigest()


#: Digests of GENERATOR_VERSION 1's output (``git show be477b0:thread_bench/workloads/thread_density/synthetic.py``)
#: for the calls below, by the processor's instruction set: numpy's float64 transcendental functions take other
#: code paths with AVX-512, and the last bits of the images differ. Each pair was computed with that first
#: generator on such a processor (avx512: an AMD EPYC Zen 4; avx2: an AMD EPYC Zen 3, which the current code
#: matched there bit for bit).
FIRST_GENERATOR_DIGESTS = {
    "avx512": (
        "3f6a63de9d098ed4266adca5f075ef98e4cf55830fe1e088731682b0ff03447a",
        "7f6bfcb52e32218371f278c0a2004f1eb095c07edcf690bcec52c9ccf1d59667",
    ),
    "avx2": (
        "5d4910396379a7ea65eebff8af794fefd18fb29e73e606fae00ccec2dcb7c8da",
        "4b8a7e242f4a977c04f1da63970f86c82d10abcff70721242be246c8755c5aa3",
    ),
}


def test_classic_mix_and_no_style_reproduce_the_first_generator() -> None:
    level = cpu_isa.native_level()
    if level not in FIRST_GENERATOR_DIGESTS:
        pytest.skip(f"no digest of the first generator recorded for instruction set {level!r}")
    corpus_digest, patch_digest = FIRST_GENERATOR_DIGESTS[level]
    assert _digest(generate_corpus(4, 6, 3, mix=CLASSIC_MIX)) == corpus_digest
    rng = np.random.default_rng(21)
    canvas = CanvasParams(density_h_threads_per_cm=14.0, density_v_threads_per_cm=11.0)
    assert _digest(generate_patch(rng, canvas) for _ in range(2)) == patch_digest


def test_style_mix_names_are_those_the_settings_accept() -> None:
    assert tuple(STYLE_MIXES) == STYLE_MIX_NAMES
    assert {name for name, _ in TRAINING_MIX.weaves} == {"plain", "basket"}
    # The held-out styles never appear in training: that is what makes HELD_OUT_MIX a held-out-style test.
    training = {
        name for pairs in (TRAINING_MIX.weaves, TRAINING_MIX.profiles, TRAINING_MIX.imaging) for name, _ in pairs
    }
    assert not training & {"twill", "slub", "scatter"}
    assert json.loads(json.dumps(HELD_OUT_MIX.as_dict()))["weaves"] == [["twill", 1.0]]


def test_style_settings_are_validated() -> None:
    with pytest.raises(ValueError, match=r"StyleMix.weaves: 'satin' is not one of \('plain', 'basket', 'twill'\)"):
        replace(TRAINING_MIX, weaves=(("satin", 1.0),))
    with pytest.raises(ValueError, match=r"StyleMix\.imaging: the weight of 'soft' must be a positive number"):
        replace(TRAINING_MIX, imaging=(("soft", 0.0),))
    with pytest.raises(ValueError, match=r"StyleMix\.lead_white_probability must be a probability"):
        replace(TRAINING_MIX, lead_white_probability=1.5)
    with pytest.raises(ValueError, match=r"PatchStyle\.profile must be one of"):
        PatchStyle(profile="hairy")
    with pytest.raises(ValueError, match="condition must be one of"):
        ImagingParams.random(np.random.default_rng(0), condition="foggy")
    with pytest.raises(ValueError, match="scatter_fraction must be in"):
        ImagingParams(scatter_fraction=-0.1)


def test_each_weave_has_its_over_under_pattern() -> None:
    k, n = np.meshgrid(np.arange(-4, 8), np.arange(-4, 8), indexing="ij")
    plain = synthetic._warp_over(k, n, "plain")
    basket = synthetic._warp_over(k, n, "basket")
    twill = synthetic._warp_over(k, n, "twill")
    assert np.array_equal(plain, (k + n) % 2 == 0)  # a checkerboard
    # Hopsack: pairs of threads woven as one, a checkerboard of 2x2 blocks.
    assert np.array_equal(basket[::2, ::2], basket[1::2, ::2]) and np.array_equal(basket[::2, ::2], basket[::2, 1::2])
    assert np.array_equal(basket[::2, ::2], (k[::2, ::2] // 2 + n[::2, ::2] // 2) % 2 == 0)
    assert not np.array_equal(basket, plain)
    # 2/2 twill: each thread floats over two, under two (period 4), and the pattern steps one thread per pick
    # (diagonal ribs).
    assert np.array_equal(twill[:, :-4], twill[:, 4:]) and twill[:, :4].sum(axis=1).tolist() == [2] * len(twill)
    assert np.array_equal(twill[1:, :-1], twill[:-1, 1:])
    assert not np.array_equal(twill[1:, 1:], twill[:-1, :-1])  # not the other diagonal


def _styled(style: PatchStyle, seed: int = 4, imaging: ImagingParams = NOISELESS, **kwargs: object) -> SyntheticPatch:
    canvas = CanvasParams(density_h_threads_per_cm=13.0, density_v_threads_per_cm=11.0, **kwargs)  # type: ignore[arg-type]
    return generate_patch(np.random.default_rng(seed), canvas, imaging=imaging, artefacts=NO_ARTEFACTS, style=style)


def test_weaves_and_profiles_change_the_image_not_the_labels() -> None:
    reference = _styled(PatchStyle())
    images = {}
    for weave in synthetic.WEAVES:
        for profile in synthetic.THREAD_PROFILES:
            patch = _styled(PatchStyle(weave=weave, profile=profile))
            again = _styled(PatchStyle(weave=weave, profile=profile))
            assert np.array_equal(patch.image, again.image)  # deterministic per seed
            assert np.array_equal(patch.h_mask, reference.h_mask) and np.array_equal(patch.v_mask, reference.v_mask)
            assert (patch.density_v, patch.density_h) == (reference.density_v, reference.density_h)
            assert patch.image.std() > 0
            images[weave, profile] = patch.image.tobytes()
    assert len(set(images.values())) == len(images)


def test_missing_threads_leave_a_gap_in_the_image_but_keep_their_centre_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synthetic, "MISSING_THREAD_FRACTION", 1.0)  # every slot empty
    monkeypatch.setattr(synthetic, "DOUBLED_THREAD_FRACTION", 0.0)
    empty = _styled(PatchStyle(profile="uneven"))
    woven = _styled(PatchStyle(profile="elliptic"))

    # No yarn: the ground fills everything evenly, the image shows no weave at all (what is left is float
    # rounding, stretched by the display window)...
    def line_contrast(patch: SyntheticPatch) -> float:
        lines = patch.h_mask | patch.v_mask
        image = patch.image.astype(np.float64)
        return float((image[~lines].mean() - image[lines].mean()) / image.std())

    assert abs(line_contrast(empty)) < 0.05 and line_contrast(woven) > 0.5
    # ...but every slot still counts: the same centre lines and densities.
    assert np.array_equal(empty.v_mask, woven.v_mask) and empty.density_v == woven.density_v
    assert count_threads(empty.h_mask, empty.v_mask, empty.px_per_cm).vertical == pytest.approx(
        empty.density_v, rel=0.02
    )


def _shown(condition: str, seed: int, attenuation: np.ndarray) -> tuple[np.ndarray, ImagingParams]:
    imaging = ImagingParams.random(np.random.default_rng(99), condition=condition)
    return synthetic._exposure(np.random.default_rng(seed), attenuation, imaging), imaging


@pytest.fixture(scope="module")
def attenuation() -> np.ndarray:
    x = np.arange(300, dtype=np.float32)
    return (0.6 + 0.3 * np.sin(2 * np.pi * x / 12.0)[None, :] * np.sin(2 * np.pi * x / 10.0)[:, None]).astype(
        np.float32
    )


def test_imaging_conditions_have_their_defining_property(attenuation: np.ndarray) -> None:
    standard = ImagingParams.random(np.random.default_rng(99))
    assert ImagingParams.random(np.random.default_rng(99), condition="standard") == standard
    # Each condition draws the standard parameters first, then changes only its own.
    low_dose = ImagingParams.random(np.random.default_rng(99), condition="low_dose")
    assert replace(low_dose, photons_per_px=standard.photons_per_px, read_noise=standard.read_noise) == standard

    def noise(condition: str) -> float:
        return float(np.std(_shown(condition, 1, attenuation)[0] - _shown(condition, 2, attenuation)[0]))

    assert noise("low_dose") > 2.0 * noise("standard")

    def sharpness(condition: str) -> float:
        imaging = replace(ImagingParams.random(np.random.default_rng(99), condition=condition), photons_per_px=1e12)
        imaging = replace(imaging, read_noise=0.0)
        shown = synthetic._exposure(np.random.default_rng(0), attenuation, imaging)
        return float(np.std(cv2.Laplacian(shown, cv2.CV_32F)))

    assert sharpness("soft") < 0.7 * sharpness("standard")
    scatter = replace(ImagingParams.random(np.random.default_rng(99), condition="scatter"), photons_per_px=1e12)
    clean = replace(scatter, scatter_fraction=0.0, exposure_gradient=0.0, read_noise=0.0)
    scattered = synthetic._exposure(np.random.default_rng(0), attenuation, replace(scatter, read_noise=0.0))
    plain = synthetic._exposure(np.random.default_rng(0), attenuation, clean)
    assert scattered.std() < plain.std()
    harsh = generate_patch(
        np.random.default_rng(3),
        CanvasParams(density_h_threads_per_cm=12.0, density_v_threads_per_cm=12.0),
        imaging=ImagingParams.random(np.random.default_rng(5), condition="harsh"),
    )
    assert int(harsh.image.max()) - int(harsh.image.min()) <= 0.25 * 255 + 1  # a narrow stored range


def test_occlusions_are_recorded_and_hide_the_weave() -> None:
    rng = np.random.default_rng(8)
    canvas = CanvasParams.random(rng)
    artefacts = replace(NO_ARTEFACTS, lead_white_probability=1.0, craquelure_probability=1.0)
    patch = generate_patch(rng, canvas, artefacts=artefacts, style=PatchStyle())
    assert set(patch.artefacts) == {"lead_white", "craquelure"}
    assert 0.1 < patch.occluded_share < 0.95
    plain = generate_patch(np.random.default_rng(8), canvas, artefacts=NO_ARTEFACTS)
    assert plain.occluded_share == 0.0
    cracks = synthetic._craquelure(np.random.default_rng(0), 300, 200.0)
    assert 0.01 < (cracks > 0).mean() < 0.2 and cracks.max() <= 0.5


def test_source_resolution_resamples_the_image_only() -> None:
    at_corpus = _styled(PatchStyle(source_px_per_cm=200.0), imaging=ImagingParams())
    unstyled = generate_patch(
        np.random.default_rng(4),
        CanvasParams(density_h_threads_per_cm=13.0, density_v_threads_per_cm=11.0),
        imaging=ImagingParams(),
        artefacts=NO_ARTEFACTS,
    )
    assert np.array_equal(at_corpus.image, unstyled.image)  # nothing resampled
    for source in (100.0, 400.0):
        for bit_depth in (8, 16):
            patch = _styled(PatchStyle(source_px_per_cm=source), imaging=ImagingParams(bit_depth=bit_depth))
            assert patch.image.shape == (300, 300)
            assert patch.image.dtype == (np.uint8 if bit_depth == 8 else np.uint16)
            assert np.array_equal(patch.h_mask, at_corpus.h_mask) and np.array_equal(patch.v_mask, at_corpus.v_mask)
            assert (patch.density_v, patch.density_h, patch.px_per_cm) == (
                at_corpus.density_v,
                at_corpus.density_h,
                200.0,
            )
            assert not np.array_equal(patch.image, at_corpus.image)


@pytest.mark.parametrize("mix", [TRAINING_MIX, HELD_OUT_MIX], ids=lambda mix: mix.name)
def test_crossing_point_count_matches_the_truth_on_the_varied_mixes(mix: StyleMix) -> None:
    # What the preparation labels with, against the exact densities; as test_counting.py's bar.
    patches = list(generate_corpus(n_paintings=20, n_patches=40, seed=11, mix=mix))
    assert max(p.density_v for p in patches) > 25.0  # the dense canvases are in the sample
    errors = np.array(
        [
            (abs(d.vertical / p.density_v - 1.0), abs(d.horizontal / p.density_h - 1.0))
            for p in patches
            for d in [count_threads(p.h_mask, p.v_mask, p.px_per_cm)]
        ]
    )
    # Measured: training 0.54 % / 0.72 %, held_out 0.60 % / 0.83 % mean (vertical / horizontal).
    assert errors.mean(axis=0).max() <= 0.01 and errors.max() <= 0.05
    assert {p.style.weave for p in patches if p.style} <= {name for name, _ in mix.weaves}


def test_corpus_records_its_mix_and_the_styles(tmp_path: Path) -> None:
    training = write_corpus(tmp_path / "training", n_paintings=3, n_patches=4, seed=2)
    held_out = write_corpus(tmp_path / "held_out", n_paintings=3, n_patches=4, seed=2, mix=HELD_OUT_MIX)
    settings = [json.loads((d / "synthetic.json").read_text()) for d in (training, held_out)]
    assert settings[0] != settings[1]
    assert [s["mix"]["name"] for s in settings] == ["training", "held_out"]
    assert settings[0]["generator_version"] == 2
    with pytest.raises(ValueError, match=r"style mix 'training'.*style mix 'held_out'"):
        write_corpus(training, n_paintings=3, n_patches=4, seed=2, mix=HELD_OUT_MIX)
    for directory in (training, held_out):
        with open(directory / "index.csv", newline="") as handle:
            index = list(csv.DictReader(handle))
        with open(directory / "styles.csv", newline="") as handle:
            reader = csv.DictReader(handle)
            assert tuple(reader.fieldnames or ()) == synthetic.STYLES_COLUMNS
            styles = list(reader)
        assert [row["patch_id"] for row in styles] == [row["patch_id"] for row in index]
    with open(held_out / "styles.csv", newline="") as handle:
        assert {row["weave"] for row in csv.DictReader(handle)} == {"twill"}
