"""The comparison report: the reference's Table 7-1 for any set of runs, statistics across seeds, figures.

``build_report`` is pure (DataFrames in, a :class:`Report` out); ``write_report`` writes it to a folder:

- ``table.md``, ``table.csv``, ``table.html``: the Table 7-1 equivalent, one column per group;
- ``runs.csv``, ``history.csv``, ``evaluations.csv``: the data behind it;
- ``statistics.csv``, ``comparisons.csv``: median/IQR per metric and group; ratio intervals and rank tests;
- ``figures/*.png`` and ``report.md`` (all of the above with the figures linked);
- ``report.html``: the same as one self-contained page, figures embedded, which MLflow's artifact viewer shows.
"""

from __future__ import annotations

import base64
import html
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from markdown_it import MarkdownIt
from matplotlib.figure import Figure

from analysis import plots, runs, stats
from thread_bench import tracking, workloads
from thread_bench.figures import confusion_matrix_figure
from thread_bench.workloads import Baseline, HeldOut, Workload

#: Metrics summarised across seeds (median and IQR), in report order.
#: The evaluations' column holding a classifier's test confusion matrix (nested lists), where there is one.
CONFUSION_COLUMN = "confusion"
#: The held-out test's tables and figure, inside the report folder.
HELD_OUT_DIR = "held_out"

STAT_METRICS = (
    tracking.TOTAL_TRAIN_TIME_S,
    tracking.EPOCHS_TRAINED,
    tracking.FIRST_EPOCH_TIME_S,
    tracking.MEDIAN_EPOCH_TIME_S,
    tracking.MEDIAN_TRAIN_TIME_S,
    tracking.MEDIAN_VAL_TIME_S,
    tracking.HOST_RSS_PEAK_BYTES,
    tracking.GPU_MEM_PEAK_BYTES,
    tracking.GPU_MEM_NVML_BYTES,
    tracking.MIN_TRAIN_LOSS,
    tracking.BEST_VAL_LOSS,
)

_UNITS = {
    tracking.TOTAL_TRAIN_TIME_S: "s",
    tracking.EPOCHS_TRAINED: "epochs",
    tracking.FIRST_EPOCH_TIME_S: "s",
    tracking.MEDIAN_EPOCH_TIME_S: "s",
    tracking.MEDIAN_TRAIN_TIME_S: "s",
    tracking.MEDIAN_VAL_TIME_S: "s",
    tracking.HOST_RSS_PEAK_BYTES: "bytes",
    tracking.GPU_MEM_PEAK_BYTES: "bytes",
    tracking.GPU_MEM_NVML_BYTES: "bytes",
    tracking.MIN_TRAIN_LOSS: "loss",
    tracking.BEST_VAL_LOSS: "loss",
}

NOT_MEASURED = "not measured"

#: The steady-state epoch time (epochs after the first, as training logs it) that groups are compared on.
TIME_METRIC = tracking.MEDIAN_EPOCH_TIME_S

#: GPU memory metrics: absent on a CPU run, and ``gpu_mem_nvml_bytes`` is logged per epoch only.
_GPU_MEMORY_METRICS = (tracking.GPU_MEM_PEAK_BYTES, tracking.GPU_MEM_NVML_BYTES)

#: Group knobs ignored when pairing a deterministic group with a non-deterministic one: the variant names the
#: set a run belongs to, and cuDNN benchmarking follows from ``deterministic`` (it is not a group knob).
_DETERMINISM_COMPANIONS = frozenset({tracking.PARAM_DETERMINISTIC, tracking.PARAM_VARIANT})


@dataclass(frozen=True)
class Report:
    table: pd.DataFrame
    """Index: quantity; column ``unit``, then one column per group (raw values: seconds, bytes, ...)."""
    per_run: pd.DataFrame
    history: pd.DataFrame
    evaluations: pd.DataFrame
    summary: pd.DataFrame
    comparisons: pd.DataFrame
    determinism: pd.DataFrame
    """Per framework, deterministic vs non-deterministic groups alike in every other knob (``determinism_costs``)."""
    baseline: Baseline | None
    context: dict[str, str] = field(default_factory=dict)
    """Scope of the report (experiment, study, dataset digest, tracking URI...), shown as a list."""
    #: What the runs learned (``thread_bench.workloads``): the test rows of the table and the loss's name.
    workload: Workload = field(default_factory=lambda: workloads.get(workloads.DEFAULT))
    #: The best models on data made with settings kept out of training (``Workload.held_out``), if tested.
    held_out: HeldOut | None = None
    #: A regression's test predictions of each group's best model: ``group``, ``seed``, ``true``, ``predicted``.
    predictions: pd.DataFrame = field(default_factory=pd.DataFrame)


