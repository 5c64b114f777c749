"""Whole synthetic radiographs: determinism, exact per-pixel truth, margins, bolts and same-bolt pairs, files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from thread_bench.workloads.thread_density import canvas as canvas_module
from thread_bench.workloads.thread_density.canvas import (
    DEFAULT_CANVAS,
    Bolt,
    CanvasSpec,
    WholeCanvas,
    different_bolt_pair,
    main,
    read_truth,
    render_canvas,
    same_bolt_pair,
    write_canvas,
)

SMALL = CanvasSpec(width_cm=8.0, height_cm=6.0, px_per_cm=50.0, seam_cm=5.0, seed=3)
#: Threads only: no cusping, nails, bars or paint.
PLAIN = dict(cusping=False, nails=False, stretcher_bars=False, paint=False)
PAIR_SIZE = dict(width_cm=16.0, height_cm=6.0, px_per_cm=50.0)


@pytest.fixture(scope="module")
def small() -> WholeCanvas:
    return render_canvas(SMALL)


def _inside(canvas: WholeCanvas, field: np.ndarray) -> np.ndarray:
    top, bottom, left, right = canvas.canvas_box_px
    return field[top:bottom, left:right]


def test_same_spec_gives_identical_arrays_and_another_seed_differs(small: WholeCanvas) -> None:
    again = render_canvas(SMALL)
    for name in ("image", "density_v", "density_h"):
        np.testing.assert_array_equal(getattr(small, name), getattr(again, name))
    other = render_canvas(dataclasses.replace(SMALL, seed=4))
    assert not np.array_equal(small.image, other.image)
    assert not np.allclose(_inside(small, small.density_h), _inside(other, other.density_h))


def test_strip_boundaries_do_not_change_the_result(small: WholeCanvas, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(canvas_module, "STRIP_ROWS", 37)
    striped = render_canvas(SMALL)
    for name in ("image", "density_v", "density_h"):
        np.testing.assert_array_equal(getattr(small, name), getattr(striped, name))


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"width_cm": 0.5}, "width_cm"),
        ({"height_cm": float("nan")}, "height_cm"),
        ({"px_per_cm": 5.0}, "px_per_cm"),
        ({"seed": -1}, "seed"),
        ({"margin_cm": 3.0}, "margin_cm"),
        ({"bolt_offset_cm": 149.0}, "bolt_offset_cm"),
        ({"seam_cm": 0.2}, "seam_cm"),
        ({"waviness": 0.9}, "waviness"),
        ({"bit_depth": 12}, "bit_depth"),
        ({"max_angle_deg": 30.0}, "max_angle_deg"),
    ],
)
def test_spec_is_validated_naming_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(SMALL, **overrides)


def test_bolt_is_validated_naming_the_field() -> None:
    with pytest.raises(ValueError, match="density_v_threads_per_cm"):
        Bolt(0.0, 12.0)
    with pytest.raises(ValueError, match="stripe_std"):
        Bolt(12.0, 12.0, stripe_std=0.5)


@pytest.mark.parametrize("straight", [True, False])
def test_truth_integrates_to_the_number_of_centre_lines_crossed(straight: bool) -> None:
    # Straight threads (no tilt, no waviness): |grad phi| is d(phi)/dx exactly, so the line integral of the
    # truth along a row is the phase difference to float rounding. Wavy threads: |grad phi| exceeds d(phi)/dx
    # by the second-order term of the waviness' slope (~0.2 %), still within a thread over ~270 threads.
    wavy = {} if not straight else {"waviness": 0.0, "max_angle_deg": 0.0}
    spec = CanvasSpec(width_cm=16.0, height_cm=6.0, px_per_cm=50.0, seed=1, **PLAIN, **wavy)
    canvas = render_canvas(spec, with_phases=True)
    assert canvas.phase_v is not None and canvas.phase_h is not None
    top, bottom, left, right = canvas.canvas_box_px
    tolerance = 0.05 if straight else 1.0
    for family, phase, density, lines in (
        ("v", canvas.phase_v, canvas.density_v, [phase_row for phase_row in range(top + 5, bottom, 60)]),
        ("h", canvas.phase_h.T, canvas.density_h.T, list(range(left + 5, right, 150))),
    ):
        span = slice(left, right) if family == "v" else slice(top, bottom)
        for line in lines:
            along = phase[line, span].astype(np.float64)
            crossings = float(np.abs(np.diff(np.floor(along))).sum())
            integral = float(np.trapezoid(density[line, span].astype(np.float64))) / canvas.px_per_cm
            assert crossings > 80
            assert abs(abs(along[-1] - along[0]) - integral) < tolerance
            assert abs(crossings - integral) <= 1.0 + tolerance
            if not straight:
                assert integral >= abs(along[-1] - along[0]) - 1e-3


def test_densities_follow_the_bolt(small: WholeCanvas) -> None:
    bolt = small.bolt
    for field, nominal in (
        (small.density_v, bolt.density_v_threads_per_cm),
        (small.density_h, bolt.density_h_threads_per_cm),
    ):
        inside = _inside(small, field)
        assert inside.dtype == np.float32
        assert abs(float(inside.mean()) / nominal - 1.0) < 0.05
        assert 0.01 < float(inside.std()) / nominal < 0.3


@pytest.mark.parametrize(("bit_depth", "dtype"), [(8, np.uint8), (16, np.uint16)])
def test_bit_depth_sets_the_image_type(bit_depth: int, dtype: type) -> None:
    canvas = render_canvas(dataclasses.replace(SMALL, bit_depth=bit_depth))
    assert canvas.image.dtype == dtype
    assert canvas.image.shape == canvas.density_v.shape == canvas.density_h.shape == (300, 400)
    assert int(canvas.image.max()) > (200 if bit_depth == 8 else 1000)


def test_margin_has_no_canvas_nan_truth_and_a_blank_image(small: WholeCanvas) -> None:
    top, bottom, left, right = small.canvas_box_px
    assert (top, left) == (25, 25) and (small.image.shape[0] - bottom, small.image.shape[1] - right) == (25, 25)
    inside = np.zeros(small.image.shape, bool)
    inside[top:bottom, left:right] = True
    for field in (small.density_v, small.density_h):
        assert np.isnan(field[~inside]).all()
        assert np.isfinite(field[inside]).all()
    np.testing.assert_array_equal(small.canvas_mask, inside)
    # Clear beam, windowed on the canvas: the margin sits at the black level, below the whole canvas.
    margin_pixels = small.image[~inside].astype(np.float64)
    canvas_pixels = small.image[inside].astype(np.float64)
    assert margin_pixels.std() < 0.2 * canvas_pixels.std()
    assert np.percentile(margin_pixels, 99) <= np.percentile(canvas_pixels, 1)


def test_seam_joins_two_pieces_of_cloth(small: WholeCanvas) -> None:
    assert small.seam_x_px == 250
    top, bottom = small.canvas_box_px[:2]
    # Another weft either side: the row profiles of the weft truth differ.
    left_rows = small.density_h[top:bottom, 150:240].mean(axis=1)
    right_rows = small.density_h[top:bottom, 260:340].mean(axis=1)
    assert np.abs(left_rows - right_rows).mean() > 0.1
    # The overlapped band is brighter than the cloth either side.
    band = small.image[top + 20 : bottom - 20, 246:254].mean()
    beside = small.image[top + 20 : bottom - 20, 200:230].mean()
    assert band > beside
    assert render_canvas(dataclasses.replace(SMALL, seam_cm=None)).seam_x_px is None


def test_warp_profile_is_the_bolts_fingerprint() -> None:
    x = np.arange(0.0, 100.0, 0.01)
    bolt = Bolt(14.0, 12.0, seed=5)
    profile = bolt.warp_profile(x)
    np.testing.assert_array_equal(profile, Bolt(14.0, 12.0, seed=5).warp_profile(x))
    assert abs(profile.mean() - 1.0) < 0.01
    # Stripes (3-5 %) plus thread-scale irregularity (~3 %).
    assert 0.03 < profile.std() < 0.08
    other = Bolt(14.0, 12.0, seed=6).warp_profile(x)
    assert abs(np.corrcoef(profile, other)[0, 1]) < 0.15
    drawn = Bolt.random(np.random.default_rng(0))
    assert 8.0 <= drawn.density_v_threads_per_cm <= 20.0 and 8.0 <= drawn.density_h_threads_per_cm <= 20.0


def _warp_profile_on_the_bolt(canvas: WholeCanvas) -> tuple[np.ndarray, np.ndarray]:
    """(bolt position, column mean of the warp truth) over the canvas' columns, sorted by bolt position."""
    top, bottom, left, right = canvas.canvas_box_px
    positions = canvas.bolt_x_cm[left:right]
    means = canvas.density_v[top:bottom, left:right].mean(axis=0)
    order = np.argsort(positions)
    return positions[order], means[order]


