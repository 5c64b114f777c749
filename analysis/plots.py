"""The report's figures (the reference's figures 7-1 to 7-11, one function each).

Every function is pure: a DataFrame in, a ``matplotlib.figure.Figure`` out; nothing is shown, saved or
logged here (the command layer does that). Figures are built with the object-oriented API
(``Figure()``, not ``pyplot``), so no global figure registry fills up and no display backend is needed.

Column conventions (as built by :mod:`analysis.report`):

- ``runs``: one row per training run: ``group``, ``seed``, ``min_train_loss``, ``best_val_loss``,
  ``epochs_trained``, ``total_train_time_s``, ``host_rss_peak_bytes``, ``gpu_mem_peak_bytes`` (NaN when
  not measured);
- ``history``: one row per run and epoch: ``group``, ``seed``, ``epoch``, ``train_loss``, ``val_loss``,
  ``epoch_time_s``, ``train_time_s``, ``val_time_s``;
- ``evaluations``: one row per evaluated model: ``group``, ``test_loss``, ``predict_time_s``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from thread_bench import tracking
from thread_bench.workloads import Baseline

_GIB = 1024.0**3
_PALETTE = "colorblind"
#: The default workload's loss, as the figures name it (a workload's own: ``Workload.loss_name``).
LOSS_NAME = "normalised MAE"
#: How the figures name the two minimal losses of a run.
_LOSS_NAMES = {tracking.MIN_TRAIN_LOSS: "minimal train", tracking.BEST_VAL_LOSS: "minimal validation"}


def learning_curves(history: pd.DataFrame, loss_name: str = LOSS_NAME) -> Figure:
    """Training (dashed) and validation (solid) loss per epoch of every run, one panel per group (7-1, 7-5)."""
    groups = _groups(history)
    figure = Figure(figsize=(5.0 * len(groups), 4.0), layout="constrained")
    axes = figure.subplots(1, len(groups), sharey=True, squeeze=False)[0]
    long = history.melt(
        id_vars=["group", "run_id", "seed", "epoch"],
        value_vars=[tracking.TRAIN_LOSS, tracking.VAL_LOSS],
        var_name="split",
        value_name="loss",
    )
    long["split"] = long["split"].map({tracking.TRAIN_LOSS: "train", tracking.VAL_LOSS: "validation"})
    long["seed"] = long["seed"].astype(str)
    for ax, name in zip(axes, groups, strict=True):
        frame = long[long["group"] == name]
        sns.lineplot(
            data=frame,
            x="epoch",
            y="loss",
            hue="seed",
            style="split",
            style_order=["validation", "train"],
            palette=_PALETTE,
            ax=ax,
            units="run_id",
            estimator=None,
        )
        n_runs = frame["run_id"].nunique()
        ax.set_title(f"{name}: {n_runs} run{'s' if n_runs != 1 else ''}")
        ax.set_ylabel(loss_name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.suptitle("Training and validation loss per epoch")
    return figure


def min_loss_vs_epochs(runs: pd.DataFrame, loss_name: str = LOSS_NAME) -> Figure:
    """Minimal training and validation loss of each run against the epochs it trained (7-2)."""
    long = _minimal_losses(runs, tracking.EPOCHS_TRAINED)
    figure = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = figure.subplots()
    sns.scatterplot(
        data=long,
        x=tracking.EPOCHS_TRAINED,
        y="value",
        hue="group",
        hue_order=_groups(runs),
        style="loss",
        palette=_PALETTE,
        s=60,
        ax=ax,
    )
    ax.set_xlabel("epochs trained")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(loss_name)
    ax.set_title("Minimal losses vs epochs trained")
    return figure


def training_times(runs: pd.DataFrame) -> Figure:
    """Total training time of every run, per group (7-3)."""
    scale, unit = _time_unit(runs[tracking.TOTAL_TRAIN_TIME_S])
    frame = runs.assign(total=runs[tracking.TOTAL_TRAIN_TIME_S] / scale)
    return _per_run_distribution(frame, "total", f"total training time ({unit})", "Total training time per run")


def epochs_trained(runs: pd.DataFrame) -> Figure:
    """Epochs trained by every run, per group (7-4); early stopping makes this vary."""
    figure = _per_run_distribution(runs, tracking.EPOCHS_TRAINED, "epochs trained", "Epochs trained per run")
    figure.axes[0].yaxis.set_major_locator(MaxNLocator(integer=True))
    return figure


def epoch_times(history: pd.DataFrame) -> Figure:
    """Distributions of per-epoch times: whole epoch, training pass, validation pass (7-6).

    Two panels: the steady state (every epoch after the first) and the first epoch of each run, which
    carries tracing, compilation and warm-up and would otherwise pass for speed. A run with a single epoch
    appears only in the first-epoch panel.
    """
    columns = {
        tracking.EPOCH_TIME_S: "epoch",
        tracking.TRAIN_TIME_S: "training pass",
        tracking.VAL_TIME_S: "validation pass",
    }
    present = [c for c in columns if c in history.columns]
    long = history.melt(id_vars=["group", "run_id", "epoch"], value_vars=present, var_name="part", value_name="s")
    long["part"] = long["part"].map(columns)
    first = long["epoch"] == long.groupby("run_id")["epoch"].transform("min")
    order = [columns[c] for c in present]
    groups = _groups(history)
    figure = Figure(figsize=(11.0, 4.0), layout="constrained")
    steady_ax, first_ax = figure.subplots(1, 2)
    panels = [
        (steady_ax, long[~first], "steady state (epochs after the first)"),
        (first_ax, long[first], "first epoch"),
    ]
    for ax, frame, title in panels:
        if frame.empty:
            ax.text(0.5, 0.5, "no epochs", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
        else:
            sns.boxplot(
                data=frame, x="part", y="s", hue="group", hue_order=groups, order=order, palette=_PALETTE, ax=ax
            )
            ax.set_xlabel("")
            ax.set_ylabel("seconds")
        ax.set_title(title)
    figure.suptitle("Time per epoch")
    return figure


def losses(runs: pd.DataFrame, loss_name: str = LOSS_NAME) -> Figure:
    """Minimal training and validation loss of every run, per group (7-7)."""
    long = _minimal_losses(runs)
    figure = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = figure.subplots()
    sns.boxplot(data=long, x="loss", y="value", hue="group", hue_order=_groups(runs), palette=_PALETTE, ax=ax)
    sns.stripplot(
        data=long,
        x="loss",
        y="value",
        hue="group",
        hue_order=_groups(runs),
        palette=_PALETTE,
        dodge=True,
        color="black",
        legend=False,
        ax=ax,
    )
    ax.set_xlabel("")
    ax.set_ylabel(loss_name)
    ax.set_title("Training and validation loss (minimum of each run)")
    return figure


def memory(runs: pd.DataFrame) -> Figure:
    """Peak host memory (process RSS) and peak GPU memory (framework allocator) per run (7-8, 7-9)."""
    figure = Figure(figsize=(9.0, 4.0), layout="constrained")
    host_ax, gpu_ax = figure.subplots(1, 2)
    panels = [
        (host_ax, tracking.HOST_RSS_PEAK_BYTES, "host RSS peak (GiB)"),
        (gpu_ax, tracking.GPU_MEM_PEAK_BYTES, "GPU allocator peak (GiB)"),
    ]
    for ax, column, label in panels:
        values = pd.to_numeric(runs[column], errors="coerce") if column in runs.columns else None
        if values is None or not np.isfinite(values).any():
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            ax.set_title(label)
            continue
        frame = runs.assign(gib=values / _GIB)
        _strip_and_bar(ax, frame, "gib", _groups(runs))
        ax.set_ylabel(label)
        ax.set_title(label)
    figure.suptitle("Memory per run")
    return figure


def prediction_time(evaluations: pd.DataFrame) -> Figure:
    """Prediction time of each group's best model on the test split (7-10)."""
    return _per_model_bar(evaluations, tracking.PREDICT_TIME_S, "seconds", "Prediction time on the test split (warm)")


