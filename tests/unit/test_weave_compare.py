"""Same-bolt matching of weave maps (thread_bench.workloads.thread_density.weave_compare): reading and checking maps,
warp profiles, the shift search, the surrogates' p-value, and the separation of same-bolt from different-bolt pairs
on synthetic canvases (tests/weave_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from thread_bench.workloads.thread_density import weave_compare as wc
from weave_helpers import Canvas, expected_shift_cm, make_bolt, weave_map_table, write_weave_map


def _compare(tmp_path: Path, bolt_a, canvas_a: Canvas, bolt_b, canvas_b: Canvas, seed: int) -> wc.Comparison:
    """Write both canvases' maps, read them back and compare them, the way the entry point does."""
    rng = np.random.default_rng(seed)
    path_a = write_weave_map(tmp_path / "a", weave_map_table(bolt_a, canvas_a, rng))
    path_b = write_weave_map(tmp_path / "b", weave_map_table(bolt_b, canvas_b, rng))
    options = wc.CompareOptions(str(path_a), str(path_b), warp_a=canvas_a.warp, warp_b=canvas_b.warp)
    return wc.compare_maps(options)


# ------------------------------------------------------------------------------------- matching


@pytest.mark.parametrize(
    "canvas_b",
    [
        Canvas(14.0, 20.0, 15.0),
        Canvas(4.0, 18.0, 12.0, reversed=True),
        Canvas(20.0, 22.0, 16.0, warp="h"),
        Canvas(8.0, 15.0, 15.0, warp="h", reversed=True),
        Canvas(26.0, 12.0, 10.0),  # 9 cm of a at its far edge
    ],
    ids=["forward", "reversed", "turned", "turned-reversed", "narrow-at-the-edge"],
)
def test_a_same_bolt_pair_is_found_at_its_shift_and_orientation(tmp_path: Path, canvas_b: Canvas) -> None:
    bolt = make_bolt(np.random.default_rng(1))
    canvas_a = Canvas(10.0, 25.0, 20.0)
    comparison = _compare(tmp_path, bolt, canvas_a, bolt, canvas_b, seed=2)
    assert comparison.shift_cm == pytest.approx(expected_shift_cm(canvas_a, canvas_b), abs=0.5)
    assert comparison.reversed == canvas_b.reversed
    assert comparison.correlation > 0.8
    assert comparison.p_value <= wc.SUGGESTIVE_P_VALUE
    assert comparison.density_difference == pytest.approx(
        comparison.profile_a.mean_density - comparison.profile_b.mean_density
    )


def test_a_map_reversed_against_itself_reads_reversed_at_the_mirror_shift(tmp_path: Path) -> None:
    """a as is against a mounted the other way round: the best alignment is b reversed, b's last column on a's
    first (shift 0), and the correlation is that of two noisy copies of one profile."""
    bolt = make_bolt(np.random.default_rng(5))
    canvas = Canvas(20.0, 20.0, 20.0)
    comparison = _compare(tmp_path, bolt, canvas, bolt, Canvas(20.0, 20.0, 20.0, reversed=True), seed=6)
    assert comparison.reversed and comparison.shift_cm == pytest.approx(0.0, abs=0.5)
    assert comparison.overlap_cm > 15.0
    assert comparison.verdict.startswith("profiles match at shift 0.0 cm, b reversed")
    assert comparison.verdict.endswith("consistent with one bolt")


def _separation_pairs(tmp_path: Path, n_pairs: int) -> tuple[list[wc.Comparison], list[wc.Comparison]]:
    """``n_pairs`` same-bolt pairs (canvases overlapping across the bolt by >= 10 cm, any mounting) and as many
    different-bolt pairs (b cut the same way from an independent bolt of the same nominal density)."""
    rng = np.random.default_rng(2024)
    same, different = [], []
    for index in range(n_pairs):
        bolt, other = make_bolt(rng), make_bolt(rng)
        width_a, width_b = rng.uniform(12.0, 30.0), rng.uniform(12.0, 30.0)
        offset_a = rng.uniform(5.0, 40.0)
        overlap = rng.uniform(10.0, min(width_a, width_b))
        offset_b = offset_a + width_a - overlap if rng.uniform() < 0.5 else offset_a - width_b + overlap
        canvas_a = Canvas(offset_a, width_a, rng.uniform(10.0, 25.0), warp=str(rng.choice(["v", "h"])))
        canvas_b = Canvas(
            offset_b,
            width_b,
            rng.uniform(10.0, 25.0),
            warp=str(rng.choice(["v", "h"])),
            reversed=bool(rng.uniform() < 0.5),
        )
        same_pair = _compare(tmp_path / f"same{index}", bolt, canvas_a, bolt, canvas_b, seed=index)
        assert same_pair.shift_cm == pytest.approx(expected_shift_cm(canvas_a, canvas_b), abs=0.5), index
        assert same_pair.reversed == canvas_b.reversed, index
        same.append(same_pair)
        different.append(_compare(tmp_path / f"diff{index}", bolt, canvas_a, other, canvas_b, seed=index))
    return same, different