def per_run_table(runs: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with each GPU memory metric that has no summary value taken from the epoch history (its
    largest per-epoch value).

    The times come as training logged them (``first_epoch_time_s``, ``median_*_time_s``: the steady state is
    defined once, in ``thread_bench.training.common.steady_state``); a run logged before a metric existed
    has NaN there, which the report shows as "not measured".
    """
    merged = runs.copy()
    for key in _GPU_MEMORY_METRICS:
        if key in history.columns and not history.empty:
            epoch_max = history.groupby("run_id", sort=False)[key].max()
            merged[key] = merged[key].fillna(merged["run_id"].map(epoch_max))
    return merged


#: One cell of the comparison table: group name -> value.
_Cell = Callable[[str], Any]


def comparison_table(
    per_run: pd.DataFrame,
    evaluations: pd.DataFrame,
    baseline: Baseline | None = None,
    test_rows: Sequence[tuple[str, str, str]] = workloads.get(workloads.DEFAULT).report_rows,
) -> pd.DataFrame:
    """The Table 7-1 equivalent: one column per group, raw values, a ``unit`` column.

    Averages are means over the group's runs (as the reference reported them); minimal losses are the
    minimum over the runs, and the validation loss is also given as mean, standard deviation and worst over
    the seeds (the spread a verdict must exceed); test rows belong to the group's best run. The FFT rows
    repeat the baseline in every column (it does not depend on the framework). ``test_rows`` are the
    workload's own test metrics (``Workload.report_rows``).
    """
    groups = sorted(per_run["group"].unique())
    evaluation_of = {row["group"]: row for _, row in evaluations.iterrows()}

    def of_runs(metric: str, how: str) -> _Cell:
        return lambda group: _group_aggregate(per_run, group, metric, how)

    def of_evaluation(metric: str) -> _Cell:
        return lambda group: float(evaluation_of[group][metric]) if group in evaluation_of else np.nan

    def text(column: str) -> _Cell:
        return lambda group: _group_text(per_run, group, column)

    rows: list[tuple[str, str, _Cell]] = [
        ("Backend", "text", text("backend")),
        ("Versions", "text", text("versions")),
        ("Device", "text", text("device")),
        ("CPU", "text", text("cpu")),
        ("Runs (seeds)", "count", lambda group: int((per_run["group"] == group).sum())),
        ("Average training time", "s", of_runs(tracking.TOTAL_TRAIN_TIME_S, "mean")),
        ("Average epochs trained", "epochs", of_runs(tracking.EPOCHS_TRAINED, "mean")),
        ("First epoch (warm-up)", "s", of_runs(tracking.FIRST_EPOCH_TIME_S, "mean")),
        ("Time per epoch (steady state)", "s", of_runs(tracking.MEDIAN_EPOCH_TIME_S, "mean")),
        ("Time per training pass", "s", of_runs(tracking.MEDIAN_TRAIN_TIME_S, "mean")),
        ("Time per validation pass", "s", of_runs(tracking.MEDIAN_VAL_TIME_S, "mean")),
        ("Prediction time on the test set (warm)", "s", of_evaluation(tracking.PREDICT_TIME_S)),
        ("GPU memory, allocator peak", "bytes", of_runs(tracking.GPU_MEM_PEAK_BYTES, "mean")),
        ("GPU memory, NVML per process", "bytes", of_runs(tracking.GPU_MEM_NVML_BYTES, "mean")),
        ("Host memory peak (RSS)", "bytes", of_runs(tracking.HOST_RSS_PEAK_BYTES, "mean")),
        ("Minimal train loss", "loss", of_runs(tracking.MIN_TRAIN_LOSS, "min")),
        ("Minimal validation loss", "loss", of_runs(tracking.BEST_VAL_LOSS, "min")),
        ("Validation loss, mean over seeds", "loss", of_runs(tracking.BEST_VAL_LOSS, "mean")),
        ("Validation loss, SD over seeds", "loss", of_runs(tracking.BEST_VAL_LOSS, "sd")),
        ("Validation loss, worst seed", "loss", of_runs(tracking.BEST_VAL_LOSS, "max")),
        ("Best run (by validation loss)", "text", lambda group: _best_run(evaluation_of.get(group))),
        ("Test loss of the best model", "loss", of_evaluation(tracking.TEST_LOSS)),
        *((label, unit, of_evaluation(metric)) for label, unit, metric in test_rows),
        *_baseline_rows(baseline),
    ]
    return pd.DataFrame(
        {"unit": [unit for _, unit, _ in rows], **{g: [cell(g) for _, _, cell in rows] for g in groups}},
        index=pd.Index([label for label, _, _ in rows], name="quantity"),
    )


def _group_aggregate(per_run: pd.DataFrame, group: str, metric: str, how: str) -> float:
    """The mean (``how="mean"``), sample standard deviation (``"sd"``), minimum (``"min"``) or maximum
    (``"max"``) of ``metric`` over the group's runs that have a finite value; NaN when none has (GPU memory on a
    CPU, a metric newer than the runs) and, for ``sd``, with one run."""
    over = stats.spread(per_run.loc[per_run["group"] == group, metric])
    return {"mean": over.mean, "sd": over.sd, "min": over.low, "max": over.high}[how]


def _group_text(per_run: pd.DataFrame, group: str, column: str) -> str:
    """The distinct values of ``column`` over the group's runs, sorted, comma-separated."""
    return _distinct(per_run[per_run["group"] == group], column)


