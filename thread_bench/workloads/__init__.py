"""The workloads the suite trains — what is learned: data, model, loss and metrics — as records.

A :class:`Workload` says which configuration dataclasses describe its data and its model, with their profiles;
how its dataset is prepared; which module holds its models in each framework (a module implementing
:class:`Models`); the NumPy reference of its loss; and how a model's outputs are scored. The training driver,
the trainers, the study and the analysis take a workload from :data:`WORKLOADS` and never name a particular one.

Adding a workload: a folder ``thread_bench/workloads/<name>/`` with its configs, data preparation, models per
framework, MLflow names (``keys.py``) and scores, and one call, :func:`register` (in :func:`_register_builtin`;
tests/integration/test_registration.py registers a toy one and trains it end to end; docs/DESIGN.md §8 lists the
files). Nothing here imports a framework: the models modules are imported by name once the process is set up for
their framework.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np

from thread_bench import cli
from thread_bench.data.prepared import DEFAULT_WORKLOAD

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from thread_bench.data.build import PrepareResult

#: ``implementation`` value meaning "the framework's first style" (a model config's default).
DEFAULT_IMPLEMENTATION = "default"


class Models(Protocol):
    """One workload's models in one framework (a module), as the trainers use them."""

    __name__: str

    def build_model(self, config: Any, precision: str = ..., implementation: str | None = ...) -> Any:
        """A freshly initialised model for ``config`` (float32 weights; ``bf16`` computes in bfloat16)."""
        ...

    def count_parameters(self, model: Any) -> int: ...

    def loss(self, predictions: Any, targets: Any) -> Any:
        """The training loss on framework tensors; ``targets`` are the float32 labels, ``(B, 1)``."""
        ...

    def predict(self, model: Any, images: np.ndarray, batch_size: int = ...) -> np.ndarray:
        """The model's outputs for uint8 ``(N, S, S)`` images, in inference mode, as float32 NumPy."""
        ...


@dataclass(frozen=True)
class Scores:
    """What a workload reports about a model's outputs on one split."""

    #: The training loss recomputed in NumPy (float64): the number the best epoch's ``val_loss`` must match.
    loss: float
    #: The workload's metrics, under their MLflow keys (constants of its ``keys`` module).
    metrics: dict[str, float]
    #: Arrays worth keeping as artifacts (a confusion matrix), by file name; empty when there are none.
    tables: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Baseline:
    """A non-learning method's scores on the test split, next to which the models are read (thread density: the
    spectral counter)."""

    #: What it is called in the report and its figures ("FFT baseline").
    name: str
    #: The workload's loss on the samples it could score.
    test_loss: float
    #: Its figures under the workload's MLflow keys (the analysis run logs them).
    metrics: dict[str, float]
    #: The report's rows: (label, unit, value).
    rows: tuple[tuple[str, str, float], ...]
    #: One sentence for the report: what it scored and what it had to assume.
    note: str


@dataclass(frozen=True)
class HeldOut:
    """A workload's test on data made with settings kept out of training, next to its baseline (thread density:
    canvases of styles the training corpus never draws, scored against the FFT counter)."""

    #: One sentence for the report: what was tested and how.
    note: str
    #: One line per model: how it fares against the baseline, and where it wins and loses.
    lines: tuple[str, ...]
    #: Per group: the metrics logged to that group's evaluation run, by the workload's keys.
    metrics: dict[str, dict[str, float]]
    #: The table by difficulty, in Markdown (the report embeds it).
    markdown: str
    #: The files written into the ``out_dir`` it was given (names relative to it).
    files: tuple[str, ...]
    #: The score every model had (by group, and by the names of the ``others`` it was given), lower is better.
    scores: dict[str, float] = field(default_factory=dict)
    #: The baseline's score on the same samples, and what the scores are (``"held-out nMAE"``).
    baseline_score: float = float("nan")
    score_name: str = "score"
    #: The baseline's name in sentences (``"the FFT"``).
    baseline_name: str = "the baseline"


