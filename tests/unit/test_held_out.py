"""The held-out-style test's bookkeeping: samples per family, scores on shared samples, bins and the verdict."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from thread_bench.workloads.thread_density import held_out

pytestmark = pytest.mark.unit


def _windows(n: int = 4) -> held_out.Windows:
    rng = np.random.default_rng(0)
    table = pd.DataFrame(
        {
            "painting_id": [f"painting_{i // 2:03d}" for i in range(n)],
            "patch_id": [f"p{i}" for i in range(n)],
            "density_v": np.linspace(8.0, 30.0, n),
            "density_h": np.linspace(12.0, 18.0, n),
            "weave": ["twill"] * n,
            "profile": ["slub", "flat"] * (n // 2),
            "imaging": ["scatter"] * n,
            "source_px_per_cm": [120.0, 350.0] * (n // 2),
            "occluded_share": [0.0, 0.6] * (n // 2),
            "irregularity_v": [0.02] * n,
            "irregularity_h": [0.06] * n,
            "contrast_pct": [1.0, 9.0] * (n // 2),
            "blur_sigma_cm": [0.001, 0.02] * (n // 2),
            "artefacts": [""] * n,
        }
    )
    images = tuple(rng.integers(0, 255, (40, 40), dtype=np.uint8) for _ in range(n))
    return held_out.Windows(images, 200.0, table, "held_out", 1)


def test_samples_hold_both_families_with_their_own_truth_and_irregularity() -> None:
    windows = _windows()
    estimates = {"cnn": np.column_stack([windows.table["density_v"] * 1.1, windows.table["density_h"]])}
    table = held_out.samples(windows, estimates)
    assert len(table) == 8
    vertical, horizontal = table[table["family"] == "v"], table[table["family"] == "h"]
    assert np.allclose(vertical["err_cnn"], 0.1)
    assert np.allclose(horizontal["err_cnn"], 0.0)
    assert set(vertical["irregularity"]) == {0.02} and set(horizontal["irregularity"]) == {0.06}


def test_scores_are_on_the_samples_every_method_measured() -> None:
    windows = _windows()
    truth = np.column_stack([windows.table["density_v"], windows.table["density_h"]])
    fft = truth * 1.2
    fft[0] = np.nan  # the FFT failed on window 0: the model's error there must not count either
    cnn = truth.copy()
    cnn[0] *= 3.0
    table = held_out.by_difficulty(held_out.samples(windows, {"cnn": cnn, "fft": fft}), ("cnn", "fft"))
    overall = table[table["factor"] == "all"].iloc[0]
    assert overall["n"] == 6
    assert overall["nmae_cnn"] == pytest.approx(0.0)
    assert overall["nmae_fft"] == pytest.approx(0.2)


def test_bins_split_each_factor_and_cover_every_shared_sample() -> None:
    windows = _windows(8)
    truth = np.column_stack([windows.table["density_v"], windows.table["density_h"]])
    table = held_out.by_difficulty(held_out.samples(windows, {"cnn": truth, "fft": truth}), ("cnn", "fft"))
    for factor in [*held_out.NUMERIC_FACTORS, *held_out.STYLE_FACTORS]:
        assert table[table["factor"] == factor]["n"].sum() == 16, factor
    occluded = table[table["factor"] == "occluded share"].set_index("bin")["n"]
    assert occluded.to_dict() == {"< 0.01": 8, ">= 0.5": 8}


def test_the_verdict_names_where_the_model_wins_and_loses() -> None:
    rows = [
        {"factor": "all", "bin": "all", "n": 100, "nmae_cnn": 0.03, "nmae_fft": 0.04},
        {"factor": "weave", "bin": "twill", "n": 60, "nmae_cnn": 0.02, "nmae_fft": 0.05},
        {"factor": "imaging", "bin": "scatter", "n": 40, "nmae_cnn": 0.06, "nmae_fft": 0.03},
        {"factor": "imaging", "bin": "soft", "n": held_out.MIN_BIN - 1, "nmae_cnn": 0.9, "nmae_fft": 0.01},
    ]
    line = held_out.verdict(pd.DataFrame(rows), "cnn")
    assert "0.0300 vs FFT 0.0400 (0.75x)" in line and "beats the FFT" in line
    assert "Better in: weave twill (0.40x)." in line
    assert "Worse in: imaging scatter (2.00x)." in line
    assert "soft" not in line  # too few samples to call


def test_the_verdict_names_the_clearest_bins_first_and_counts_the_rest() -> None:
    rows = [{"factor": "all", "bin": "all", "n": 100, "nmae_cnn": 0.05, "nmae_fft": 0.04}]
    for i in range(8):
        rows.append({"factor": "density", "bin": f"b{i}", "n": 50, "nmae_cnn": 0.05 + 0.01 * i, "nmae_fft": 0.04})
    line = held_out.verdict(pd.DataFrame(rows), "cnn")
    assert "Worse in: density b7 (3.00x), density b6 (2.75x)" in line
    assert f"and {8 - held_out.VERDICT_BINS} more." in line


def test_a_model_that_loses_overall_is_said_to() -> None:
    rows = [{"factor": "all", "bin": "all", "n": 10, "nmae_cnn": 0.05, "nmae_fft": 0.04}]
    assert "loses to the FFT" in held_out.verdict(pd.DataFrame(rows), "cnn")


def test_models_answer_through_their_request_format() -> None:
    windows = _windows()
    seen = []

    def predict(request: pd.DataFrame) -> pd.DataFrame:
        seen.append(request)
        return pd.DataFrame({"density_v": np.full(len(request), 10.0), "density_h": np.full(len(request), 20.0)})

    estimates = held_out.cnn_estimates(predict, windows, batch=3)
    assert [len(r) for r in seen] == [3, 1]
    assert set(seen[0].columns) == {"image", "px_per_cm"} and seen[0]["px_per_cm"].iloc[0] == 200.0
    assert np.array_equal(estimates, np.tile([10.0, 20.0], (4, 1)))


def test_a_model_named_like_the_fft_is_refused() -> None:
    with pytest.raises(ValueError, match="'fft'"):
        held_out.evaluate({"fft": lambda request: request}, _windows(), fft=np.zeros((4, 2)))


def test_fine_contrast_is_the_thread_scale_modulation_in_percent_of_full_scale() -> None:
    x = np.arange(200)
    stripes = (128 + 50 * np.sign(np.sin(2 * np.pi * x / 10.0)))[None, :].repeat(200, axis=0).astype(np.uint8)
    gradient = np.linspace(20, 230, 200)[None, :].repeat(200, axis=0).astype(np.uint8)
    assert held_out.fine_contrast(stripes, 200.0, 255.0) == pytest.approx(100 * 50 / 255, rel=0.1)
    assert held_out.fine_contrast(gradient, 200.0, 255.0) < 1.0


@pytest.mark.parametrize(("n_windows", "n_paintings"), [(3, 4), (5, 0)])
def test_impossible_window_counts_are_refused(n_windows: int, n_paintings: int) -> None:
    with pytest.raises(ValueError, match="n_paintings"):
        held_out.make_windows(n_windows, n_paintings)


def test_an_unknown_mix_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="mix must be one of"):
        held_out.make_windows(4, 2, 0, "bogus")


def test_blur_transfer_is_the_gaussian_mtf_at_the_thread_frequency() -> None:
    assert held_out.blur_transfer(0.0, 20.0) == pytest.approx(1.0)
    # sigma = 1/(2 pi f) * sqrt(2 ln 2) halves the modulation
    sigma = math.sqrt(2 * math.log(2)) / (2 * math.pi * 20.0)
    assert held_out.blur_transfer(sigma, 20.0) == pytest.approx(0.5)
    assert held_out.blur_transfer(0.03, 30.0) < 1e-6


def test_bin_names_read_as_ranges() -> None:
    assert held_out._bin_name(0.0, 10.0) == "< 10"
    assert held_out._bin_name(10.0, 15.0) == "10-15"
    assert held_out._bin_name(27.0, math.inf) == ">= 27"
