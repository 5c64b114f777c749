"""Statistics across seeds: median and interquartile range, mean and range, a bootstrap interval of a ratio, a
rank test, and the verdict rule.

The unit of replication is the training run (one seed): epochs of one run are not independent samples, so
every statistic here takes one value per run.

**The verdict rule.** A claim that one group beats another on a metric is made only when it holds beyond the
seeds' spread: each group has at least :data:`MIN_SEEDS_FOR_VERDICT` runs, and the worst run of one is better
than the best run of the other (their ranges do not overlap). Anything less is "no winner". The rule is strict
on purpose: a per-seed loss also depends on the processor's arithmetic (on the project's CPU, one seed's best
validation loss moved 14 % between instruction sets), so a difference inside the seed range means nothing.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

#: Resamples of the bootstrap; 10,000 keeps the Monte Carlo error of a 95 % percentile bound well below 1 %.
BOOTSTRAP_RESAMPLES = 10_000
CONFIDENCE = 0.95
#: Runs (seeds) each group needs before a verdict is given: with two, any gap is as likely chance as not.
MIN_SEEDS_FOR_VERDICT = 3


@dataclass(frozen=True)
class Spread:
    """A metric over a group's runs, one value per seed: mean, sample standard deviation (NaN for one run) and
    range."""

    n: int
    mean: float
    sd: float
    low: float
    high: float

    def text(self, fmt: Callable[[float], str] = "{:.3g}".format) -> str:
        """``mean ± sd (low–high, n seeds)``, each number through ``fmt``; one run: its value and ``1 seed``."""
        if self.n == 0:
            return "no runs"
        if self.n == 1:
            return f"{fmt(self.mean)} (1 seed)"
        return f"{fmt(self.mean)} ± {fmt(self.sd)} ({fmt(self.low)}–{fmt(self.high)}, {self.n} seeds)"


@dataclass(frozen=True)
class Verdict:
    """Which of two groups is better on a metric under the verdict rule (module docstring)."""

    a: str
    b: str
    winner: str | None
    """The better group's name, or None: too few seeds, or the seeds overlap."""
    sentence: str
    """One sentence saying so, with the numbers that decide it."""


@dataclass(frozen=True)
class RatioInterval:
    """``ratio`` = mean(a) / mean(b), with a percentile bootstrap interval [``low``, ``high``]."""

    ratio: float
    low: float
    high: float
    confidence: float
    n_a: int
    n_b: int


@dataclass(frozen=True)
class RankTest:
    """Two-sided Mann–Whitney U test of ``a`` against ``b``.

    ``effect`` is the common-language effect size P(a > b) + P(a = b) / 2 = U / (n_a n_b): 0.5 means no
    tendency, 0 means every value of ``a`` is below every value of ``b``.
    """

    statistic: float
    p_value: float
    effect: float
    n_a: int
    n_b: int


def median_iqr(values: Sequence[float] | np.ndarray | pd.Series) -> tuple[float, float, float]:
    """(median, first quartile, third quartile) of the finite values; NaNs when there are none."""
    finite = _finite(values)
    if finite.size == 0:
        return (float("nan"),) * 3
    q1, median, q3 = np.percentile(finite, [25, 50, 75])
    return float(median), float(q1), float(q3)


def spread(values: Sequence[float] | np.ndarray | pd.Series) -> Spread:
    """Mean, sample standard deviation and range of the finite values (NaNs when there are none)."""
    finite = _finite(values)
    if finite.size == 0:
        return Spread(0, *(float("nan"),) * 4)
    sd = float(np.std(finite, ddof=1)) if finite.size > 1 else float("nan")
    return Spread(int(finite.size), float(finite.mean()), sd, float(finite.min()), float(finite.max()))