def _distinct(runs_: pd.DataFrame, column: str) -> str:
    """The distinct values of ``column`` over ``runs_``, sorted, comma-separated; empty without the column."""
    values = runs_[column].dropna() if column in runs_ else pd.Series(dtype=str)
    return ", ".join(sorted({str(v) for v in values}))


def _best_run(evaluation: pd.Series | None) -> str:
    if evaluation is None:
        return ""
    return f"seed {evaluation['seed']} ({str(evaluation['source_run_id'])[:8]})"


def _baseline_rows(baseline: Baseline | None) -> list[tuple[str, str, _Cell]]:
    if baseline is None:
        return []
    return [(label, unit, _constant(value)) for label, unit, value in baseline.rows]


def _constant(value: float) -> _Cell:
    """A cell with the same value in every group's column (a baseline's figure)."""
    return lambda group: value


def build_report(
    runs: pd.DataFrame,
    history: pd.DataFrame,
    evaluations: pd.DataFrame,
    baseline: Baseline | None = None,
    context: Mapping[str, str] | None = None,
    *,
    seed: int = 0,
    workload: Workload | None = None,
    held_out: HeldOut | None = None,
    predictions: pd.DataFrame | None = None,
) -> Report:
    """Everything the report shows, computed from the selected runs, their histories and evaluations.

    Args:
        runs: one row per training run (``analysis.runs.tidy`` + ``assign_groups``).
        history: per-epoch metrics (``analysis.runs.load_histories``).
        evaluations: one row per group: ``group``, ``seed``, ``source_run_id``, the evaluation metrics.
        seed: seeds the bootstrap.
        workload: what the runs learned (default: the default workload).
        predictions: a regression's test predictions (``Report.predictions``).
    """
    workload = workload or workloads.get(workloads.DEFAULT)
    per_run = per_run_table(runs, history)
    return Report(
        table=comparison_table(per_run, evaluations, baseline, workload.report_rows),
        per_run=per_run,
        history=history,
        evaluations=evaluations,
        summary=stats.summarize(per_run, STAT_METRICS),
        comparisons=stats.compare_groups(
            per_run, time_metric=TIME_METRIC, loss_metric=tracking.BEST_VAL_LOSS, seed=seed
        ),
        determinism=determinism_costs(per_run, seed=seed),
        baseline=baseline,
        context=dict(context or {}),
        workload=workload,
        held_out=held_out,
        predictions=predictions if predictions is not None else pd.DataFrame(),
    )


