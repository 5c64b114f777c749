"""Figures the training-side commands log themselves (the analysis' report figures are ``analysis.plots``).

Built with the object-oriented API (``Figure()``, not ``pyplot``): no global figure registry, no display.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure


def confusion_matrix_figure(matrix: np.ndarray, title: str) -> Figure:
    """A classifier's confusion matrix: counts, row = true class, column = predicted class; the diagonal is
    what it got right, and an off-diagonal cell that stands out is a confusion it learned (or was taught)."""
    figure = Figure(figsize=(5.5, 4.8), layout="constrained")
    draw_confusion(figure.add_subplot(), matrix, title)
    return figure


def confusion_grid(matrices: Sequence[np.ndarray], titles: Sequence[str], columns: int = 4) -> Figure:
    """Several confusion matrices side by side, in order (e.g. the stages of the ping-pong experiment)."""
    rows = -(-len(matrices) // columns)
    figure = Figure(figsize=(4.2 * columns, 3.9 * rows), layout="constrained")
    for index, (matrix, title) in enumerate(zip(matrices, titles, strict=True)):
        draw_confusion(figure.add_subplot(rows, columns, index + 1), matrix, title, annotate=False)
    return figure


def draw_confusion(ax: Axes, matrix: np.ndarray, title: str, *, annotate: bool = True) -> None:
    sns.heatmap(np.asarray(matrix), annot=annotate, fmt="d", cmap="Blues", cbar=False, ax=ax, annot_kws={"fontsize": 7})
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=9)


def stage_lines(stages: Sequence[str], lines: dict[str, Sequence[float]], title: str) -> Figure:
    """Shares (0-1) along a sequence of stages, one line each (e.g. accuracies through the ping-pong)."""
    figure = Figure(figsize=(max(6.0, 0.9 * len(stages)), 4.0), layout="constrained")
    ax = figure.add_subplot()
    for label, values in lines.items():
        ax.plot(range(len(stages)), list(values), marker="o", label=label)
    ax.set_xticks(range(len(stages)), stages, fontsize=7)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("share of the test split")
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    return figure