def verdict(
    metric: str,
    a: tuple[str, Sequence[float] | np.ndarray | pd.Series],
    b: tuple[str, Sequence[float] | np.ndarray | pd.Series | float],
    *,
    lower_is_better: bool = True,
    fmt: Callable[[float], str] = "{:.3g}".format,
    min_seeds: int = MIN_SEEDS_FOR_VERDICT,
) -> Verdict:
    """The verdict rule (module docstring) on ``metric`` for two ``(name, values per run)`` groups.

    ``b`` may be one number: a method without a seed (the FFT counter), which needs no runs; then the rule asks
    that every run of ``a`` be on the same side of it.
    """
    (name_a, values_a), (name_b, values_b) = a, b
    seedless = isinstance(values_b, int | float)
    sa, sb = spread(values_a), spread([values_b] if seedless else values_b)
    ranges = f"{name_a} {sa.text(fmt)}, {name_b} " + (fmt(sb.mean) if seedless else sb.text(fmt))
    groups = ((name_a, sa),) if seedless else ((name_a, sa), (name_b, sb))
    short = [f"{name} has {s.n}" for name, s in groups if s.n < min_seeds]
    if short:
        return Verdict(
            name_a,
            name_b,
            None,
            f"{metric}: too few seeds to call ({', '.join(short)}; a verdict needs {min_seeds} per group): {ranges}.",
        )
    better, worse = (sa, sb) if (sa.mean < sb.mean) == lower_is_better else (sb, sa)
    better_name, worse_name = (name_a, name_b) if better is sa else (name_b, name_a)
    # The better group's worst run against the worse group's best run.
    worst_of_better, best_of_worse = (better.high, worse.low) if lower_is_better else (better.low, worse.high)
    separated = worst_of_better < best_of_worse if lower_is_better else worst_of_better > best_of_worse
    if not separated:
        difference = fmt(abs(sa.mean - sb.mean))
        within = f"{name_b} lies within {name_a}'s seeds" if seedless else "the seeds' ranges overlap"
        return Verdict(name_a, name_b, None, f"{metric}: no winner ({within}; means differ by {difference}). {ranges}.")
    if seedless:
        side = f"worst {fmt(worst_of_better)}" if better is sa else f"best {fmt(best_of_worse)}"
        why = f" on every seed ({name_a}'s {side} against {fmt(sb.mean)})"
    else:
        why = f": its worst seed ({fmt(worst_of_better)}) is better than {worse_name}'s best ({fmt(best_of_worse)})"
    return Verdict(name_a, name_b, better_name, f"{metric}: {better_name} beats {worse_name}{why}. {ranges}.")