def _overlap_correlation(first: WholeCanvas, second: WholeCanvas) -> float:
    x1, p1 = _warp_profile_on_the_bolt(first)
    x2, p2 = _warp_profile_on_the_bolt(second)
    low, high = max(x1[0], x2[0]), min(x1[-1], x2[-1])
    assert high - low >= 8.0
    inside = (x1 >= low) & (x1 <= high)
    return float(np.corrcoef(p1[inside], np.interp(x1[inside], x2, p2))[0, 1])


@pytest.mark.parametrize("seed", [0, 3, 4])
def test_same_bolt_canvases_share_the_warp_profile_and_different_bolts_do_not(seed: int) -> None:
    same = same_bolt_pair(seed, **PAIR_SIZE)
    different = different_bolt_pair(seed, **PAIR_SIZE)
    assert same[0].bolt == same[1].bolt and same[0].seed != same[1].seed
    assert different[0].bolt is not None and different[1].bolt is not None
    assert different[0].bolt != different[1].bolt
    assert different[0].bolt.density_v_threads_per_cm == different[1].bolt.density_v_threads_per_cm
    same_r = _overlap_correlation(*(render_canvas(spec) for spec in same))
    different_r = _overlap_correlation(*(render_canvas(spec) for spec in different))
    assert same_r > 0.75
    assert abs(different_r) < 0.4
    assert same_r - abs(different_r) > 0.5