def test_same_bolt_pairs_outscore_different_bolt_pairs(tmp_path: Path) -> None:
    """The separation experiment, small: 24 same-bolt pairs (each found at its shift and orientation) against 24
    different-bolt pairs. The correlation alone separates them (ROC AUC > 0.9) and the p-value more clearly;
    unrelated pairs get unremarkable p-values (the surrogates make a maximum over shifts honest), and the verdict
    calls few of them a match.

    With overlaps down to 8 cm (not tested here), about 1 in 60 same-bolt pairs lines up better at a wrong shift:
    over a short overlap two smooth profiles can agree by chance as well as at the right shift."""
    same, different = _separation_pairs(tmp_path, 24)
    auc_correlation = wc.roc_auc([c.correlation for c in same], [c.correlation for c in different])
    auc_p_value = wc.roc_auc([-c.p_value for c in same], [-c.p_value for c in different])
    print(f"ROC AUC: correlation {auc_correlation:.3f}, -p_value {auc_p_value:.3f}")
    print("same-bolt p:", sorted(round(c.p_value, 3) for c in same))
    print("different-bolt p:", sorted(round(c.p_value, 3) for c in different))
    assert auc_correlation > 0.9
    assert auc_p_value > 0.9
    assert np.median([c.p_value for c in same]) <= wc.MATCH_P_VALUE
    assert np.mean([c.p_value <= wc.SUGGESTIVE_P_VALUE for c in different]) <= 0.25
    # A match at p <= 0.01 happens to about 1 % of unrelated pairs by design; more would mean a biased p-value.
    assert np.mean(["consistent with one bolt" in c.verdict for c in different]) <= 0.1


# ------------------------------------------------------------------------------------- pure functions


def test_shift_correlations_is_pearson_at_each_shift() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=30), rng.normal(size=20)
    a[4] = np.nan
    b[7] = np.nan
    scores = wc.shift_correlations(a, b, min_pairs=5)[0]
    for k in (-10, -3, 0, 6, 12):
        j = np.arange(20)
        i = j + k
        inside = (i >= 0) & (i < 30)
        both = inside & np.isfinite(b) & np.isfinite(a[np.clip(i, 0, 29)])
        expected = np.corrcoef(a[i[both]], b[j[both]])[0, 1]
        assert scores[k + 19] == pytest.approx(expected), k
    counts = wc.overlap_counts(a, b)
    assert np.isnan(scores[counts < 5]).all() and np.isfinite(scores[counts >= 5]).all()
    assert len(scores) == 30 + 20 - 1


def test_surrogates_keep_the_spectrum_and_the_gaps_and_are_seeded() -> None:
    rng = np.random.default_rng(0)
    profile = np.cumsum(rng.normal(size=40))
    surrogates = wc.phase_randomised(profile, 50, np.random.default_rng(3))
    assert surrogates.shape == (50, 40)
    spectrum = np.abs(np.fft.rfft(profile - profile.mean()))
    assert np.allclose(np.abs(np.fft.rfft(surrogates - surrogates.mean(axis=1, keepdims=True), axis=1)), spectrum)
    assert np.allclose(surrogates.mean(axis=1), profile.mean())
    assert np.abs(np.corrcoef(surrogates)[0, 1:]).max() < 0.99  # different from each other
    assert np.array_equal(surrogates, wc.phase_randomised(profile, 50, np.random.default_rng(3)))
    gappy = profile.copy()
    gappy[[3, 17, 18]] = np.nan
    assert (np.isnan(wc.phase_randomised(gappy, 5, np.random.default_rng(3))) == np.isnan(gappy)).all()


