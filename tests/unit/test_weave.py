"""Weave maps: the grid, reading radiographs, which windows count, the FFT's maps, truth and errors, the files."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pandas as pd
import pytest

from thread_bench.workloads.thread_density import weave

pytestmark = pytest.mark.unit

PX_PER_CM = 50.0


def grating(height: int, width: int, density_v: float, density_h: float, *, px_per_cm: float = PX_PER_CM) -> np.ndarray:
    """An 8-bit canvas-like image: vertical and horizontal threads as cosines of the given densities (threads/cm)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    pattern = np.cos(2 * np.pi * density_v * x / px_per_cm) + np.cos(2 * np.pi * density_h * y / px_per_cm)
    return np.round(127.5 + 60.0 * pattern).astype(np.uint8)


def constant_model(request: pd.DataFrame) -> pd.DataFrame:
    """A stand-in for a model's pyfunc: 10 threads/cm vertical, 12 horizontal, whatever it is shown."""
    assert list(request.columns) == ["image", "px_per_cm"]
    return pd.DataFrame({"density_v": 10.0, "density_h": 12.0, "windows": 1}, index=request.index)


# ------------------------------------------------------------------------------------------------- grid


def test_grid_centres_the_windows_and_reports_centres_in_cm() -> None:
    grid = weave.make_grid((210, 330), PX_PER_CM, window_cm=1.0, step_cm=0.5)
    assert grid.window_px == 50
    assert grid.shape == (7, 12)  # (210 - 50) / 25 + 1 = 7.4 -> 7; (330 - 50) / 25 + 1 = 12.2 -> 12
    # The 10 px (rows) and 5 px (columns) left over are split between both sides.
    assert grid.tops[0] == 5 and grid.tops[-1] + 50 == 205
    assert grid.lefts[0] in (2, 3) and 330 - (grid.lefts[-1] + 50) in (2, 3)
    assert np.allclose(np.diff(grid.x_cm), 0.5) and np.allclose(np.diff(grid.y_cm), 0.5)
    assert grid.y_cm[0] == pytest.approx((5 + 25) / PX_PER_CM)
    assert len(grid.windows()) == 7 * 12 and grid.windows()[1] == (5, int(grid.lefts[1]))


