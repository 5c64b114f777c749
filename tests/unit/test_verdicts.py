"""The verdict rule: a group beats another only beyond the seeds' spread, and the report says so in words."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis import report, stats
from thread_bench import tracking
from thread_bench.workloads import HeldOut

#: The laptop study's best validation losses on the Zen 4 VM (seeds 1-3): the seeds overlap.
KERAS, TORCH = [0.0698, 0.0528, 0.0637], [0.0606, 0.1415, 0.0598]


def test_spread_is_mean_sample_sd_and_range() -> None:
    over = stats.spread([1.0, 2.0, 6.0, np.nan])

    assert (over.n, over.mean, over.low, over.high) == (3, 3.0, 1.0, 6.0)
    assert over.sd == pytest.approx(math.sqrt(7.0))  # ddof=1: ((4 + 1 + 9) / 2) ** 0.5
    assert over.text() == "3 ± 2.65 (1–6, 3 seeds)"
    assert math.isnan(stats.spread([5.0]).sd) and stats.spread([5.0]).text() == "5 (1 seed)"
    assert stats.spread([]).n == 0 and stats.spread([]).text() == "no runs"


def test_overlapping_seeds_have_no_winner_whatever_the_means() -> None:
    called = stats.verdict("best_val_loss", ("keras", KERAS), ("torch", TORCH))

    assert called.winner is None
    assert called.sentence.startswith("best_val_loss: no winner (the seeds' ranges overlap; means differ by 0.0252)")
    assert "keras 0.0621 ± 0.00861 (0.0528–0.0698, 3 seeds), torch 0.0873 ± " in called.sentence


@pytest.mark.parametrize("lower_is_better", [True, False])
def test_separated_seeds_name_the_winner_with_the_numbers_that_decide(lower_is_better: bool) -> None:
    low, high = [0.050, 0.055, 0.060], [0.061, 0.070, 0.142]

    called = stats.verdict("loss", ("a", low), ("b", high), lower_is_better=lower_is_better)

    winner, worst, best = ("a", "0.06", "0.061") if lower_is_better else ("b", "0.061", "0.06")
    assert called.winner == winner
    assert f"its worst seed ({worst}) is better than {'b' if winner == 'a' else 'a'}'s best ({best})" in called.sentence


def test_the_rule_needs_three_seeds_per_group_even_when_the_gap_is_huge() -> None:
    called = stats.verdict("loss", ("a", [0.01, 0.011]), ("b", [0.5, 0.6, 0.7]))

    assert called.winner is None
    assert "too few seeds to call (a has 2; a verdict needs 3 per group)" in called.sentence


def test_a_baseline_without_seeds_is_beaten_only_on_every_seed() -> None:
    fft = 0.0425

    loses = stats.verdict("held-out nMAE", ("torch", [0.074, 0.077, 0.183]), ("the FFT", fft))
    wins = stats.verdict("held-out nMAE", ("torch", [0.030, 0.035, 0.041]), ("the FFT", fft))
    straddles = stats.verdict("held-out nMAE", ("torch", [0.030, 0.035, 0.050]), ("the FFT", fft))

    assert loses.winner == "the FFT" and "on every seed (torch's best 0.074 against 0.0425)" in loses.sentence
    assert wins.winner == "torch" and "on every seed (torch's worst 0.041 against 0.0425)" in wins.sentence
    assert straddles.winner is None and "the FFT lies within torch's seeds" in straddles.sentence
    assert "too few seeds" in stats.verdict("x", ("torch", [0.01, 0.02]), ("the FFT", fft)).sentence


def comparison_row(ratio: float, low: float, high: float, n: int = 3) -> dict[str, float]:
    return {"time_ratio": ratio, "time_ratio_low": low, "time_ratio_high": high, "n_a": n, "n_b": n}


@pytest.mark.parametrize(
    ("row", "says"),
    [
        (comparison_row(0.8, 0.75, 0.85), "a is 1.25x as fast as b (ratio a/b 0.8 [0.75, 0.85], excluding 1)"),
        (comparison_row(1.1, 1.07, 1.14), "b is 1.10x as fast as a"),
        (comparison_row(1.02, 0.97, 1.08), "no difference beyond the runs' spread (ratio a/b 1.02 [0.97, 1.08])"),
        (comparison_row(0.5, 0.5, 0.5, n=1), "too few runs to call"),
        (comparison_row(float("nan"), float("nan"), float("nan")), "not measured"),
    ],
)
def test_speed_is_called_only_when_the_interval_excludes_one(row: dict[str, float], says: str) -> None:
    assert says in stats.time_verdict("a", "b", row)


def per_run(values: dict[str, list[float]], cpu: str = "AMD EPYC (AuthenticAMD 25/17/1)") -> pd.DataFrame:
    rows = [
        {"group": group, "run_id": f"{group}-{seed}", "seed": seed, tracking.BEST_VAL_LOSS: value}
        | {tracking.MEDIAN_EPOCH_TIME_S: 1.0 + 0.01 * seed, "cpu": cpu, "device": "cpu"}
        | {tracking.HOST_RSS_PEAK_BYTES: (1.4 if group == "keras" else 0.7) * 2**30 + 2**20 * seed}
        for group, losses in values.items()
        for seed, value in enumerate(losses, start=1)
    ]
    return pd.DataFrame(rows)


def a_report(runs: pd.DataFrame, held_out: HeldOut | None = None) -> report.Report:
    best = runs.loc[runs.groupby("group")[tracking.BEST_VAL_LOSS].idxmin()]
    evaluations = pd.DataFrame({"group": best["group"], "seed": best["seed"], "source_run_id": best["run_id"]})
    comparisons = stats.compare_groups(
        runs, time_metric=tracking.MEDIAN_EPOCH_TIME_S, loss_metric=tracking.BEST_VAL_LOSS
    )
    empty = pd.DataFrame()
    return report.Report(
        table=empty,
        per_run=runs,
        history=empty,
        evaluations=evaluations,
        summary=empty,
        comparisons=comparisons,
        determinism=empty,
        baseline=None,
        held_out=held_out,
    )


def test_the_report_names_the_processor_and_calls_no_winner_inside_the_spread() -> None:
    built = a_report(per_run({"keras": KERAS, "torch": TORCH}))

    lines = report.verdict_lines(built)

    assert lines[0].startswith("Measured on AMD EPYC (AuthenticAMD 25/17/1) (device: cpu).")
    assert any("best_val_loss: no winner" in line for line in lines)
    assert any("steady epoch time:" in line for line in lines)
    memory = "- host memory peak: torch beats keras: its worst seed (719.80 MiB) is better than keras's best (1.40 GiB)"
    assert any(line.startswith(memory) for line in lines), lines
    assert built.comparisons.loc[0, "loss_winner"] == ""


def test_held_out_verdicts_take_every_seed_and_the_best_run_under_its_group_name() -> None:
    runs = per_run({"keras": KERAS, "torch": TORCH})
    # The analysis scores each group's best model under the group's name and the other runs by seed and run id.
    scores = {"keras": 0.074, "keras seed 1 (keras-1)": 0.102, "keras seed 3 (keras-3)": 0.083}
    scores |= {"torch": 0.077, "torch seed 2 (torch-2)": 0.183}
    held_out = HeldOut(
        note="",
        lines=(),
        metrics={},
        markdown="",
        files=(),
        scores=scores,
        baseline_score=0.0425,
        score_name="held-out nMAE",
        baseline_name="the FFT",
    )

    keras, torch = report.held_out_verdicts(a_report(runs, held_out))

    assert keras.startswith("held-out nMAE: the FFT beats keras on every seed (keras's best 0.074 against 0.0425)")
    assert "(0.074–0.102, 3 seeds)" in keras
    # torch-1 was not scored (its model did not load): the group has two seeds, too few to call.
    assert "too few seeds to call (torch has 2" in torch
    assert report.held_out_verdicts(a_report(runs)) == []


def _variant_runs(seconds: dict[tuple[str, str], float]) -> pd.DataFrame:
    """Three seeds per (framework, variant), each group's steady epoch near ``seconds``."""
    rows = [
        {"group": f"{framework} (variant={variant})", "framework": framework, tracking.PARAM_VARIANT: variant}
        | {tracking.PARAM_BACKEND: "tensorflow" if framework == "keras" else "torch", "run_id": f"{framework}-{seed}"}
        | {"seed": seed, tracking.BEST_VAL_LOSS: 0.05, tracking.MEDIAN_EPOCH_TIME_S: epoch * (1 + 0.01 * seed)}
        | {"cpu": "Intel Xeon (GenuineIntel 6/143/8)", "device": "cpu", tracking.HOST_RSS_PEAK_BYTES: 2.0**30}
        for (framework, variant), epoch in seconds.items()
        for seed in (1, 2, 3)
    ]
    return pd.DataFrame(rows)


def test_a_speed_verdict_that_flips_between_variants_is_called_a_property_of_the_variant() -> None:
    # The Xeon's layout cliff: PyTorch's NCHW default is slow, its channels_last tuned fast.
    flipped = a_report(
        _variant_runs(
            {("torch", "default"): 45.0, ("keras", "default"): 20.0, ("torch", "tuned"): 9.0, ("keras", "tuned"): 18.0}
        )
    )
    consistent = a_report(
        _variant_runs(
            {("torch", "default"): 22.0, ("keras", "default"): 25.0, ("torch", "tuned"): 9.0, ("keras", "tuned"): 18.0}
        )
    )

    (said,) = report.variant_verdicts(flipped)
    assert said.startswith(
        "steady epoch time: which of keras (tensorflow) and torch is faster depends on the variant on Intel Xeon "
        "(GenuineIntel 6/143/8) (keras (tensorflow) in `default`; torch in `tuned`): "
    )
    assert "not a verdict on the frameworks" in said and said in report.verdicts(flipped)
    assert report.variant_verdicts(consistent) == []
    assert report.variant_verdicts(a_report(per_run({"keras": KERAS, "torch": TORCH}))) == [], "no variant column"
