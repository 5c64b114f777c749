"""The ``analysis`` entry point: best run per framework -> test split -> evaluation runs -> report.

python -m analysis [--experiment NAME] [--study ID] [--filter "params.profile = 'laptop'"] [--out DIR] [--promote true]

Selects the FINISHED training runs of an experiment (and study), groups them by framework (and by any
knob that differs within a framework), evaluates the best run of each group on the test split of the
prepared dataset they all trained on, logs one evaluation run per selected model and an analysis run that
holds the report (table, statistics, figures) as artifacts. The evaluated models are registered as versions of
the experiment's registered model, with ``@champion`` on the best (:mod:`analysis.registry`).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from analysis import evaluate, registry, report, runs
from thread_bench import cli, store, tracking, workloads
from thread_bench.config import PREDICT_BATCH_SIZE
from thread_bench.data.prepared import PreparedDataset
from thread_bench.workloads import Baseline, HeldOut

log = logging.getLogger(__name__)

#: Where reports go unless ``--out`` says otherwise: ``reports/<study or experiment>``.
DEFAULT_REPORTS_DIR = Path("reports")


@dataclass(frozen=True)
class AnalysisSettings:
    #: What the compared runs learned; picks the default experiment and the report's test rows.
    workload: str = workloads.DEFAULT
    experiment: str | None = None
    study: str | None = None
    #: An extra MLflow search clause, e.g. ``params.profile = 'laptop'``.
    filter: str | None = None
    out: str | None = None
    #: The prepared dataset directory (default: found from the runs; see ``runs.locate_dataset``).
    dataset: str | None = None
    data_root: str | None = None
    repeats: int = evaluate.DEFAULT_REPEATS
    batch_size: int = PREDICT_BATCH_SIZE
    fft_baseline: bool = True
    #: Also test each group's best model on data made with settings kept out of training (the workload's
    #: ``held_out``; thread density: canvases of styles training never saw, next to the FFT).
    held_out: bool = True
    #: Seeds the bootstrap.
    seed: int = 0
    #: Move an alias (``@champion``, ``best-<framework>``) held by a version trained on another dataset, whose
    #: validation loss does not compare (analysis.registry); without it such an alias stays.
    promote: bool = False

    def __post_init__(self) -> None:
        workloads.get(self.workload)  # ValueError naming the choices
        if self.repeats < 1:
            raise ValueError(f"--repeats must be >= 1, got {self.repeats}")
        if self.batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1, got {self.batch_size}")

    @property
    def out_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        return DEFAULT_REPORTS_DIR / (self.study or self.experiment_name)

    @property
    def experiment_name(self) -> str:
        return tracking.experiment_name(self.experiment, workloads.get(self.workload).experiment)


@dataclass(frozen=True)
class AnalysisResult:
    run_id: str
    out: Path
    report: report.Report
    #: group -> evaluation run id.
    evaluation_run_ids: dict[str, str]
    #: The registered versions and what became of each alias (or why nothing was registered).
    registration: registry.Registration


@dataclass(frozen=True)
class _Selection:
    """The training runs an analysis compares, and the prepared dataset they all trained on."""

    experiment: str
    runs: pd.DataFrame
    digest: str
    best: pd.DataFrame
    """The best run of each group (``runs.best_per_group``)."""
    dataset: PreparedDataset
    history: pd.DataFrame


def run_analysis(settings: AnalysisSettings) -> AnalysisResult:
    """Select, evaluate, report and log (see the module docstring).

    Raises:
        ValueError: no matching runs, runs on different datasets, a group without ``best_val_loss``.
        FileNotFoundError: the prepared dataset cannot be found or rebuilt.
    """
    tracking.registered_model_name(settings.experiment_name)  # a name no model can have: one line, before any work
    chosen = _select(settings)
    tags = {tracking.TAG_ROLE: tracking.ROLE_ANALYSIS, tracking.TAG_DATASET_DIGEST: chosen.digest}
    if settings.study:
        tags[tracking.TAG_STUDY] = settings.study
    name = f"analysis-{settings.study or chosen.experiment}"
    with tracking.tracked_run(
        chosen.experiment, run_name=name, tags=tags, launch_link_tag=tracking.TAG_ANALYSIS_RUN_ID
    ) as active:
        tracking.log_params(_analysis_params(settings, chosen.experiment, chosen.digest))
        evaluations, evaluation_run_ids, candidates, predictions = _evaluate_best(
            chosen.best, chosen.dataset, chosen.experiment, settings
        )
        registration = registry.try_register_best(candidates, experiment=chosen.experiment, promote=settings.promote)
        mlflow.set_tags(registration.run_tags())
        first = chosen.best.iloc[0].to_dict()
        workload = workloads.get(settings.workload)
        wanted = settings.fft_baseline and workload.baseline is not None
        baseline = _baseline(first, chosen.dataset, settings) if wanted else None
        out = settings.out_dir
        held_out = _held_out(candidates, chosen.runs, out, settings)
        context = _context(settings, chosen.experiment, chosen.runs, chosen.dataset, active.info.run_id)
        context["champion"] = registration.summary()
        built = report.build_report(
            chosen.runs,
            chosen.history,
            evaluations,
            baseline,
            context,
            seed=settings.seed,
            workload=workload,
            held_out=held_out,
            predictions=predictions,
        )
        report.write_report(built, out)
        for sentence in report.verdicts(built):
            log.info("verdict: %s", sentence)
        mlflow.log_metrics(_analysis_metrics(len(chosen.runs), len(chosen.best), baseline))
        mlflow.log_artifacts(str(out), artifact_path=tracking.ARTIFACT_REPORT)
        run_id = active.info.run_id
    return AnalysisResult(
        run_id=run_id, out=out, report=built, evaluation_run_ids=evaluation_run_ids, registration=registration
    )


def _select(settings: AnalysisSettings) -> _Selection:
    """The FINISHED training runs the settings select, grouped; their best per group, histories and dataset."""
    experiment = settings.experiment_name
    found = runs.search_training_runs(experiment, study=settings.study, extra_filter=settings.filter)
    selected = runs.assign_groups(runs.of_workload(found, settings.workload))
    digest = runs.require_single_dataset(selected)
    best = runs.best_per_group(selected)
    first = best.iloc[0].to_dict()
    dataset = runs.locate_dataset(
        first, digest, workloads.get(settings.workload), dataset_dir=settings.dataset, data_root=settings.data_root
    )
    history = runs.load_histories(selected)
    log.info(
        "%d training runs in %d groups (%s); test split of %s: %d images",
        len(selected),
        len(best),
        ", ".join(best["group"]),
        dataset.path,
        len(dataset.test),
    )
    return _Selection(experiment, selected, digest, best, dataset, history)


def _analysis_params(settings: AnalysisSettings, experiment: str, digest: str) -> dict[str, Any]:
    return {
        tracking.PARAM_EXPERIMENT: experiment,
        tracking.PARAM_STUDY: settings.study,
        tracking.PARAM_FILTER: settings.filter,
        tracking.PARAM_REPEATS: settings.repeats,
        tracking.PARAM_BATCH_SIZE: settings.batch_size,
        tracking.PARAM_FFT_BASELINE: settings.fft_baseline,
        tracking.PARAM_HELD_OUT: settings.held_out,
        tracking.PARAM_BOOTSTRAP_SEED: settings.seed,
        tracking.PARAM_DATASET_DIGEST: digest,
        tracking.PARAM_PROMOTE: settings.promote,
    }


def _analysis_metrics(n_training_runs: int, n_groups: int, baseline: Baseline | None) -> dict[str, float]:
    metrics = {tracking.N_TRAINING_RUNS: float(n_training_runs), tracking.N_GROUPS: float(n_groups)}
    return {**metrics, **(baseline.metrics if baseline is not None else {})}


def _evaluate_best(
    best: pd.DataFrame, dataset: PreparedDataset, experiment: str, settings: AnalysisSettings
) -> tuple[pd.DataFrame, dict[str, str], list[registry.Candidate], pd.DataFrame]:
    """Evaluate each group's best run and log its evaluation run: the evaluations (one row per group), the
    evaluation runs by group, the models as candidates for the registry, and a regression's predictions
    (``group``, ``true``, ``predicted``; empty for a classifier)."""
    workload = workloads.get(settings.workload)
    rows, run_ids, candidates, predictions = [], {}, [], []
    for source in best.to_dict("records"):
        evaluation, uri = evaluate.evaluate_run(
            source, dataset, repeats=settings.repeats, batch_size=settings.batch_size
        )
        run_id = evaluate.log_evaluation(
            source,
            evaluation,
            dataset.test,
            uri=uri,
            experiment=experiment,
            study=settings.study,
            workload=workloads.get(settings.workload),
            extra_params={tracking.PARAM_REPEATS: settings.repeats, tracking.PARAM_BATCH_SIZE: settings.batch_size},
        )
        log.info(
            "%s (seed %s): test loss %.4f, prediction %.3f s (%s); evaluation run %s",
            source["group"],
            source["seed"],
            evaluation.test_loss,
            evaluation.predict_time_s,
            evaluation.device,
            run_id,
        )
        run_ids[str(source["group"])] = run_id
        candidates.append(registry.Candidate.of(source, evaluation, model_uri=uri, evaluation_run_id=run_id))
        rows.append(
            {
                "group": source["group"],
                "framework": source["framework"],
                "backend": source.get("backend"),
                "seed": source["seed"],
                "source_run_id": source["run_id"],
                "evaluation_run_id": run_id,
                "predict_device": evaluation.device,
                "n_test": evaluation.n_test,
                **evaluation.metrics(),
                **_confusion(evaluation),
            }
        )
        if workload.predicted_vs_true is not None:
            true, predicted, _ = workload.predicted_vs_true
            columns = workload.prediction_columns(dataset.test, evaluation.predictions)
            frame = pd.DataFrame({"true": columns[true], "predicted": columns[predicted]})
            predictions.append(frame.assign(group=source["group"], seed=source["seed"]))
    predicted = pd.concat(predictions, ignore_index=True) if predictions else pd.DataFrame()
    return pd.DataFrame(rows), run_ids, candidates, predicted


def _confusion(evaluation: evaluate.Evaluation) -> dict[str, Any]:
    """The test confusion matrix of a classifier's evaluation, for the report's figures; nothing otherwise."""
    matrices = [table for name, table in evaluation.tables.items() if name.startswith("confusion")]
    return {report.CONFUSION_COLUMN: matrices[0]} if matrices else {}


def _baseline(run: Mapping[str, Any], dataset: PreparedDataset, settings: AnalysisSettings) -> Baseline | None:
    """The workload's non-learning baseline on the test split, or None (with a warning) when it cannot be scored
    here (the FFT counter without the patches' resolutions)."""
    workload = workloads.get(settings.workload)
    assert workload.baseline is not None  # asked for only then
    try:
        return workload.baseline(dataset, runs.data_config(run, workload), settings.data_root)
    except (FileNotFoundError, ValueError) as error:
        log.warning("no baseline: %s", error)
        return None


def _held_out(
    candidates: Sequence[registry.Candidate], selected: pd.DataFrame, out: Path, settings: AnalysisSettings
) -> HeldOut | None:
    """The workload's held-out test of each group's best model, its metrics logged to the group's evaluation run,
    and of every other selected run (named by ``report.held_out_name``, for the spread over seeds); None (with a
    warning) where the workload has none, it was not asked for, or a best model cannot take it."""
    workload = workloads.get(settings.workload)
    if not settings.held_out or workload.held_out is None:
        return None
    best = {c.source_run_id for c in candidates}
    others = {}
    for run in selected.to_dict("records"):
        if run["run_id"] not in best:
            try:
                others[report.held_out_name(run)] = evaluate.model_uri(run["run_id"])
            except ValueError as error:
                log.warning("held-out styles: run %s left out: %s", run["run_id"], error)
    try:
        result = workload.held_out({c.group: c.model_uri for c in candidates}, out / report.HELD_OUT_DIR, others)
    except ValueError as error:
        log.warning("no held-out test: %s", error)
        return None
    client = mlflow.MlflowClient()
    for candidate in candidates:
        for key, value in result.metrics[candidate.group].items():
            client.log_metric(candidate.evaluation_run_id, key, value)
    for line in result.lines:
        log.info("held-out styles: %s", line)
    return result


def _context(
    settings: AnalysisSettings, experiment: str, selected: pd.DataFrame, dataset: PreparedDataset, run_id: str
) -> dict[str, str]:
    """The scope of the report, listed at its top."""
    counts = ", ".join(f"{group}: {n}" for group, n in selected["group"].value_counts(sort=False).items())
    key = dataset.manifest.get("key", dataset.path.name)
    return {
        "experiment": experiment,
        "study": settings.study or "(all studies)",
        "filter": settings.filter or "(none)",
        "training runs": f"{len(selected)} ({counts})",
        "workload": settings.workload,
        "prepared dataset": f"{key} (digest {dataset.digest[:16]}…), test split {len(dataset.test)} images",
        "analysis run": run_id,
        "tracking URI": mlflow.get_tracking_uri(),
        "made": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


# ------------------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = cli.Parser(
        prog="python -m analysis",
        description="Compare the frameworks: pick the best FINISHED training run of each framework (by "
        "best_val_loss), evaluate it on the test split, log evaluation runs, register the evaluated models "
        "(@champion on the best) and write the report.",
    )
    cli.add_experiment_option(parser)
    parser.add_argument("--study", default=None, help="only runs tagged with this study id")
    parser.add_argument("--filter", default=None, help="extra MLflow search clause, e.g. \"params.profile = 'laptop'\"")
    parser.add_argument("--out", default=None, help="report folder (default: reports/<study or experiment>)")
    parser.add_argument("--dataset", default=None, help="prepared dataset directory (default: found from the runs)")
    cli.add_data_root_option(parser)
    helps = {
        "workload": f"what the compared runs learned: {', '.join(workloads.names())}",
        "repeats": "timed prediction passes over the test split after the warm-up pass; the median is reported",
        "batch_size": "prediction batch size",
        "fft_baseline": "also score the FFT thread counter on the test split (true/false)",
        "held_out": "also test each framework's best model on canvases of styles training never saw, next to the FFT "
        "(true/false)",
        "seed": "seed of the bootstrap",
        "promote": "move the @champion and best-<framework> aliases even when their version was trained on another "
        "dataset, whose validation loss does not compare (true/false)",
    }
    cli.add_dataclass_options(parser, AnalysisSettings, include=helps, helps=helps)
    cli.add_verbose_option(parser)
    return parser


def settings_from_args(args: argparse.Namespace) -> AnalysisSettings:
    """The settings given on the command line; ``None`` or ``""`` (MLflow's unset parameter) = the default."""
    given = {name: value for name, value in cli.pick(args, AnalysisSettings).items() if value not in (None, "")}
    return AnalysisSettings(**given)


def _analyse(args: argparse.Namespace) -> AnalysisResult:
    settings = settings_from_args(args)
    store.open_store()  # an unusable tracking store: one line, before any model is loaded
    return run_analysis(settings)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = cli.start(parser, argv)
    status, result = cli.guarded(parser, lambda: _analyse(args))  # SIGTERM: the analysis run ends KILLED
    if result is None:
        return status
    print(report.table_markdown(result.report.table))
    print()
    for line in result.registration.lines():  # one per alias; none when the store refused (a warning said so)
        print(line)
    if result.registration.champion is not None:
        print(f"champion: {result.registration.summary()}")
    print(f"report: {result.out / 'report.md'} (analysis run {result.run_id})")
    return 0