def bootstrap_ratio(
    a: Sequence[float] | np.ndarray | pd.Series,
    b: Sequence[float] | np.ndarray | pd.Series,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> RatioInterval:
    """Percentile bootstrap (``scipy.stats.bootstrap``) of mean(a) / mean(b), resampling each group's runs
    independently; ``seed`` makes it reproducible.

    The percentile method, not BCa, because studies have few runs per group, where BCa's jackknife
    acceleration is unstable or undefined (identical values: scipy then warns and returns NaN bounds).
    scipy resamples only samples of two or more values; a group of one run resamples to itself, so it enters
    the ratio as a constant, and with one run in each group the interval collapses onto the ratio: report n
    alongside it.

    Raises:
        ValueError: when a group has no finite values, or ``b`` has a zero mean.
    """
    values_a, values_b = _finite(a), _finite(b)
    if values_a.size == 0 or values_b.size == 0:
        raise ValueError(f"bootstrap_ratio needs values in both groups, got {values_a.size} and {values_b.size}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if values_b.mean() == 0.0:
        raise ValueError("bootstrap_ratio: the denominator group has a zero mean")
    ratio = float(values_a.mean() / values_b.mean())
    low = high = ratio
    resampled = [values for values in (values_a, values_b) if values.size > 1]
    if resampled:

        def ratio_of_means(*samples: np.ndarray, axis: int) -> np.ndarray:
            given = iter(samples)  # the resampled groups, in order; the others are their single value
            mean_a = np.mean(next(given), axis=axis) if values_a.size > 1 else values_a[0]
            mean_b = np.mean(next(given), axis=axis) if values_b.size > 1 else values_b[0]
            return np.asarray(mean_a / mean_b)

        result = scipy_stats.bootstrap(
            resampled,
            ratio_of_means,
            n_resamples=resamples,
            confidence_level=confidence,
            method="percentile",
            paired=False,
            vectorized=True,
            rng=np.random.default_rng(seed),
        )
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return RatioInterval(
        ratio=ratio,
        low=low,
        high=high,
        confidence=confidence,
        n_a=int(values_a.size),
        n_b=int(values_b.size),
    )


def mann_whitney(a: Sequence[float] | np.ndarray | pd.Series, b: Sequence[float] | np.ndarray | pd.Series) -> RankTest:
    """Two-sided Mann–Whitney U test (exact p-value for small samples without ties, as scipy chooses).

    Raises:
        ValueError: when a group has no finite values.
    """
    values_a, values_b = _finite(a), _finite(b)
    if values_a.size == 0 or values_b.size == 0:
        raise ValueError(f"mann_whitney needs values in both groups, got {values_a.size} and {values_b.size}")
    result = scipy_stats.mannwhitneyu(values_a, values_b, alternative="two-sided")
    statistic = float(result.statistic)
    return RankTest(
        statistic=statistic,
        p_value=float(result.pvalue),
        effect=statistic / (values_a.size * values_b.size),
        n_a=int(values_a.size),
        n_b=int(values_b.size),
    )


def summarize(runs: pd.DataFrame, metrics: Sequence[str], *, group: str = "group") -> pd.DataFrame:
    """Median, quartiles, mean, standard deviation, range and count of each metric per group (long format, one
    row per group and metric).

    A group without a finite value of a metric (GPU memory on a CPU run, a metric newer than the runs) has
    no row for it.

    Args:
        runs: one row per training run, a ``group`` column and the metric columns.
        metrics: the columns to summarise, in report order.

    Raises:
        KeyError: a metric (or ``group``) is not a column of ``runs``.
    """
    require_columns(runs, [group, *metrics])
    rows = []
    for metric in metrics:
        for name, frame in runs.groupby(group, sort=False):
            median, q1, q3 = median_iqr(frame[metric])
            over = spread(frame[metric])
            if over.n == 0:
                continue
            rows.append(
                {"group": name, "metric": metric, "n": over.n, "median": median, "q1": q1, "q3": q3}
                | {"mean": over.mean, "sd": over.sd, "min": over.low, "max": over.high}
            )
    return pd.DataFrame(rows, columns=["group", "metric", "n", "median", "q1", "q3", "mean", "sd", "min", "max"])


def compare_groups(
    runs: pd.DataFrame,
    *,
    time_metric: str,
    loss_metric: str,
    group: str = "group",
    seed: int = 0,
) -> pd.DataFrame:
    """For every pair of groups (in order of appearance): the bootstrap interval of the ratio of
    ``time_metric`` means and the Mann–Whitney test of ``loss_metric``.

    Returns one row per pair with columns ``a``, ``b``, ``time_ratio``, ``time_ratio_low``, ``time_ratio_high``,
    ``n_a``, ``n_b``, ``u_statistic``, ``p_value``, ``effect`` (NaN where a group has no finite value of the
    metric), and the verdicts: ``loss_winner`` (a group's name, or empty), ``loss_verdict`` and
    ``time_verdict`` (sentences; :func:`verdict`, :func:`time_verdict`).

    Raises:
        KeyError: ``time_metric``, ``loss_metric`` or ``group`` is not a column of ``runs``.
    """
    require_columns(runs, [group, time_metric, loss_metric])
    names = list(dict.fromkeys(runs[group]))
    rows = []
    for name_a, name_b in itertools.combinations(names, 2):
        frame_a, frame_b = runs[runs[group] == name_a], runs[runs[group] == name_b]
        row: dict[str, object] = {"a": name_a, "b": name_b, "n_a": len(frame_a), "n_b": len(frame_b)}
        try:
            interval = bootstrap_ratio(frame_a[time_metric], frame_b[time_metric], seed=seed)
            row.update(time_ratio=interval.ratio, time_ratio_low=interval.low, time_ratio_high=interval.high)
        except ValueError:  # no finite values in a group (or a zero denominator): not measured
            row.update(time_ratio=np.nan, time_ratio_low=np.nan, time_ratio_high=np.nan)
        try:
            test = mann_whitney(frame_a[loss_metric], frame_b[loss_metric])
            row.update(u_statistic=test.statistic, p_value=test.p_value, effect=test.effect)
        except ValueError:
            row.update(u_statistic=np.nan, p_value=np.nan, effect=np.nan)
        called = verdict(loss_metric, (name_a, frame_a[loss_metric]), (name_b, frame_b[loss_metric]))
        row.update(loss_winner=called.winner or "", loss_verdict=called.sentence)
        row.update(time_verdict=time_verdict(name_a, name_b, row))
        rows.append(row)
    columns = ["a", "b", "n_a", "n_b", "time_ratio", "time_ratio_low", "time_ratio_high"]
    verdicts = ["loss_winner", "loss_verdict", "time_verdict"]
    return pd.DataFrame(rows, columns=[*columns, "u_statistic", "p_value", "effect", *verdicts])


def time_verdict(name_a: str, name_b: str, row: Mapping[str, Any]) -> str:
    """One sentence on speed from a :func:`compare_groups` row: one group is faster only when both have
    :data:`MIN_SEEDS_FOR_VERDICT` runs and the bootstrap interval of the time ratio a/b excludes 1."""
    ratio, low, high = (float(row[k]) for k in ("time_ratio", "time_ratio_low", "time_ratio_high"))
    if not math.isfinite(ratio):
        return "steady epoch time: not measured."
    interval = f"ratio {name_a}/{name_b} {ratio:.3g} [{low:.3g}, {high:.3g}]"
    if min(int(row["n_a"]), int(row["n_b"])) < MIN_SEEDS_FOR_VERDICT:
        needs = f"a verdict needs {MIN_SEEDS_FOR_VERDICT} per group"
        return f"steady epoch time: too few runs to call ({interval}; {needs})."
    if low <= 1.0 <= high:
        return f"steady epoch time: no difference beyond the runs' spread ({interval})."
    faster, factor = (name_a, 1 / ratio) if high < 1.0 else (name_b, ratio)
    slower = name_b if faster == name_a else name_a
    return f"steady epoch time: {faster} is {factor:.2f}x as fast as {slower} ({interval}, excluding 1)."


def require_columns(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    """Raise ``KeyError`` naming each of ``columns`` that ``frame`` lacks: a misspelt metric must not pass for
    one that was not measured (a metric a run did not log is a column of NaN, see ``analysis.runs.tidy``)."""
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise KeyError(f"no column {', '.join(map(repr, missing))} in the runs: a misspelt metric or group name?")


def _finite(values: Sequence[float] | np.ndarray | pd.Series) -> np.ndarray:
    array = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=float)
    return array[np.isfinite(array)]