def determinism_costs(per_run: pd.DataFrame, *, seed: int = 0) -> pd.DataFrame:
    """What deterministic kernels cost each framework: for every pair of its groups that differ in
    ``deterministic`` and in no other group knob (precision, backend, compile, ... and device), the ratio of
    mean steady-state epoch times, deterministic / non-deterministic, with a bootstrap interval.

    Returns columns ``framework``, ``deterministic``, ``nondeterministic`` (group names), ``n_a``, ``n_b``,
    ``ratio``, ``low``, ``high``; empty when no such pair was trained (e.g. a study without the
    ``nondeterministic`` variant).
    """
    columns = ["framework", "deterministic", "nondeterministic", "n_a", "n_b", "ratio", "low", "high"]
    if per_run.empty or tracking.PARAM_DETERMINISTIC not in per_run.columns:
        return pd.DataFrame(columns=columns)
    knobs = [c for c in runs.group_columns() if c in per_run.columns and c not in _DETERMINISM_COMPANIONS]
    settings = per_run.drop_duplicates("group").set_index("group")
    flag = settings[tracking.PARAM_DETERMINISTIC].astype(str)
    rows = []
    for strict, relaxed in itertools.product(settings.index[flag == "True"], settings.index[flag == "False"]):
        a, b = settings.loc[strict], settings.loc[relaxed]
        if a["framework"] != b["framework"] or not all(_same(a[k], b[k]) for k in knobs):
            continue
        interval = stats.bootstrap_ratio(
            per_run.loc[per_run["group"] == strict, TIME_METRIC],
            per_run.loc[per_run["group"] == relaxed, TIME_METRIC],
            seed=seed,
        )
        rows.append(
            [a["framework"], strict, relaxed, interval.n_a, interval.n_b, interval.ratio, interval.low, interval.high]
        )
    return pd.DataFrame(rows, columns=columns)


def _same(a: Any, b: Any) -> bool:
    return bool(pd.isna(a) and pd.isna(b)) or str(a) == str(b)


def figures(report: Report) -> dict[str, Figure]:
    """The report's figures by file stem (the reference's figure numbers in the comments)."""
    per_run, history, evaluations = report.per_run, report.history, report.evaluations
    loss_name = report.workload.loss_name
    made = {
        # What people look for first: the groups against each other on one axis each.
        "learning_curves_together": plots.learning_curves_together(history, loss_name),
        "time_vs_loss": plots.time_vs_loss(per_run, loss_name),
        "memory_over_run": plots.memory_over_run(history),
        "learning_curves": plots.learning_curves(history, loss_name),  # 7-1, 7-5
        "min_loss_vs_epochs": plots.min_loss_vs_epochs(per_run, loss_name),  # 7-2
        "training_times": plots.training_times(per_run),  # 7-3
        "epochs_trained": plots.epochs_trained(per_run),  # 7-4
        "epoch_times": plots.epoch_times(history),  # 7-6
        "losses": plots.losses(per_run, loss_name),  # 7-7
        "memory": plots.memory(per_run),  # 7-8, 7-9
    }
    if not evaluations.empty:
        made["prediction_time"] = plots.prediction_time(evaluations)  # 7-10
        made["test_loss"] = plots.test_loss(evaluations, report.baseline, report.workload.loss_name)  # 7-11
    if not report.predictions.empty and report.workload.predicted_vs_true is not None:
        made["predicted_vs_true"] = plots.predicted_vs_true(report.predictions, report.workload.predicted_vs_true[2])
    for row in evaluations.to_dict("records") if CONFUSION_COLUMN in evaluations else []:
        title = f"{row['group']}, seed {row['seed']}: test split"
        made[f"confusion_{row['group']}"] = confusion_matrix_figure(np.asarray(row[CONFUSION_COLUMN]), title)
    return made


# -------------------------------------------------------------------------------------------- writing