@pytest.mark.parametrize(
    ("shape", "window_cm", "step_cm", "message"),
    [
        ((100, 100), 0.2, 0.5, "window_cm=0.2 is 10 px"),
        ((100, 100), 1.0, 0.01, "step_cm=0.01 is under one pixel"),
        ((40, 400), 1.0, 0.5, "smaller than one window"),
        ((100, 100), -1.0, 0.5, "window_cm must be a positive number"),
        ((100, 100), 1.0, math.nan, "step_cm must be a positive number"),
    ],
)
def test_grid_refuses_what_cannot_be_mapped(
    shape: tuple[int, int], window_cm: float, step_cm: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        weave.make_grid(shape, PX_PER_CM, window_cm, step_cm)


# ------------------------------------------------------------------------------------------------ input


def test_read_radiograph_takes_8_and_16_bit_png_and_tiff(tmp_path: Path) -> None:
    image8 = grating(60, 80, 10, 12)
    image16 = image8.astype(np.uint16) * 257
    cv2.imwrite(str(tmp_path / "a.png"), image8)
    cv2.imwrite(str(tmp_path / "b.tiff"), image16)
    cv2.imwrite(str(tmp_path / "c.png"), cv2.cvtColor(image8, cv2.COLOR_GRAY2BGR))  # gray stored as RGB
    assert np.array_equal(weave.read_radiograph(tmp_path / "a.png"), image8)
    read16 = weave.read_radiograph(tmp_path / "b.tiff")
    assert read16.dtype == np.uint16 and np.array_equal(read16, image16)
    assert np.array_equal(weave.read_radiograph(tmp_path / "c.png"), image8)


def test_a_tiff_is_decoded_piece_by_piece_into_a_mapped_file(tmp_path: Path) -> None:
    """Tiled and compressed (as museum scans are) or stripped LZW (OpenCV's): into a memory-mapped file in the
    scratch folder, not into the process' own memory."""
    import tifffile

    image = (grating(300, 500, 10, 12).astype(np.uint16) * 251) + 7
    tifffile.imwrite(tmp_path / "tiled.tiff", image, tile=(64, 64), compression="zlib")
    cv2.imwrite(str(tmp_path / "lzw.tiff"), image)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    for name in ("tiled.tiff", "lzw.tiff"):
        read = weave.read_radiograph(tmp_path / name, scratch)
        assert read.dtype == np.uint16 and np.array_equal(read, image), name
        assert isinstance(read.base, np.memmap) or isinstance(read, np.memmap), name
    assert sorted(path.name for path in scratch.iterdir()) == ["lzw.decoded", "tiled.decoded"]
    assert not isinstance(weave.read_radiograph(tmp_path / "tiled.tiff"), np.memmap)  # no scratch: in memory


def test_read_radiograph_names_the_file_and_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"radiograph .*missing.png: no such file"):
        weave.read_radiograph(tmp_path / "missing.png")
    (tmp_path / "notes.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="expected a PNG or TIFF"):
        weave.read_radiograph(tmp_path / "notes.jpg")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"broken.png: not a readable PNG or TIFF"):
        weave.read_radiograph(tmp_path / "broken.png")
    colour = np.zeros((20, 20, 3), np.uint8)
    colour[..., 2] = 200
    cv2.imwrite(str(tmp_path / "red.png"), colour)
    with pytest.raises(ValueError, match="grayscale, this image has 3 colour channels"):
        weave.read_radiograph(tmp_path / "red.png")
    cv2.imwrite(str(tmp_path / "float.tiff"), np.ones((20, 20), np.float32))
    with pytest.raises(ValueError, match="expected 8- or 16-bit gray levels, got float32"):
        weave.read_radiograph(tmp_path / "float.tiff")


# ------------------------------------------------------------------------------------------- validity


def test_blank_outside_and_saturated_windows_are_marked_not_counted() -> None:
    image = grating(300, 450, 9.0, 14.0)
    rng = np.random.default_rng(0)
    image[:, :100] = np.clip(128 + rng.normal(0, 2, size=(300, 100)), 0, 255).astype(np.uint8)  # flat, noisy
    image[200:, 300:350] = 255  # saturated: lead, a nail
    image[:, 400:] = 0  # outside the canvas: the film's black
    grid = weave.make_grid(image.shape, PX_PER_CM)
    weave_map = weave.measure(image, grid, constant_model, progress=False)
    x, y = np.meshgrid(grid.x_cm, grid.y_cm)
    left, right = x - 0.5, x + 0.5  # window edges, cm
    blank = right <= 100 / PX_PER_CM
    saturated = (left >= 300 / PX_PER_CM - 0.5) & (right <= 350 / PX_PER_CM + 0.5) & (y - 0.5 >= 200 / PX_PER_CM)
    outside = right > 400 / PX_PER_CM + 0.1  # more than 10 % of the window in the black
    assert blank.any() and saturated.any() and outside.any()
    assert not weave_map.valid[blank | saturated | outside].any()
    reasons = weave_map.invalid_reasons
    assert reasons["blank"] == blank.sum() and reasons["outside"] == outside.sum() and reasons["saturated"] >= 2
    for name in weave.MEASURED:
        assert np.isnan(weave_map.maps[name][~weave_map.valid]).all(), name
    # Windows of the grating that touch none of it are counted.
    clean = (
        (left >= 100 / PX_PER_CM)
        & ((right <= 300 / PX_PER_CM) | (y + 0.5 <= 200 / PX_PER_CM))
        & (right <= 400 / PX_PER_CM)
    )
    assert clean.any() and weave_map.valid[clean].all()
    assert weave_map.valid.sum() + sum(reasons[k] for k in ("blank", "outside", "saturated")) == weave_map.valid.size