def test_the_p_value_is_the_share_of_surrogates_at_least_as_good_and_deterministic() -> None:
    rng = np.random.default_rng(7)
    a = wc.WarpProfile(np.arange(40) * 0.5, 14 + rng.normal(size=40), 0.5)
    b = wc.WarpProfile(np.arange(30) * 0.5, 14 + rng.normal(size=30), 0.5)
    first = wc.compare_profiles(a, b, n_surrogates=200, seed=1)
    assert first.p_value == wc.compare_profiles(a, b, n_surrogates=200, seed=1).p_value
    assert 1 / 201 <= first.p_value <= 1.0
    assert first.p_value * 201 == pytest.approx(round(first.p_value * 201))  # (1 + count) / (1 + n)
    assert first.p_value > wc.SUGGESTIVE_P_VALUE  # white noise against white noise
    assert first.verdict.startswith("no match better than chance")
    twin = wc.WarpProfile(b.position_cm, a.density[10:40] + 0.05 * rng.normal(size=30), 0.5)
    matched = wc.compare_profiles(a, twin, n_surrogates=200, seed=1)
    assert matched.shift_cm == 5.0 and not matched.reversed
    assert matched.p_value == pytest.approx(1 / 201)


def test_roc_auc_counts_ties_as_half() -> None:
    assert wc.roc_auc([3, 4], [1, 2]) == 1.0
    assert wc.roc_auc([1, 2], [3, 4]) == 0.0
    assert wc.roc_auc([1, 1], [1, 1]) == 0.5
    assert wc.roc_auc([2, 1], [1, 0]) == pytest.approx((1 + 1 + 0.5 + 1) / 4)
    with pytest.raises(ValueError, match="at least one score"):
        wc.roc_auc([], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        wc.roc_auc([np.nan], [1.0])


def _weave_map(density_v: np.ndarray) -> wc.WeaveMap:
    ny, nx = density_v.shape
    return wc.WeaveMap("test", np.arange(nx) * 0.5 + 0.5, np.arange(ny) * 0.5 + 0.5, density_v, density_v.T.copy())


def test_a_profile_averages_valid_windows_and_skips_thin_columns() -> None:
    density = np.full((8, 5), 14.0)
    density[:, 1] = np.arange(8.0)
    density[:6, 2] = np.nan  # 2 valid windows left: too few
    density[:5, 3] = np.nan  # 3 valid of 8: enough
    profile = wc.warp_profile(_weave_map(density), "v")
    assert profile.step_cm == 0.5 and list(profile.position_cm) == [0.5, 1.0, 1.5, 2.0, 2.5]
    assert profile.density[1] == pytest.approx(3.5)
    assert np.isnan(profile.density[2]) and profile.density[3] == 14.0
    turned = wc.warp_profile(_weave_map(density), "h")  # density_h is density_v transposed: the same profile
    assert np.array_equal(turned.density, profile.density, equal_nan=True)
    with pytest.raises(ValueError, match="--warp must be v"):
        wc.warp_profile(_weave_map(density), "x")


def test_profiles_of_different_steps_are_compared_on_the_coarser() -> None:
    fine = wc.WarpProfile(np.arange(0.5, 10.0, 0.25), np.arange(0.5, 10.0, 0.25) * 2.0, 0.25)
    fine.density[5] = np.nan  # at 1.75 cm: the coarse points 1.5 and 2.0 keep their own values
    coarse = wc.WarpProfile(np.arange(0.5, 10.0, 0.5), np.zeros(19), 0.5)
    a, b = wc.on_common_step(fine, coarse)
    assert b is coarse and a.step_cm == 0.5
    assert np.allclose(a.position_cm, coarse.position_cm)
    assert np.allclose(a.density, a.position_cm * 2.0)
    odd = wc.resampled(wc.WarpProfile(np.arange(0.0, 5.0, 0.4), np.arange(0.0, 5.0, 0.4), 0.4), 1.0)
    assert np.allclose(odd.density, [0.0, 1.0, 2.0, 3.0, 4.0])
    gap = wc.WarpProfile(np.arange(0.0, 5.0, 0.4), np.arange(0.0, 5.0, 0.4), 0.4)
    gap.density[2] = np.nan  # 0.8 cm: the point at 1.0 cm lies between it and 1.2 cm
    assert np.isnan(wc.resampled(gap, 1.0).density[1])


# ------------------------------------------------------------------------------------- errors


@pytest.fixture
def good_table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return weave_map_table(make_bolt(rng, width_cm=30.0), Canvas(2.0, 10.0, 6.0), rng)


def _error(path: Path, **kwargs: str) -> str:
    with pytest.raises((ValueError, FileNotFoundError)) as error:
        wc.read_weave_map(str(path), name="--map_a", **kwargs)
    return str(error.value)


def test_a_missing_map_is_named(tmp_path: Path) -> None:
    message = _error(tmp_path / "nowhere")
    assert "--map_a" in message and "nowhere" in message and "no such file or directory" in message
    (tmp_path / "empty").mkdir()
    assert "the directory has no weave_map.csv" in _error(tmp_path / "empty")


def test_a_missing_column_is_named(tmp_path: Path, good_table: pd.DataFrame) -> None:
    write_weave_map(tmp_path, good_table.drop(columns=["density_h_cnn"]))
    message = _error(tmp_path)
    assert "lacks the column(s) density_h_cnn" in message and str(tmp_path / "weave_map.csv") in message
    message = _error(tmp_path, method="true")
    assert "lacks the column(s) density_v_true, density_h_true" in message and "without a ground truth" in message


def test_an_irregular_grid_is_refused(tmp_path: Path, good_table: pd.DataFrame) -> None:
    table = good_table.copy()
    table.loc[table["x_cm"] == table["x_cm"].max(), "x_cm"] += 0.3
    write_weave_map(tmp_path, table)
    message = _error(tmp_path)
    assert "not regular in x_cm" in message and "step 0.5 cm" in message
    write_weave_map(tmp_path, good_table.drop(index=[3]))
    assert "do not form a complete grid" in _error(tmp_path)
    write_weave_map(tmp_path, pd.concat([good_table, good_table.iloc[[3]]]))
    assert "1 repeated" in _error(tmp_path)


def test_bad_values_are_refused(tmp_path: Path, good_table: pd.DataFrame) -> None:
    table = good_table.copy()
    table["valid"] = table["valid"].astype(object)
    table.loc[4, "valid"] = "yes"
    write_weave_map(tmp_path, table)
    assert "column valid must hold 0 or 1 in every row; row 5 has 'yes'" in _error(tmp_path)
    (tmp_path / "weave_map.csv").write_text("")
    assert "not a readable CSV" in _error(tmp_path)
    header = ",".join(good_table.columns)
    (tmp_path / "weave_map.csv").write_text(header + "\n")
    assert "has no windows" in _error(tmp_path)


def test_an_impossible_overlap_is_explained(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    bolt = make_bolt(rng)
    with pytest.raises(ValueError, match=r"--map_b: its warp profile covers only 4\.0 cm .*--min_overlap_cm 6"):
        _compare(tmp_path, bolt, Canvas(5.0, 20.0, 10.0), bolt, Canvas(5.0, 4.5, 10.0), seed=0)
    options = wc.CompareOptions("a", "b", min_overlap_cm=25.0)
    assert options.min_overlap_cm == 25.0
    with pytest.raises(ValueError, match="--min_overlap_cm must be > 0"):
        wc.CompareOptions("a", "b", min_overlap_cm=0.0)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"map_a": ""}, "--map_a is required"),
        ({"method": "svm"}, "--method must be one of cnn, fft, true"),
        ({"warp_b": "x"}, "--warp_b must be v"),
    ],
)
def test_bad_options_are_named(fields: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        wc.CompareOptions(**{"map_a": "a", "map_b": "b", **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("correlation", "p_value", "expected"),
    [
        (0.9, 1 / 501, "profiles match at shift 3.5 cm (r=0.90, p<=0.002 by chance, overlap 8.0 cm): consistent "),
        (0.9, 0.006, "profiles match at shift 3.5 cm (r=0.90, p=0.006 by chance"),
        (0.5, 0.006, "weak match at shift 3.5 cm (r=0.50, p=0.006 by chance"),  # significant but weak: no claim
        (0.9, 0.03, "weak match at shift 3.5 cm (r=0.90, p=0.030 by chance, overlap 8.0 cm): suggestive"),
        (0.9, 0.41, "no match better than chance (best r=0.90 at shift 3.5 cm, p=0.41): no evidence of one bolt"),
    ],
)
def test_the_verdict_claims_no_more_than_the_numbers(correlation: float, p_value: float, expected: str) -> None:
    profile = wc.WarpProfile(np.arange(3) * 0.5, np.array([14.0, 14.5, 13.5]), 0.5)
    empty = np.array([])
    comparison = wc.Comparison(correlation, 3.5, 8.0, False, p_value, 500, profile, profile, empty, empty, empty)
    assert comparison.verdict.startswith(expected)
    assert comparison.density_difference == 0.0