def write_report(report: Report, directory: str | Path, *, dpi: int = 110) -> list[Path]:
    """Write every file of the report into ``directory`` (created); returns the paths written."""
    out = Path(directory)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def write(name: str, text: str) -> None:
        path = out / name
        path.write_text(text)
        written.append(path)

    write("table.csv", report.table.to_csv())
    write("table.md", table_markdown(report.table))
    write("table.html", table_html(report.table))
    write("runs.csv", report.per_run.to_csv(index=False))
    write("history.csv", report.history.to_csv(index=False))
    write("evaluations.csv", report.evaluations.to_csv(index=False))
    write("statistics.csv", report.summary.to_csv(index=False))
    write("comparisons.csv", report.comparisons.to_csv(index=False))
    write("determinism.csv", report.determinism.to_csv(index=False))
    if not report.predictions.empty:
        write("predictions.csv", report.predictions.to_csv(index=False))
    figure_paths = {}
    for stem, figure in figures(report).items():
        path = out / "figures" / f"{stem}.png"
        figure.savefig(path, dpi=dpi)
        figure_paths[stem] = path.relative_to(out)
        written.append(path)
    write("report.md", report_markdown(report, figure_paths))
    write("report.html", report_html(report, out, figure_paths))
    return written


def table_markdown(table: pd.DataFrame) -> str:
    """The comparison table as a GitHub Markdown table, values formatted with their units."""
    return markdown_table(_formatted(table))


def table_html(table: pd.DataFrame) -> str:
    """The comparison table as an HTML table (values formatted with their units, escaped)."""
    return _formatted(table).to_html(index=False, classes="thread-bench-comparison", border=0) + "\n"


#: The report page's look: readable tables and figures as wide as the page, nothing fetched from elsewhere.
_HTML_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; line-height: 1.45; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
code { background: #f6f6f6; padding: 0 0.2em; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
"""


def report_html(report: Report, directory: Path, figure_paths: Mapping[str, Path]) -> str:
    """The report as one HTML page with every figure embedded (``data:`` URIs), so that it shows whole in MLflow's
    artifact viewer, a mail or a browser with nothing beside it; the text is :func:`report_markdown`'s."""

    def embedded(relative: str) -> str:
        payload = base64.b64encode((directory / relative).read_bytes()).decode("ascii")
        return f"data:image/png;base64,{payload}"

    body = (
        MarkdownIt("commonmark", {"html": False})
        .enable("table")
        .render(report_markdown(report, figure_paths, link=embedded))
    )
    title = html.escape(f"{report.workload.name}: comparison report")
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{title}</title>\n'
        f"<style>{_HTML_STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n"
    )


def report_markdown(
    report: Report, figure_paths: Mapping[str, Path], *, link: Callable[[str], str] = lambda path: path
) -> str:
    """The report in Markdown; ``link`` turns a figure's path (relative to the report folder) into its reference
    (:func:`report_html` embeds it)."""
    lines = ["# Keras vs PyTorch: comparison report", ""]
    lines += [f"- **{key}**: {value}" for key, value in report.context.items()]
    lines += ["", "## Verdicts", "", *verdict_lines(report)]
    lines += [
        "",
        "## Performance comparison (Table 7-1 of the reference study)",
        "",
        table_markdown(report.table),
        "",
        "Averages are means over each group's runs; the minimal losses are minima over them, and the validation "
        "loss is also given as mean, standard deviation and worst over the seeds; test rows "
        "belong to the run with the lowest validation loss, evaluated on the test split of the same prepared "
        "dataset. Steady-state times are the median over the epochs after the first; the first epoch (tracing, "
        "compilation, warm-up) is listed apart. Host memory is the peak resident set size of the training "
        "process; GPU memory is the framework allocator's peak (not the memory a framework reserves).",
    ]
    if report.baseline is not None:
        lines += ["", report.baseline.note]
    if report.held_out is not None:
        lines += ["", "## Held-out styles (generalisation)", "", report.held_out.note, ""]
        lines += [f"- {line}" for line in report.held_out.lines]
        lines += ["", report.held_out.markdown.rstrip()]
        figures_ = [name for name in report.held_out.files if name.endswith(".png")]
        lines += [f"![held-out {Path(name).stem}]({link(f'{HELD_OUT_DIR}/{name}')})" for name in figures_]
    lines += ["", "## Statistics across seeds", "", *_statistics_lines(report)]
    lines += ["", "## The cost of determinism", "", *_determinism_lines(report.determinism)]
    if figure_paths:
        lines += ["", "## Figures", ""]
        for stem, path in figure_paths.items():
            lines += [f"![{stem.replace('_', ' ')}]({link(path.as_posix())})", ""]
    return "\n".join(lines).rstrip() + "\n"