def test_loss(evaluations: pd.DataFrame, baseline: Baseline | None = None, loss_name: str = LOSS_NAME) -> Figure:
    """Test loss of each group's best model (7-11), with the workload's baseline (the FFT counter) as a dashed line
    when given."""
    figure = _per_model_bar(evaluations, tracking.TEST_LOSS, loss_name, "Test loss of the best model")
    if baseline is not None and np.isfinite(baseline.test_loss):
        ax = figure.axes[0]
        ax.axhline(
            baseline.test_loss, color="grey", linestyle="--", label=f"{baseline.name} ({baseline.test_loss:.3g})"
        )
        ax.legend(loc="best")
    return figure


# ------------------------------------------------------------------------ the plots people look for


def learning_curves_together(history: pd.DataFrame, loss_name: str = LOSS_NAME) -> Figure:
    """Every group's validation (solid) and training (dashed) loss per epoch on one axis: the line is the mean
    over the group's seeds, the band their range, so two frameworks are read against each other directly."""
    long = history.melt(
        id_vars=["group", "run_id", "epoch"],
        value_vars=[tracking.VAL_LOSS, tracking.TRAIN_LOSS],
        var_name="split",
        value_name="loss",
    )
    long["split"] = long["split"].map({tracking.TRAIN_LOSS: "train", tracking.VAL_LOSS: "validation"})
    return _per_epoch_lines(
        long,
        "loss",
        loss_name,
        "Learning curves of every group (line: mean over seeds; band: their range)",
        style="split",
        style_order=["validation", "train"],
        estimator="mean",
        errorbar=("pi", 100),
    )