@dataclass(frozen=True)
class Workload:
    """One workload: its data, its models per framework, its loss and its metrics."""

    #: The ``workload`` param of every run.
    name: str
    #: One line for ``--help`` and the README.
    description: str
    #: The MLflow experiment its runs go to unless one is given.
    experiment: str
    #: The frozen dataclasses of its data and model settings (their options are generated from them).
    data_config: type
    model_config: type
    #: Profile -> dataclass name -> overrides, like ``thread_bench.config.PROFILES`` (``TrainConfig`` included).
    profiles: Mapping[str, Mapping[str, Mapping[str, Any]]]
    #: Framework name -> the module implementing :class:`Models` for it; the frameworks it can be trained in.
    models: Mapping[str, str]
    #: ``prepare(data_config, root, workers) -> PrepareResult``: reuse or build the prepared dataset
    #: (atomically); ``workers`` (processes, ``None`` = all cores) where the preparation is parallel.
    prepare: Callable[[Any, str | Path | None, int | None], PrepareResult]
    #: ``score(outputs, labels, train_labels) -> Scores``: validation metrics and the baselines that need the
    #: training labels (predicting the training mean, or the most frequent class).
    score: Callable[[np.ndarray, np.ndarray, np.ndarray], Scores]
    #: ``evaluate(outputs, labels) -> Scores``: the test split's scores (the analysis' evaluation runs).
    evaluate: Callable[[np.ndarray, np.ndarray], Scores]
    #: ``prediction_columns(split, outputs)``: the columns of an evaluation's ``predictions.csv``.
    prediction_columns: Callable[[Any, np.ndarray], dict[str, np.ndarray]]
    #: The report's rows of this workload's test metrics: (label, unit, metric key of the evaluation).
    report_rows: tuple[tuple[str, str, str], ...]
    #: What the loss is called in figures and tables.
    loss_name: str
    #: ``summary(metrics) -> str``: the workload's part of the line printed after a training.
    summary: Callable[[Mapping[str, float]], str]
    #: The data config's ``source`` that the project makes or ships itself; any other must be a directory of
    #: ``source_directory`` (what it holds, for the error message).
    builtin_source: str
    source_directory: str
    #: ``implementations(framework, model_config)``: the styles the model is written in for that framework,
    #: the framework's default first (selected by the model config's ``implementation``, if it has one).
    implementations: Callable[[str, Any], tuple[str, ...]]
    #: ``manifest_metrics(manifest)``: what a preparation of this workload reports of itself, by MLflow key (the
    #: ``preprocess`` run logs it next to the shared timings and split sizes).
    manifest_metrics: Callable[[Mapping[str, Any]], dict[str, float]] = lambda manifest: {}
    #: ``baseline(dataset, data_config, data_root)``: a non-learning method scored on the test split of ``dataset``
    #: (``data_config``: the runs' data settings, ``None`` when they trained on a directory given as is); it raises
    #: ``FileNotFoundError`` or ``ValueError`` when it cannot be scored here. ``None``: the workload has none.
    baseline: Callable[[Any, Any, str | Path | None], Baseline] | None = None
    #: ``held_out(models, out_dir, others)``: the models (group -> model URI) and the baseline on samples made with
    #: settings kept out of training, its tables and figures written into ``out_dir``; it raises ``ValueError``
    #: naming a model it cannot load. ``others`` (name -> model URI: the groups' other seeds) are scored on the same
    #: samples for ``HeldOut.scores`` only; one that cannot load is left out with a warning. ``None``: the workload
    #: has no such test.
    held_out: Callable[[Mapping[str, str], Path, Mapping[str, str]], HeldOut] | None = None
    #: A file a ``source`` directory must hold to be this workload's (``None``: any directory).
    source_marker: str | None = None
    #: The module through which its logged models answer a user (:mod:`thread_bench.models.serving` says what it
    #: has; that module itself is the generic one: gray-level images of the model's side in, raw outputs out).
    serving: str = "thread_bench.models.serving"
    #: A regression's ``(true column, predicted column, unit)`` of :attr:`prediction_columns`: the report then plots
    #: predicted against true (a classifier has its confusion matrices instead).
    predicted_vs_true: tuple[str, str, str] | None = None

    @property
    def frameworks(self) -> tuple[str, ...]:
        return tuple(self.models)

    def models_for(self, framework: str) -> Models:
        """Import and return the framework's models module (only once the process is set up for it).

        Raises:
            ValueError: the workload has no models in ``framework``.
        """
        if framework not in self.models:
            raise ValueError(
                f"workload {self.name!r} cannot be trained in {framework} (it has models in {list(self.models)})"
            )
        return cast(Models, importlib.import_module(self.models[framework]))

    def check_source(self, data_config: Any) -> None:
        """Raise ``FileNotFoundError`` for a ``source`` that is neither built in nor a directory of this workload's."""
        source = data_config.source
        if source == self.builtin_source:
            return
        expected = f"expected {self.builtin_source!r} or {self.source_directory}"
        if not Path(source).is_dir():
            raise FileNotFoundError(f"--source {source!r}: no such directory ({expected})")
        if self.source_marker and not (Path(source) / self.source_marker).is_file():
            raise FileNotFoundError(f"--source {source!r}: no {self.source_marker} in it ({expected})")

    def implementation(self, framework: str, model_config: Any) -> str:
        """The implementation style ``model_config`` asks for in ``framework``, ``default`` resolved.

        Raises:
            ValueError: the workload has no models in ``framework``, or not in that style.
        """
        if framework not in self.models:
            raise ValueError(
                f"workload {self.name!r} cannot be trained in {framework} (it has models in {list(self.models)})"
            )
        styles = self.implementations(framework, model_config)
        asked = getattr(model_config, "implementation", DEFAULT_IMPLEMENTATION)
        if asked == DEFAULT_IMPLEMENTATION:
            return styles[0]
        if asked not in styles:
            raise ValueError(
                f"implementation={asked!r} does not fit the {self.name} workload in {framework} "
                f"(expected one of {list(styles)})"
            )
        return str(asked)


#: The workloads, by the name runs log as ``workload``; filled by :func:`register`, in this order.
WORKLOADS: dict[str, Workload] = {}