def verdict_lines(report: Report) -> list[str]:
    """The verdicts (:func:`verdicts`) as a Markdown list, after one line naming the processors the runs were
    measured on and the rule."""
    where = _distinct(report.per_run, "cpu") or "an unrecorded processor"
    devices = _distinct(report.per_run, "device")
    lines = [
        f"Measured on {where}" + (f" (device: {devices})" if devices else "") + ". A group beats another only "
        f"beyond the seeds' spread: each has at least {stats.MIN_SEEDS_FOR_VERDICT} runs and the worst of one is "
        "better than the best of the other (for speed: the bootstrap interval of the time ratio excludes 1). A "
        "per-seed loss is the processor's arithmetic as much as the seed's: the same seed moves between "
        "processors.",
        "",
    ]
    return lines + [f"- {sentence}" for sentence in verdicts(report)]


def verdicts(report: Report) -> list[str]:
    """The verdict sentences under the rule of :mod:`analysis.stats`: each pair of groups on validation loss,
    speed and host memory, then each group against the held-out baseline."""
    sentences = [] if not report.comparisons.empty else ["Only one group: nothing to compare."]
    for row in report.comparisons.itertuples(index=False):
        sentences += [str(row.loss_verdict), str(row.time_verdict), memory_verdict(report.per_run, row.a, row.b)]
    return sentences + variant_verdicts(report) + held_out_verdicts(report)


def variant_verdicts(report: Report) -> list[str]:
    """A sentence for each pair of frameworks whose speed verdicts point opposite ways in two variants (e.g.
    Keras faster in ``default``, PyTorch in ``tuned``): on a processor where PyTorch's default NCHW layout falls
    off a cliff, ``default`` measures that cliff, and a reader must not take it for a verdict on the framework.
    Only decided verdicts count (:func:`stats.time_verdict`'s rule)."""
    per_run, comparisons = report.per_run, report.comparisons
    needed = {"group", "framework", tracking.PARAM_VARIANT}
    if comparisons.empty or not needed <= set(per_run.columns):
        return []
    groups = per_run.drop_duplicates("group").set_index("group")
    faster: dict[tuple[str, str], dict[str, str]] = {}
    for row in comparisons.itertuples(index=False):
        (engine_a, variant_a), (engine_b, variant_b) = (_engine_and_variant(groups.loc[g]) for g in (row.a, row.b))
        if variant_a != variant_b or engine_a == engine_b or min(row.n_a, row.n_b) < stats.MIN_SEEDS_FOR_VERDICT:
            continue
        if row.time_ratio_high < 1.0 or row.time_ratio_low > 1.0:
            pair = (min(engine_a, engine_b), max(engine_a, engine_b))
            faster.setdefault(pair, {})[variant_a] = engine_a if row.time_ratio_high < 1.0 else engine_b
    where = _distinct(per_run, "cpu") or "an unrecorded processor"
    return [
        f"steady epoch time: which of {a} and {b} is faster depends on the variant on {where} ("
        + "; ".join(f"{winner} in `{variant}`" for variant, winner in sorted(winners.items()))
        + "): that is how each framework's kernels run this model under the variant's settings (memory layout, "
        "compilation, deterministic kernels) on this processor, not a verdict on the frameworks; compare them "
        "within one variant, and name it."
        for (a, b), winners in sorted(faster.items())
        if len(set(winners.values())) > 1
    ]


def _engine_and_variant(group: pd.Series) -> tuple[str, str]:
    """(``torch`` or ``keras (jax)``, the variant) of a group's first run."""
    framework, backend = str(group["framework"]), group.get(tracking.PARAM_BACKEND)
    engine = framework if pd.isna(backend) or backend == framework else f"{framework} ({backend})"
    return engine, str(group[tracking.PARAM_VARIANT])