def time_vs_loss(runs: pd.DataFrame, loss_name: str = LOSS_NAME) -> Figure:
    """Steady-state epoch time against best validation loss, one dot per run and a cross at each group's mean:
    the trade-off in one picture (lower left is better on both)."""
    frame = runs.assign(
        epoch_s=pd.to_numeric(runs[tracking.MEDIAN_EPOCH_TIME_S], errors="coerce"),
        loss=pd.to_numeric(runs[tracking.BEST_VAL_LOSS], errors="coerce"),
    )
    order = _groups(runs)
    figure = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = figure.subplots()
    sns.scatterplot(data=frame, x="epoch_s", y="loss", hue="group", hue_order=order, palette=_PALETTE, s=60, ax=ax)
    means = frame.groupby("group")[["epoch_s", "loss"]].mean()
    colours = dict(zip(order, sns.color_palette(_PALETTE, len(order)), strict=True))
    for group, row in means.iterrows():
        ax.scatter(row["epoch_s"], row["loss"], marker="X", s=160, color=colours[str(group)], edgecolor="black")
    ax.set_xlabel("steady-state epoch time (s, median of each run)")
    ax.set_ylabel(f"best validation loss ({loss_name})")
    ax.set_title("Time per epoch against accuracy (dot: a run; cross: the group's mean)")
    return figure


def memory_over_run(history: pd.DataFrame) -> Figure:
    """The training process's resident memory at each epoch's peak, every run (7-8 over time): growth across
    epochs shows a leak or a cache filling up, which a single peak hides."""
    if tracking.HOST_RSS_PEAK_BYTES in history.columns:
        values = pd.to_numeric(history[tracking.HOST_RSS_PEAK_BYTES], errors="coerce")
    else:
        values = pd.Series(np.nan, index=history.index)
    if not np.isfinite(values).any():
        figure = Figure(figsize=(7.0, 4.5), layout="constrained")
        ax = figure.subplots()
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return figure
    return _per_epoch_lines(
        history.assign(gib=values / _GIB),
        "gib",
        "host RSS peak of the epoch (GiB)",
        "Memory over the run (one line per run)",
        units="run_id",
        estimator=None,
        marker="o",
    )