def test_the_fft_maps_read_the_grating_and_the_cnn_maps_hold_the_models_answers() -> None:
    image = grating(200, 300, 9.0, 14.0)
    grid = weave.make_grid(image.shape, PX_PER_CM)
    weave_map = weave.measure(image, grid, constant_model, progress=False)
    assert weave_map.valid.all()
    assert np.allclose(weave_map.maps[weave.FFT_V], 9.0, atol=0.15)
    assert np.allclose(weave_map.maps[weave.FFT_H], 14.0, atol=0.15)
    assert np.allclose(weave_map.maps[weave.ANGLE_V], 0.0, atol=0.5)
    assert np.array_equal(weave_map.maps[weave.CNN_V], np.full(grid.shape, 10.0))
    assert np.array_equal(weave_map.maps[weave.CNN_H], np.full(grid.shape, 12.0))
    assert set(weave_map.timings) == {"statistics_s", "fft_s", "cnn_s"}
    assert weave.measure(image, grid, None, progress=False).timings.keys() == {"statistics_s", "fft_s"}


def test_the_model_sees_each_window_at_the_radiographs_resolution_in_batches() -> None:
    image = grating(150, 250, 9.0, 14.0)
    grid = weave.make_grid(image.shape, PX_PER_CM)
    seen: list[pd.DataFrame] = []

    def recording(request: pd.DataFrame) -> pd.DataFrame:
        seen.append(request)
        return constant_model(request)

    weave.measure(image, grid, recording, batch_windows=7, progress=False)
    assert sum(len(request) for request in seen) == grid.shape[0] * grid.shape[1]
    assert max(len(request) for request in seen) == 7
    first = seen[0]
    top, left = grid.windows()[0]
    assert np.array_equal(first["image"][0], image[top : top + 50, left : left + 50])
    assert (first["px_per_cm"] == PX_PER_CM).all()


# --------------------------------------------------------------------------------------- truth, errors


def _truth(height: int, width: int, density_v: float, density_h: float, margin: int) -> SimpleNamespace:
    fields = []
    for value in (density_v, density_h):
        field = np.full((height, width), value, np.float32)
        field[:margin], field[-margin:], field[:, :margin], field[:, -margin:] = np.nan, np.nan, np.nan, np.nan
        fields.append(field)
    return SimpleNamespace(density_v=fields[0], density_h=fields[1], px_per_cm=PX_PER_CM)


def test_truth_is_the_windows_mean_and_errors_are_split_at_the_edges() -> None:
    image = grating(300, 400, 9.0, 14.0)
    truth = _truth(300, 400, 9.5, 13.0, margin=10)
    grid = weave.make_grid(image.shape, PX_PER_CM)
    weave_map = weave.measure(image, grid, constant_model, progress=False)
    weave.check_truth(truth, image.shape, PX_PER_CM, "t.npz")  # type: ignore[arg-type]
    weave.add_truth(weave_map, truth)  # type: ignore[arg-type]
    true_v = weave_map.maps[weave.TRUE_V]
    # Windows reaching 10 px into the margin are 80 % on the canvas: no truth; the others are exactly 9.5.
    assert np.isnan(true_v[0, 0]) and np.allclose(true_v[1:-1, 1:-1], 9.5)
    edges = weave.near_edges(grid, truth)  # type: ignore[arg-type]
    assert edges[0].all() and edges[:, 0].all() and not edges[grid.shape[0] // 2, grid.shape[1] // 2]
    metrics = weave.errors(weave_map, edges)
    assert metrics["mae_v_cnn"] == pytest.approx(0.5) and metrics["mae_h_cnn"] == pytest.approx(1.0)
    assert metrics["mae_v_fft"] == pytest.approx(0.5, abs=0.15) and metrics["mae_h_fft"] == pytest.approx(1.0, abs=0.15)
    assert metrics["mae_v_cnn_edge"] == pytest.approx(0.5) and metrics["mae_v_cnn_interior"] == pytest.approx(0.5)
    assert 0 < metrics["n_truth_edge"] < metrics["n_truth"] == int(np.isfinite(true_v).sum())


def test_a_truth_of_another_radiograph_is_refused() -> None:
    truth = _truth(300, 400, 9.5, 13.0, margin=10)
    with pytest.raises(ValueError, match=r"truth t.npz: its density fields are 400x300 px, the radiograph 500x300"):
        weave.check_truth(truth, (300, 500), PX_PER_CM, "t.npz")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="made at px_per_cm=50, the map uses px_per_cm=100"):
        weave.check_truth(truth, (300, 400), 100.0, "t.npz")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ files