def memory_verdict(per_run: pd.DataFrame, a: str, b: str) -> str:
    """Host memory (the training process' RSS peak) of two groups under the verdict rule."""
    metric = tracking.HOST_RSS_PEAK_BYTES
    if metric not in per_run:
        return f"host memory peak: {NOT_MEASURED}."
    values = {group: per_run.loc[per_run["group"] == group, metric] for group in (a, b)}
    called = stats.verdict("host memory peak", (a, values[a]), (b, values[b]), fmt=lambda v: _format(v, "bytes"))
    return called.sentence


def held_out_name(run: Mapping[str, Any]) -> str:
    """What the held-out test calls a run that is not its group's best: ``keras seed 1 (fad24406)``."""
    return f"{run['group']} seed {run['seed']} ({str(run['run_id'])[:8]})"


def held_out_verdicts(report: Report) -> list[str]:
    """Per group, its runs' held-out scores against the baseline's under the verdict rule (the baseline has no
    seed): empty without a held-out test. The test scored each group's best model under the group's name and the
    other runs under :func:`held_out_name`; a run it could not score is left out of its group."""
    held_out = report.held_out
    if held_out is None or not held_out.scores:
        return []
    best_run = {row["group"]: str(row["source_run_id"]) for _, row in report.evaluations.iterrows()}
    lines = []
    for group, frame in report.per_run.groupby("group", sort=True):
        names = [
            str(group) if run["run_id"] == best_run.get(group) else held_out_name(run)
            for run in frame.to_dict("records")
        ]
        scores = [held_out.scores[name] for name in names if name in held_out.scores]
        called = stats.verdict(
            held_out.score_name, (str(group), scores), (held_out.baseline_name, held_out.baseline_score)
        )
        lines.append(called.sentence)
    return lines


def _statistics_lines(report: Report) -> list[str]:
    """Medians, quartiles, ratio intervals and rank tests where every group has the seeds they need
    (:data:`analysis.stats.MIN_SEEDS_FOR_VERDICT`); otherwise what n there is and what n is needed."""
    counts = report.per_run.groupby("group").size()
    if counts.empty or counts.min() < stats.MIN_SEEDS_FOR_VERDICT:
        have = ", ".join(f"{group} {n}" for group, n in counts.items())
        return [
            f"Not computed: runs per group: {have}. A median with its interquartile range, a bootstrap interval "
            f"and a rank test need at least {stats.MIN_SEEDS_FOR_VERDICT} seeds in every group; a study with "
            f"`-P seeds={stats.MIN_SEEDS_FOR_VERDICT}` or more gives them. The per-run values are in `runs.csv`."
        ]
    return [markdown_table(_summary_wide(report.summary)), "", *_comparison_lines(report.comparisons)]


def _comparison_lines(comparisons: pd.DataFrame) -> list[str]:
    if comparisons.empty:
        return ["Only one group: nothing to compare."]
    rows = []
    for row in comparisons.itertuples(index=False):
        ratio = (
            f"{row.time_ratio:.3g} [{row.time_ratio_low:.3g}, {row.time_ratio_high:.3g}]"
            if math.isfinite(row.time_ratio)
            else NOT_MEASURED
        )
        test = (
            f"U = {row.u_statistic:.3g}, p = {row.p_value:.3g}, P({row.a} < {row.b}) ≈ {1 - row.effect:.2f}"
            if math.isfinite(row.p_value)
            else "n/a"
        )
        rows.append([f"{row.a} / {row.b}", f"{row.n_a} / {row.n_b}", ratio, test])
    frame = pd.DataFrame(
        rows,
        columns=[
            "groups (a / b)",
            "runs",
            "steady epoch time ratio a/b, 95 % bootstrap CI",
            "validation loss, Mann–Whitney U (two-sided)",
        ],
    )
    note = (
        "The ratio is of the groups' mean steady-state epoch times, with a percentile bootstrap over runs "
        f"({stats.BOOTSTRAP_RESAMPLES} resamples); with few runs the interval is wide or degenerate and the "
        "rank test cannot reach significance (two runs per group: the smallest possible p is 0.33)."
    )
    return [markdown_table(frame), "", note]