def test_same_bolt_profiles_peak_at_the_true_offset() -> None:
    first, second = (render_canvas(spec) for spec in same_bolt_pair(4, **PAIR_SIZE))
    assert second.spec.reversed  # seed 4 turns the second canvas: the profile must be read backwards
    x1, p1 = _warp_profile_on_the_bolt(first)
    x2, p2 = _warp_profile_on_the_bolt(second)
    shifts = np.arange(-3.0, 3.0, 0.02)
    scores = []
    for shift in shifts:
        low, high = max(x1[0], x2[0] + shift), min(x1[-1], x2[-1] + shift)
        inside = (x1 >= low) & (x1 <= high)
        scores.append(np.corrcoef(p1[inside], np.interp(x1[inside] - shift, x2, p2))[0, 1])
    assert abs(shifts[int(np.argmax(scores))]) <= 0.04


def test_pairs_refuse_overrides_they_choose_and_too_narrow_canvases() -> None:
    with pytest.raises(ValueError, match="bolt_offset_cm"):
        same_bolt_pair(0, bolt_offset_cm=3.0)
    with pytest.raises(ValueError, match="8 cm"):
        different_bolt_pair(0, width_cm=6.0, height_cm=4.0)


def test_write_and_read_round_trip(small: WholeCanvas, tmp_path: Path) -> None:
    image_path, truth_path = write_canvas(small, tmp_path / "out", name="painting")
    assert (image_path.name, truth_path.name) == ("painting.png", "painting_truth.npz")
    np.testing.assert_array_equal(cv2.imread(str(image_path), cv2.IMREAD_UNCHANGED), small.image)
    truth = read_truth(truth_path)
    np.testing.assert_array_equal(truth.density_v, small.density_v)
    np.testing.assert_array_equal(truth.density_h, small.density_h)
    assert truth.px_per_cm == small.px_per_cm and truth.density_v.dtype == np.float32
    assert '"seam_cm": 5.0' in truth.spec_json
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["painting.png", "painting_truth.npz"]
    sixteen = render_canvas(dataclasses.replace(SMALL, bit_depth=16))
    tiff, _ = write_canvas(sixteen, tmp_path / "out16")
    assert tiff.name == "canvas.tiff"
    np.testing.assert_array_equal(cv2.imread(str(tiff), cv2.IMREAD_UNCHANGED), sixteen.image)


def test_read_truth_names_the_file_and_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"missing.npz.*no such file"):
        read_truth(tmp_path / "missing.npz")
    text = tmp_path / "text.npz"
    text.write_text("not an archive")
    with pytest.raises(ValueError, match=r"text.npz.*not a readable .npz"):
        read_truth(text)
    field = np.zeros((4, 5), np.float32)
    np.savez(tmp_path / "lacks.npz", density_v=field, px_per_cm=50.0, spec="{}")
    with pytest.raises(ValueError, match=r"lacks.npz: lacks density_h"):
        read_truth(tmp_path / "lacks.npz")
    np.savez(tmp_path / "shapes.npz", density_v=field, density_h=field[:3], px_per_cm=50.0, spec="{}")
    with pytest.raises(ValueError, match=r"shapes.npz: density_v \(4, 5\) and density_h \(3, 5\)"):
        read_truth(tmp_path / "shapes.npz")


def test_default_canvas_is_the_documented_radiograph() -> None:
    assert DEFAULT_CANVAS.shape_px == (1800, 2400)
    assert (DEFAULT_CANVAS.width_cm, DEFAULT_CANVAS.height_cm, DEFAULT_CANVAS.px_per_cm) == (24.0, 18.0, 100.0)
    assert DEFAULT_CANVAS.bit_depth == 8 and DEFAULT_CANVAS.seed == 0 and DEFAULT_CANVAS.seam_cm is not None
    assert DEFAULT_CANVAS.cusping and DEFAULT_CANVAS.nails and DEFAULT_CANVAS.stretcher_bars and DEFAULT_CANVAS.paint


def test_command_writes_the_two_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--out", str(tmp_path), "--seed", "2", "--width_cm", "6", "--height_cm", "4", "--px_per_cm", "40"]
    assert main([*argv, "--bit_depth", "16", "--name", "x"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "x.tiff"), str(tmp_path / "x_truth.npz")]
    assert read_truth(tmp_path / "x_truth.npz").density_v.shape == (160, 240)
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--px", "40"])  # no abbreviations


def test_preview_figure_shows_the_radiograph_and_both_maps(small: WholeCanvas) -> None:
    figure = canvas_module.preview_figure(small)
    titles = [ax.get_title() for ax in figure.axes]
    assert any("radiograph" in t for t in titles)
    assert sum("threads" in t for t in titles) == 2
    assert sum(ax.get_ylabel() == "threads/cm" for ax in figure.axes) == 2