def register(workload: Workload) -> Workload:
    """Add ``workload`` to :data:`WORKLOADS`: the one line a new workload needs (below, or in a plug-in).

    Raises:
        ValueError: another workload already has its name.
    """
    if WORKLOADS.get(workload.name, workload) is not workload:
        raise ValueError(f"workload {workload.name!r} is registered already ({WORKLOADS[workload.name].description})")
    WORKLOADS[workload.name] = workload
    return workload


def names() -> tuple[str, ...]:
    """The registered workloads' names."""
    return tuple(WORKLOADS)


#: Modules (comma-separated) that register more workloads when imported: a plug-in outside this package. They are
#: imported in every process after the built-in ones, so the trainings and analyses a command starts as processes
#: (a study's, ``mlflow run``'s) know the plug-in's workloads too.
PLUGINS_ENV = "THREAD_BENCH_WORKLOADS"
#: Plug-in module -> why it could not be imported (reported when a workload is asked for and not found).
_FAILED_PLUGINS: dict[str, str] = {}


def _register_builtin() -> None:
    from thread_bench.workloads.digits import WORKLOAD as DIGITS
    from thread_bench.workloads.thread_density import WORKLOAD as THREAD_DENSITY

    register(THREAD_DENSITY)
    register(DIGITS)


def _register_plugins() -> None:
    """Import the modules :data:`PLUGINS_ENV` names. One that fails is remembered, not raised here (this runs when
    the package is imported, before a command can report anything in one line): :func:`get` names it."""
    for module in filter(None, (part.strip() for part in os.environ.get(PLUGINS_ENV, "").split(","))):
        try:
            importlib.import_module(module)
        except Exception as error:  # any error of a user's module: the command says it in one line
            _FAILED_PLUGINS[module] = f"{type(error).__name__}: {error}"
            log.warning("$%s: workload plug-in %r not registered (%s)", PLUGINS_ENV, module, _FAILED_PLUGINS[module])


_register_builtin()
_register_plugins()
#: What a run trains when no workload is given: the suite's original task, which is also what a prepared dataset
#: or a run from before workloads existed holds (one name for both).
DEFAULT = DEFAULT_WORKLOAD


def default_for(framework: str) -> Workload:
    """The workload a training in ``framework`` runs when none is given: :data:`DEFAULT`, or the first that has
    models in that framework (plain TensorFlow: digits)."""
    if framework in WORKLOADS[DEFAULT].models:
        return WORKLOADS[DEFAULT]
    return next(workload for workload in WORKLOADS.values() if framework in workload.models)


def add_option(parser: argparse.ArgumentParser) -> None:
    """``--workload``, described from the registry."""
    described = "; ".join(f"{w.name}: {w.description}" for w in WORKLOADS.values())
    parser.add_argument(
        "--workload",
        default=None,
        help=f"what is learned: {described} (default: {DEFAULT}, or the first workload the framework has models for)",
    )


def profiles_for(default: Workload | None = None) -> cli.ProfilesFor:
    """Where ``--help`` finds a config class' profiles (:func:`thread_bench.cli.add_profile_option`): a workload's
    own data or model config -> that workload's; a shared one (``TrainConfig``, a framework's options) -> the
    ``--workload`` on the command line, else ``default`` (else :data:`DEFAULT`)."""

    def profiles(namespace: argparse.Namespace, cls: type) -> Mapping[str, Mapping[str, Mapping[str, Any]]]:
        for workload in WORKLOADS.values():
            if cls in (workload.data_config, workload.model_config):
                return workload.profiles
        name = getattr(namespace, "workload", None)
        return (get(name) if name else default or WORKLOADS[DEFAULT]).profiles

    return profiles


def options_of(workload: Workload, *, data_prefixed: bool = True) -> set[str]:
    """The option names (destinations) of ``workload``'s data and model configs (a data config's ``seed`` is
    ``data_seed`` in a command that also trains: ``data_prefixed``)."""
    data = set(cli.data_options(workload.data_config).values()) if data_prefixed else _fields(workload.data_config)
    return data | _fields(workload.model_config)


def check_options(namespace: argparse.Namespace, workload: Workload, *, data_prefixed: bool = True) -> None:
    """Raise ``ValueError`` naming the first option given that belongs to other workloads, not to ``workload``."""
    own = options_of(workload, data_prefixed=data_prefixed)
    values = vars(namespace)
    for other in WORKLOADS.values():
        for name in sorted(options_of(other, data_prefixed=data_prefixed) - own):
            if values.get(name) not in (None, ""):
                raise ValueError(
                    f"--{name} is an option of the {other.name} workload, not of {workload.name} "
                    f"(pass --workload {other.name}, or leave it out)"
                )


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def get(name: str) -> Workload:
    if name not in WORKLOADS:
        failed = "; ".join(
            f"plug-in {module!r} of ${PLUGINS_ENV} failed: {why}" for module, why in _FAILED_PLUGINS.items()
        )
        raise ValueError(
            f"workload must be one of {list(WORKLOADS)}, got {name!r}" + (f" ({failed})" if failed else "")
        )
    return WORKLOADS[name]