def _determinism_lines(determinism: pd.DataFrame) -> list[str]:
    if determinism.empty:
        return [
            f"{NOT_MEASURED}: no two groups of a framework differ in `deterministic` alone. A study measures it "
            "with `--variants default,nondeterministic` (same knobs, deterministic kernels off)."
        ]
    frame = pd.DataFrame(
        {
            "framework": determinism["framework"],
            "deterministic / non-deterministic group": determinism["deterministic"]
            + " / "
            + determinism["nondeterministic"],
            "runs": determinism["n_a"].astype(str) + " / " + determinism["n_b"].astype(str),
            "steady epoch time ratio, 95 % bootstrap CI": [
                f"{r.ratio:.3g} [{r.low:.3g}, {r.high:.3g}]" for r in determinism.itertuples(index=False)
            ],
        }
    )
    note = (
        "A ratio above 1 is the slowdown that deterministic kernels cost that framework (PyTorch also stops "
        "cuDNN from benchmarking its convolution algorithms). It is reported apart because it belongs to the "
        "protocol, not to the framework comparison: compare frameworks within one variant."
    )
    return [markdown_table(frame), "", note]


def _summary_wide(summary: pd.DataFrame) -> pd.DataFrame:
    """Metric rows, group columns, cells ``median [q1, q3]`` formatted with the metric's unit."""
    if summary.empty:
        return pd.DataFrame()
    cells = summary.assign(
        cell=[
            f"{_format(r.median, _UNITS.get(r.metric, ''))} "
            f"[{_format(r.q1, _UNITS.get(r.metric, ''))}, {_format(r.q3, _UNITS.get(r.metric, ''))}]"
            for r in summary.itertuples(index=False)
        ]
    )
    wide = cells.pivot(index="metric", columns="group", values="cell")
    order = [m for m in STAT_METRICS if m in wide.index]
    wide = wide.loc[order].fillna(NOT_MEASURED)
    wide.index = [f"{m} (median [IQR])" for m in wide.index]
    return wide.reset_index(names="metric")


def _formatted(table: pd.DataFrame) -> pd.DataFrame:
    groups = [c for c in table.columns if c != "unit"]
    formatted = pd.DataFrame(
        {g: [_format(v, u) for v, u in zip(table[g], table["unit"], strict=True)] for g in groups},
        index=table.index,
    )
    return formatted.reset_index()


def _format(value: Any, unit: str) -> str:
    if unit == "text":
        return str(value) if value not in (None, "") else "—"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(number):
        return NOT_MEASURED
    if unit == "s":
        if number >= 3600:
            return f"{number / 3600:.2f} h"
        if number >= 120:
            return f"{number / 60:.1f} min"
        return f"{number:.3g} s"
    if unit == "bytes":
        for size, name in ((1024.0**3, "GiB"), (1024.0**2, "MiB"), (1024.0, "KiB")):
            if number >= size:
                return f"{number / size:.2f} {name}"
        return f"{number:.0f} B"
    if unit == "loss":
        # The reference's notation for its losses (around 0.01); large losses (short trainings) plainly.
        return f"{number * 1e3:.2f} × 10⁻³" if abs(number) < 0.1 else f"{number:.3f}"
    if unit == "count":
        return f"{number:.0f}"
    if unit == "epochs":
        return f"{number:.1f}"
    return f"{number:.3g} {unit}".strip()


def markdown_table(frame: pd.DataFrame) -> str:
    """A DataFrame as a Markdown (pipe) table, cells as ``str`` gives them (format numbers first).

    Written by ``DataFrame.to_markdown`` (tabulate), which keeps cells as they are: a ``|`` in a cell would
    end it and a newline would end the row, hence the escaping here. Number parsing is off so that a cell
    shows the text it was given.
    """
    if frame.empty:
        return "(no data)"

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    cells = frame.map(cell)
    cells.columns = [cell(c) for c in frame.columns]
    return str(cells.to_markdown(index=False, disable_numparse=True))