def predicted_vs_true(predictions: pd.DataFrame, unit: str) -> Figure:
    """Each group's best model on the test split: predicted against true value, one dot per image, the identity
    dashed; the title gives the mean absolute error in the value's unit. ``predictions``: ``group``, ``true``,
    ``predicted``."""
    groups = _groups(predictions)
    figure = Figure(figsize=(4.5 * len(groups), 4.5), layout="constrained")
    axes = figure.subplots(1, len(groups), sharex=True, sharey=True, squeeze=False)[0]
    low = float(min(predictions["true"].min(), predictions["predicted"].min()))
    high = float(max(predictions["true"].max(), predictions["predicted"].max()))
    colours = sns.color_palette(_PALETTE, len(groups))
    for ax, group, colour in zip(axes, groups, colours, strict=True):
        frame = predictions[predictions["group"] == group]
        ax.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1)
        ax.scatter(frame["true"], frame["predicted"], s=8, alpha=0.4, color=colour)
        mae = float(np.mean(np.abs(frame["predicted"] - frame["true"])))
        ax.set_title(f"{group}: MAE {mae:.3g} {unit} ({len(frame):,} images)")
        ax.set_xlabel(f"true ({unit})")
        ax.set_ylabel(f"predicted ({unit})")
        ax.set_aspect("equal")
    figure.suptitle("Predicted against true on the test split (best model of each group)")
    return figure


# ------------------------------------------------------------------------------------------- helpers


def _per_epoch_lines(frame: pd.DataFrame, column: str, label: str, title: str, **lines: Any) -> Figure:
    """``column`` per epoch, a colour per group, on one axis (``lines``: seaborn's lineplot options)."""
    figure = Figure(figsize=(7.0, 4.5), layout="constrained")
    ax = figure.subplots()
    order = _groups(frame)
    sns.lineplot(data=frame, x="epoch", y=column, hue="group", hue_order=order, palette=_PALETTE, ax=ax, **lines)
    ax.set_ylabel(label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    return figure


def _groups(frame: pd.DataFrame) -> list[str]:
    return sorted(frame["group"].astype(str).unique())


def _minimal_losses(runs: pd.DataFrame, *id_vars: str) -> pd.DataFrame:
    """Each run's two minimal losses in long form: ``loss`` (named for the figures), ``value``, ``group`` and
    ``id_vars``."""
    long = runs.melt(id_vars=["group", *id_vars], value_vars=list(_LOSS_NAMES), var_name="loss", value_name="value")
    long["loss"] = long["loss"].map(_LOSS_NAMES)
    return long


def _per_run_distribution(runs: pd.DataFrame, column: str, label: str, title: str) -> Figure:
    figure = Figure(figsize=(5.0, 4.0), layout="constrained")
    ax = figure.subplots()
    _strip_and_bar(ax, runs, column, _groups(runs))
    ax.set_ylabel(label)
    ax.set_title(title)
    return figure


def _strip_and_bar(ax: Axes, frame: pd.DataFrame, column: str, order: Sequence[str]) -> None:
    """Mean as a bar, every run as a dot: with a handful of runs a box plot would hide more than it shows."""
    _group_bars(ax, frame, column, order, alpha=0.5)
    sns.stripplot(data=frame, x="group", y=column, order=order, color="black", size=6, ax=ax)
    ax.set_xlabel("")


def _group_bars(ax: Axes, frame: pd.DataFrame, column: str, order: Sequence[str], alpha: float | None = None) -> None:
    """One bar per group (the mean of ``column``), in ``order``, coloured by group, no error bar."""
    sns.barplot(
        data=frame,
        x="group",
        y=column,
        hue="group",
        order=order,
        hue_order=order,
        palette=_PALETTE,
        errorbar=None,
        alpha=alpha,
        legend=False,
        ax=ax,
    )


def _per_model_bar(evaluations: pd.DataFrame, column: str, label: str, title: str) -> Figure:
    figure = Figure(figsize=(5.0, 4.0), layout="constrained")
    ax = figure.subplots()
    _group_bars(ax, evaluations, column, _groups(evaluations))
    for container in ax.containers:
        ax.bar_label(container, fmt="%.3g")  # type: ignore[arg-type]
    ax.set_xlabel("")
    ax.set_ylabel(label)
    ax.set_title(title)
    return figure


def _time_unit(seconds: pd.Series) -> tuple[float, str]:
    """Seconds, minutes or hours, whichever keeps the largest value readable."""
    largest = float(np.nanmax(pd.to_numeric(seconds, errors="coerce"))) if len(seconds) else 0.0
    if largest >= 3 * 3600:
        return 3600.0, "h"
    if largest >= 600:
        return 60.0, "min"
    return 1.0, "s"