def test_files_follow_the_weave_map_convention(tmp_path: Path) -> None:
    image = grating(200, 300, 9.0, 14.0)
    image[:, :60] = 40  # a blank strip: invalid windows
    grid = weave.make_grid(image.shape, PX_PER_CM)
    weave_map = weave.measure(image, grid, constant_model, progress=False)
    metrics = weave.summary(weave_map)
    weave.write(weave_map, tmp_path, metrics, {"px_per_cm": PX_PER_CM})
    table = pd.read_csv(tmp_path / weave.CSV_NAME)
    assert tuple(table.columns) == (
        "x_cm",
        "y_cm",
        "density_v_cnn",
        "density_h_cnn",
        "density_v_fft",
        "density_h_fft",
        "angle_v_deg",
        "angle_h_deg",
        "valid",
    )
    assert len(table) == grid.shape[0] * grid.shape[1]
    assert table["y_cm"].is_monotonic_increasing  # row-major
    assert (table.loc[table["valid"] == 0, list(weave.MEASURED)].isna()).all().all()
    assert table["valid"].sum() == metrics["n_valid"] < len(table)
    for name in (*weave.MEASURED, "valid"):
        array = np.load(tmp_path / weave.MAPS_DIR / f"{name}.npy")
        assert array.shape == grid.shape, name
    assert np.allclose(
        np.load(tmp_path / weave.MAPS_DIR / "density_v_fft.npy"),
        table["density_v_fft"].to_numpy().reshape(grid.shape),
        atol=1e-4,
        equal_nan=True,
    )
    description = json.loads((tmp_path / weave.GRID_NAME).read_text())
    assert (description["rows"], description["cols"]) == grid.shape
    assert description["x_cm"] == pytest.approx(list(grid.x_cm), abs=1e-4)
    summary = json.loads((tmp_path / weave.SUMMARY_NAME).read_text())
    assert summary["metrics"]["n_valid"] == metrics["n_valid"] and summary["invalid"]["blank"] > 0


def test_the_figure_shows_both_methods_and_with_a_truth_the_errors() -> None:
    image = grating(300, 400, 9.0, 14.0)
    grid = weave.make_grid(image.shape, PX_PER_CM)
    weave_map = weave.measure(image, grid, constant_model, progress=False)
    plain = weave.figure(weave_map, image, "plain", weave.summary(weave_map))
    titles = {ax.get_title() for ax in plain.axes}
    assert {
        "CNN: vertical threads",
        "FFT: vertical threads",
        "CNN - FFT",
        "FFT: angle of the horizontal threads",
    } <= titles
    assert not any(title.startswith("truth") for title in titles)
    weave.add_truth(weave_map, _truth(300, 400, 9.5, 13.0, margin=10))  # type: ignore[arg-type]
    scored = weave.figure(weave_map, image, "scored", weave.errors(weave_map, np.zeros(grid.shape, bool)))
    assert {"truth: vertical threads", "CNN - truth"} <= {ax.get_title() for ax in scored.axes}
    assert any("mean absolute error" in text.get_text() for ax in scored.axes for text in ax.texts)
