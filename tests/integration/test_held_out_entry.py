"""The held-out-style test from the command line, on the model shipped with the package: windows made, the model
asked through its pyfunc, the FFT on the same windows, tables, figure and verdict written."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from thread_bench.workloads.thread_density import held_out, keys
from thread_bench.workloads.thread_density.weave_map import SHIPPED

pytestmark = pytest.mark.integration


def test_the_shipped_model_and_the_fft_are_scored_on_the_same_held_out_windows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "held_out"
    argv = ["--model_uri", "shipped", "--windows", "24", "--paintings", "4", "--out", str(out)]
    assert held_out.main(argv) == 0
    printed = capsys.readouterr().out
    assert "held_out: cnn = " in printed and "(shipped)" in printed
    assert "cnn: nMAE " in printed and " vs FFT " in printed
    samples = pd.read_csv(out / "held_out_samples.csv")
    assert len(samples) == 48  # 24 windows x 2 families
    assert set(samples["weave"]) == {"twill"}
    assert samples["est_cnn"].between(1, 100).all()  # threads/cm from the model's own preprocessing
    table = pd.read_csv(out / "held_out_by_difficulty.csv")
    assert table.loc[table["factor"] == "all", "n"].item() == samples[["err_cnn", "err_fft"]].notna().all(axis=1).sum()
    assert (out / "held_out.png").stat().st_size > 0
    assert "## Held-out styles" in (out / "held_out.md").read_text()


def test_a_model_that_does_not_load_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--model_uri", str(tmp_path / "nowhere"), "--windows", "4", "--paintings", "1", "--out", str(tmp_path)]
    assert held_out.main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("held_out: model_uri ") and "does not load" in error
    assert len(error.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--windows", "many"], "--windows must be a whole number, got 'many'"),
        (["--paintings", "0"], "--paintings must be >= 1, got 0"),
        (["--styles", "gothic"], "mix must be one of ['classic', 'held_out', 'training'], got 'gothic'"),
    ],
)
def test_bad_settings_are_one_line_naming_the_option(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert held_out.main([*argv, "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"held_out: {message}\n"


def test_the_analysis_scores_other_seeds_on_the_same_windows_and_leaves_out_one_that_does_not_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shipped = SHIPPED
    others = {"again": shipped, "lost": str(tmp_path / "nowhere")}

    with caplog.at_level(logging.WARNING, logger=held_out.__name__):
        result = held_out.held_out_test({"cnn": shipped}, tmp_path / "out", n_windows=24, others=others)

    assert set(result.scores) == {"cnn", "again"}
    assert result.scores["again"] == result.scores["cnn"]  # the same model on the same windows: the same score
    assert result.baseline_score == result.metrics["cnn"][keys.HELD_OUT_FFT_TEST_LOSS]
    assert (result.score_name, result.baseline_name) == ("held-out nMAE", "the FFT")
    (warning,) = [message for message in caplog.messages if "left out" in message]
    assert warning.startswith("held-out styles: lost left out: ") and "nowhere" in warning
