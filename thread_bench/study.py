"""The ``study`` entry point: train N seeds x frameworks on one prepared dataset, then run the analysis.

python -m thread_bench.study [--workload thread_density|digits] [--model cnn3] [--study ID] [--seeds 3]
                             [--frameworks keras,torch] [--backend tensorflow]
                             [--variants default,nondeterministic,tuned] [--precision fp32]
                             [--profile laptop] [--data_seed N] [--source DIR] [--epochs N] [--experiment NAME]
                             [--out DIR] [--executor local|ray] [--ray_address HOST:PORT] [--retries 2]
                             [--cpus_per_training 1]

Every training run is tagged ``thread_bench.study=<ID>`` and nested under a ``study`` run. The study is
resumable: re-running the same command skips every (framework, backend, variant, seed) that already has a
FINISHED training run in the study, so an interrupted study loses at most the training in progress. Each
variant forms its own group in the analysis; one study has one precision (a comparison is made within one).

**One live process per study.** A study refuses to start while another process still works on the same
study id (a RUNNING study or training run whose process is alive, or on another machine, where it cannot be
checked), naming that run and process: two would train the same (framework, seed) twice at once and spoil
both timings. RUNNING runs whose process is gone (killed outright) are first marked KILLED. Interrupting a
study (Ctrl-C, SIGTERM) stops its training with SIGTERM, so that run ends KILLED too; a training also dies
with its study if the study is killed outright (parent-death signal, Linux).

**Each training runs in a fresh subprocess** (``python -m thread_bench.<framework>_train``), never in this
process: Keras fixes its backend at its first import; the host memory peak and the kernel's ``ru_maxrss``
are per process, so a second training in the same process would report the first one's memory; framework
caches (traced graphs, allocator pools) would make later first epochs look faster than they are; and a
crash or an out-of-memory kill ends one training, not the study. The cost is the imports, a few seconds
per training. The analysis at the end runs in a process of its own too (``python -m analysis``), nested under
the study run: the study sits above the analysis and imports none of it.

**Where the trainings run** is the executor's business (``thread_bench.executors``): ``local`` runs them one
after another on this machine; ``ray`` runs each as a Ray task on a cluster (one GPU each, or CPUs), as many
at once as it has room for, logging to the shared tracking server. Each attempt's run is tagged
``thread_bench.study_training=<framework>/<variant>/<seed>#<attempt>``: when an attempt is lost with its
worker or node, where no pid can be checked, the study marks that run KILLED itself, and the executor
submits the training again. The dataset is prepared here first; a training on another machine prepares the
same bytes by the same key (preparation is deterministic) or reuses them, and the digest check below and the
analysis refuse a mix.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import RunStatus
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from thread_bench import cli, executors, frameworks, lifecycle, store, tracking, workloads
from thread_bench.config import DEFAULT_VARIANT, TrainConfig, resolve, variant_names
from thread_bench.data.build import data_root

log = logging.getLogger(__name__)

#: The backend of the frameworks that take one (Keras), unless ``--backend`` says otherwise.
_DEFAULT_BACKEND = next(f.default_backend for f in frameworks.FRAMEWORKS.values() if f.backend_is_option)
DEFAULT_SEEDS = 3
#: Seconds an interrupted study gives its child (a training, the analysis) to end its run (KILLED) after SIGTERM,
#: before SIGKILL.
CHILD_STOP_GRACE_S = 30.0
#: Times a training lost with its Ray worker or node is submitted again.
DEFAULT_RETRIES = 2


@dataclass(frozen=True)
class StudySettings:
    """What a study trains; see :func:`build_parser` for the meaning of each field."""

    study: str
    workload: str
    seeds: tuple[int, ...]
    frameworks: tuple[str, ...]
    backend: str
    variants: tuple[str, ...]
    precision: str
    profile: str
    #: The workload's data config, and the data and model options given (passed on to every training).
    data: Any
    passed: dict[str, Any]
    epochs: int
    epochs_given: bool
    experiment: str
    out: str | None
    data_root: Path
    analyze: bool
    #: Where the trainings run (thread_bench.executors): ``local`` or ``ray``, and the Ray options.
    executor: str = executors.DEFAULT
    ray_address: str = ""
    retries: int = DEFAULT_RETRIES
    cpus_per_training: int = 1

    def backend_of(self, framework: str) -> str:
        """The ``backend`` param a training of ``framework`` logs."""
        chosen = frameworks.get(framework)
        return self.backend if chosen.backend_is_option else chosen.default_backend


#: One training of a study: (framework, variant, seed).
Training = tuple[str, str, int]


@dataclass(frozen=True)
class StudyOutcome:
    run_id: str
    trained: list[Training]
    skipped: list[Training]
    failed: list[Training]
    analysis_run_id: str | None


# -------------------------------------------------------------------------------------- resumability


def finished_runs(settings: StudySettings) -> pd.DataFrame:
    """The study's FINISHED training runs (columns ``run_id``, ``framework``, ``backend``, ``variant``, ``seed``,
    ``profile``, ``data_seed``, ``epochs``, ``precision``, ``dataset_digest``); empty when there are none yet.
    Runs logged before variants existed count as ``default``, before precision as ``fp32``.

    Raises:
        ValueError: the study already holds runs of another profile, data seed, epoch budget or precision:
            resuming it with these settings would mix two experiments under one id.
    """
    experiment = mlflow.get_experiment_by_name(settings.experiment)
    columns = ["run_id", tracking.PARAM_FRAMEWORK, tracking.PARAM_BACKEND, tracking.PARAM_VARIANT, tracking.PARAM_SEED]
    columns += [tracking.PARAM_PROFILE, tracking.PARAM_DATA_SEED, tracking.PARAM_EPOCHS, tracking.PARAM_SOURCE]
    columns += [tracking.PARAM_PRECISION, tracking.PARAM_DATASET_DIGEST, tracking.PARAM_WORKLOAD]
    columns += [name for name in settings.passed if name not in columns]
    if experiment is None:
        return pd.DataFrame(columns=columns)
    raw = mlflow.search_runs(
        experiment_ids=[experiment.experiment_id],
        filter_string=tracking.training_filter(settings.study),
        output_format="pandas",
    )
    assert isinstance(raw, pd.DataFrame)
    if raw.empty:
        return pd.DataFrame(columns=columns)
    runs = pd.DataFrame(
        {
            "run_id": raw["run_id"],
            **{name: raw.get(f"params.{name}") for name in columns[1:]},
        }
    )
    runs["seed"] = pd.to_numeric(runs["seed"]).astype(int)
    runs["variant"] = runs["variant"].fillna(DEFAULT_VARIANT)
    runs["precision"] = runs["precision"].fillna(TrainConfig.precision).replace({"float32": "fp32"})
    runs[tracking.PARAM_WORKLOAD] = runs[tracking.PARAM_WORKLOAD].fillna(workloads.DEFAULT)
    expected = {
        **{name: str(value) for name, value in settings.passed.items()},
        tracking.PARAM_WORKLOAD: settings.workload,
        "precision": settings.precision,
        "profile": settings.profile,
        "data_seed": str(settings.data.seed),
        "epochs": str(settings.epochs),
        "source": settings.data.source
        if settings.data.source == workloads.get(settings.workload).builtin_source
        else str(Path(settings.data.source).resolve()),
    }
    for name, value in expected.items():
        other = runs[runs[name].notna() & (runs[name].astype(str) != value)]
        if not other.empty:
            found = sorted(set(other[name].astype(str)))
            raise ValueError(
                f"study {settings.study!r} already has training runs with {name}={found} (e.g. run "
                f"{other['run_id'].iloc[0]}), not {value}; use another --study id for other settings"
            )
    return runs[columns]


def pending(settings: StudySettings, done: pd.DataFrame) -> tuple[list[Training], list[Training]]:
    """(to train, already finished) as (framework, variant, seed), seeds outermost.

    Seeds outermost: an interrupted study then holds about as many runs of each framework and variant.
    """
    variants = done["variant"] if "variant" in done.columns else pd.Series(DEFAULT_VARIANT, index=done.index)
    finished = {
        (str(framework), str(backend), str(variant), int(seed))
        for framework, backend, variant, seed in zip(
            done["framework"], done["backend"], variants, done["seed"], strict=True
        )
    }
    todo: list[Training] = []
    skipped: list[Training] = []
    for seed in settings.seeds:
        for variant in settings.variants:
            for framework in settings.frameworks:
                key = (framework, settings.backend_of(framework), variant, seed)
                (skipped if key in finished else todo).append((framework, variant, seed))
    return todo, skipped


# ------------------------------------------------------------------------------------------ training


def training_command(settings: StudySettings, framework: str, variant: str, seed: int) -> list[str]:
    chosen = frameworks.get(framework)
    command = [sys.executable, "-m", chosen.entry_module, "--profile", settings.profile]
    command += ["--seed", str(seed), "--data_seed", str(settings.data.seed), "--experiment", settings.experiment]
    command += ["--variant", variant, "--precision", settings.precision, "--workload", settings.workload]
    if chosen.backend_is_option:
        command += ["--backend", settings.backend]
    for name, value in settings.passed.items():
        command += [f"--{name}", str(value)]
    if settings.epochs_given:
        command += ["--epochs", str(settings.epochs)]
    return command


def child_environment(settings: StudySettings, study_run_id: str) -> dict[str, str]:
    """The environment of a study's child process on this machine (the analysis; a local training adds its
    attempt's tag, :func:`training_variables`).

    ``MLFLOW_RUN_CONTEXT`` (MLflow's run-context provider: JSON tags added to every run the process starts)
    tags the child's run with the study and nests it under the study run, without the entry point needing to
    know about studies. ``MLFLOW_RUN_ID`` is removed: the child would take it for an ``mlflow run`` launch run.
    """
    environment = lifecycle.child_environment(os.environ)  # the child dies with this process
    environment.pop("MLFLOW_RUN_ID", None)
    environment.update(_study_variables(settings, {MLFLOW_PARENT_RUN_ID: study_run_id}))
    return environment


def _study_variables(settings: StudySettings, run_context: dict[str, str]) -> dict[str, str]:
    """The variables a study sets in its children's environment, wherever they run."""
    return {
        "MLFLOW_TRACKING_URI": store.absolute_uri(mlflow.get_tracking_uri()),
        "THREAD_BENCH_DATA": str(settings.data_root),
        "MLFLOW_RUN_CONTEXT": json.dumps({tracking.TAG_STUDY: settings.study, **run_context}),
    }


def attempt_tag(training: Training, attempt: int) -> str:
    """The ``TAG_STUDY_TRAINING`` value of one attempt at a training: ``torch/default/0#1``."""
    framework, variant, seed = training
    return f"{framework}/{variant}/{seed}#{attempt}"


def training_variables(settings: StudySettings, study_run_id: str, training: Training, attempt: int) -> dict[str, str]:
    """The study's variables for one attempt at a training (an executor adds them to the environment of the
    process it starts, here or on a Ray worker): the run context also names the attempt, so that the study can
    end the run of an attempt lost with its machine."""
    context = {MLFLOW_PARENT_RUN_ID: study_run_id, tracking.TAG_STUDY_TRAINING: attempt_tag(training, attempt)}
    return _study_variables(settings, context)


def run_child(settings: StudySettings, command: list[str], study_run_id: str) -> int:
    """Run a child of the study on this machine (the analysis) to completion; returns its exit status.

    Interrupted, the child gets SIGTERM and ``CHILD_STOP_GRACE_S`` to end its run, then SIGKILL. Either way,
    a run the child left RUNNING (it was killed outright) is marked KILLED afterwards.
    """
    try:
        return lifecycle.run_child(command, child_environment(settings, study_run_id), grace_s=CHILD_STOP_GRACE_S)
    finally:
        with lifecycle.deferred_signals():
            experiment_id = tracking.ensure_experiment(settings.experiment)
            tracking.reconcile_runs([experiment_id], _children_filter(study_run_id))


def _children_filter(study_run_id: str) -> str:
    return f"tags.`{MLFLOW_PARENT_RUN_ID}` = {tracking.quote(study_run_id)}"


def training_job(settings: StudySettings, training: Training) -> executors.Job:
    framework, variant, seed = training
    command = training_command(settings, framework, variant, seed)
    return executors.Job(training, f"{framework} ({variant}) seed {seed}", tuple(command))


def after_attempt(settings: StudySettings, study_run_id: str, ending: executors.Ending) -> None:
    """The study's bookkeeping after each attempt at a training: runs that a process of this machine left
    RUNNING are reconciled (by pid); a run of an attempt that did not succeed and is still RUNNING (its
    process was lost with its worker or node, or killed outright elsewhere) is marked KILLED with the reason."""
    with lifecycle.deferred_signals():
        experiment_id = tracking.ensure_experiment(settings.experiment)
        tracking.reconcile_runs([experiment_id], _children_filter(study_run_id))
        if ending.succeeded:
            return
        tag = attempt_tag(ending.job.key, ending.attempt)
        clause = f"{_children_filter(study_run_id)} and tags.`{tracking.TAG_STUDY_TRAINING}` = {tracking.quote(tag)}"
        left = tracking.running_runs([experiment_id], clause)
        if left:
            why = ending.reason or f"its process on {ending.host} ended with exit status {ending.status}"
            tracking.end_runs(left, RunStatus.to_string(RunStatus.KILLED), f"{why}, without ending the run")


def analysis_command(settings: StudySettings, dataset_dir: Path) -> list[str]:
    command = [sys.executable, "-m", "analysis", "--experiment", settings.experiment, "--study", settings.study]
    command += ["--workload", settings.workload]
    command += ["--dataset", str(dataset_dir), "--data_root", str(settings.data_root)]
    return command + (["--out", settings.out] if settings.out else [])  # StudySettings allows no out: the default


def analyse(settings: StudySettings, dataset_dir: Path, study_run_id: str) -> str:
    """Run the analysis of the study in a fresh process, like a training (nested under the study run, tagged
    with the study); returns the analysis run's id.

    A process of its own: the study sits above the analysis, and the analysis' evaluations load models of
    every framework, which a training-free process holds best.

    Raises:
        ValueError: the analysis failed (its own message is on stderr).
    """
    log.info("analysing study %s", settings.study)
    status = run_child(settings, analysis_command(settings, dataset_dir), study_run_id)
    if status != 0:
        raise ValueError(
            f"the analysis of study {settings.study!r} failed (exit status {status}); see its message above"
        )
    found = mlflow.search_runs(
        experiment_ids=[tracking.ensure_experiment(settings.experiment)],
        filter_string=f"tags.`{tracking.TAG_ROLE}` = {tracking.quote(tracking.ROLE_ANALYSIS)} and "
        + _children_filter(study_run_id),
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    assert isinstance(found, list)
    if not found:
        raise ValueError(f"the analysis of study {settings.study!r} finished without an analysis run")
    return str(found[0].info.run_id)


# ------------------------------------------------------------------------------ one live study process


def live_study_runs(settings: StudySettings, experiment_id: str) -> list[mlflow.entities.Run]:
    """RUNNING study and training runs of this study whose process is alive, or cannot be checked from here
    (another machine); oldest first. Call :func:`tracking.reconcile_runs` first to clear the dead ones."""
    runs = tracking.running_runs([experiment_id], f"tags.`{tracking.TAG_STUDY}` = {tracking.quote(settings.study)}")
    live = []
    for run in runs:
        if run.data.tags.get(tracking.TAG_ROLE) not in (tracking.ROLE_STUDY, tracking.ROLE_TRAIN):
            continue
        owner = tracking.process_of(run)
        if owner is None:
            log.warning(
                "run %s of study %s is RUNNING without process tags: cannot tell whether it is alive; ignored",
                run.info.run_id,
                settings.study,
            )
            continue
        if not owner.on_this_machine() or owner.alive():
            live.append(run)
    return live


def refuse_concurrent_study(settings: StudySettings, experiment_id: str, own_run_id: str | None = None) -> None:
    """Raise when another process works on this study: any live run before this study's run exists; after,
    only a study run that started before ``own_run_id`` (of two started at once, the first one goes on).

    Raises:
        ValueError: naming the other run, its role and process.
    """
    live = live_study_runs(settings, experiment_id)
    if own_run_id is not None:
        order = (mlflow.MlflowClient().get_run(own_run_id).info.start_time, own_run_id)
        live = [
            run
            for run in live
            if run.data.tags.get(tracking.TAG_ROLE) == tracking.ROLE_STUDY
            and (run.info.start_time, run.info.run_id) < order
        ]
    if live:
        other = live[0]
        owner = tracking.process_of(other)
        assert owner is not None
        where = owner.describe() if owner.on_this_machine() else f"{owner.describe()}, another machine"
        raise ValueError(
            f"study {settings.study!r} is already running: {other.data.tags.get(tracking.TAG_ROLE)} run "
            f"{other.info.run_id} ({where}) is RUNNING; wait for it or stop it (SIGTERM), then re-run this command"
        )


# --------------------------------------------------------------------------------------------- study


def make_executor(settings: StudySettings) -> executors.Executor:
    """The executor the settings name, not yet connected."""
    return executors.make(
        settings.executor,
        ray_address=settings.ray_address,
        retries=settings.retries,
        cpus_per_training=settings.cpus_per_training,
        grace_s=CHILD_STOP_GRACE_S,
    )


def run_study(settings: StudySettings, executor: executors.Executor | None = None) -> StudyOutcome:
    """Prepare the data, train what is missing with ``executor`` (connected; default: the settings' one,
    connected and closed here), analyse (see the module docstring).

    Raises:
        ValueError: the study id already holds runs of other settings; nothing finished to analyse; the
            executor cannot run (an unreachable Ray cluster).
    """
    if executor is None:
        executor = make_executor(settings)
        store.open_store()
        executor.connect(mlflow.get_tracking_uri())
        try:
            return run_study(settings, executor)
        finally:
            executor.close()
    from thread_bench.preparation import prepare_and_log

    store.open_store()
    experiment_id = tracking.ensure_experiment(settings.experiment)
    tracking.reconcile_runs([experiment_id])
    refuse_concurrent_study(settings, experiment_id)
    done = finished_runs(settings)
    todo, skipped = pending(settings, done)
    if skipped:
        log.info("resuming study %s: %d trainings already finished, %d to go", settings.study, len(skipped), len(todo))
    tags = {tracking.TAG_ROLE: tracking.ROLE_STUDY, tracking.TAG_STUDY: settings.study}
    analysis_run_id = None
    with tracking.tracked_run(
        settings.experiment, run_name=f"study-{settings.study}", tags=tags, launch_link_tag=tracking.TAG_STUDY_RUN_ID
    ) as active:
        study_run_id = active.info.run_id
        refuse_concurrent_study(settings, experiment_id, study_run_id)  # one started at the same moment
        tracking.log_params(
            {
                tracking.PARAM_STUDY: settings.study,
                tracking.PARAM_WORKLOAD: settings.workload,
                tracking.PARAM_SEEDS: ",".join(map(str, settings.seeds)),
                tracking.PARAM_FRAMEWORKS: ",".join(settings.frameworks),
                tracking.PARAM_VARIANTS: ",".join(settings.variants),
                tracking.PARAM_PRECISION: settings.precision,
                tracking.PARAM_BACKEND: settings.backend,
                tracking.PARAM_PROFILE: settings.profile,
                tracking.PARAM_DATA_SEED: settings.data.seed,
                tracking.PARAM_EPOCHS: settings.epochs,
                tracking.PARAM_EXECUTOR: settings.executor,
            }
        )
        # Prepared once, here, so the trainings all reuse it (and no two of them build it at once).
        workload = workloads.get(settings.workload)
        dataset = prepare_and_log(
            settings.data, settings.data_root, settings.experiment, profile=settings.profile, workload=workload
        )
        if todo:
            log.info("study %s: %d trainings to run, %s", settings.study, len(todo), executor.describe())
        endings = executor.run(
            [training_job(settings, training) for training in todo],
            lambda job, attempt: training_variables(settings, study_run_id, job.key, attempt),
            lambda ending: after_attempt(settings, study_run_id, ending),
        )
        trained = [ending.job.key for ending in endings if ending.succeeded]
        failed = [ending.job.key for ending in endings if not ending.succeeded]
        lost = sum(ending.attempt - (0 if ending.lost else 1) for ending in endings)
        mlflow.log_metrics(
            {
                tracking.N_TRAINED: len(trained),
                tracking.N_SKIPPED: len(skipped),
                tracking.N_FAILED: len(failed),
                tracking.N_LOST: lost,
            }
        )
        _check_digests(settings, dataset.digest)
        if settings.analyze:
            analysis_run_id = analyse(settings, dataset.path, study_run_id)
            mlflow.set_tag(tracking.TAG_ANALYSIS_RUN_ID, analysis_run_id)
    return StudyOutcome(study_run_id, trained, skipped, failed, analysis_run_id)


def _check_digests(settings: StudySettings, digest: str) -> None:
    """Every training must have used the study's dataset; a mismatch is a bug worth a loud message."""
    runs = finished_runs(settings)
    other = runs[runs["dataset_digest"] != digest]
    if not other.empty:
        raise ValueError(
            f"study {settings.study!r}: runs {list(other['run_id'])} trained on another dataset than "
            f"{digest[:16]}… (the study's); the analysis would refuse them"
        )


# ------------------------------------------------------------------------------------- command line


@dataclass(frozen=True)
class StudyOptions:
    """The study's own options, as given (the command line is generated from these fields); the data and
    training settings it shares with a training (``--profile``, ``--data_seed``, ``--source``, ``--epochs``,
    ``--precision``) come from the profile's dataclasses, as there."""

    study: str = ""
    workload: str = workloads.DEFAULT
    seeds: int = DEFAULT_SEEDS
    first_seed: int = 0
    #: Empty: every framework the workload has models in.
    frameworks: str = ""
    backend: str = _DEFAULT_BACKEND
    variants: str = DEFAULT_VARIANT
    out: str = ""
    data_root: str = ""
    analyze: bool = True
    executor: str = executors.DEFAULT
    ray_address: str = ""
    retries: int = DEFAULT_RETRIES
    cpus_per_training: int = 1

    def __post_init__(self) -> None:
        if self.executor not in executors.EXECUTORS:
            raise ValueError(f"--executor must be one of {list(executors.EXECUTORS)}, got {self.executor!r}")
        if self.retries < 0:
            raise ValueError(f"--retries must be >= 0, got {self.retries}")
        if self.cpus_per_training < 1:
            raise ValueError(f"--cpus_per_training must be >= 1, got {self.cpus_per_training}")
        if self.ray_address and self.executor != "ray":
            raise ValueError(f"--ray_address {self.ray_address!r} is an option of --executor ray, not {self.executor}")
        if self.seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {self.seeds}")
        if self.first_seed < 0 or self.first_seed + self.seeds > 2**32:
            raise ValueError(f"--first_seed {self.first_seed} with --seeds {self.seeds}: seeds must lie in [0, 2**32)")
        available = workloads.get(self.workload).frameworks  # ValueError naming the workloads
        unknown = sorted(set(self.framework_list) - set(available))
        if unknown or not self.framework_list:
            expected = list(available)
            raise ValueError(
                f"--frameworks: {unknown} not available for the {self.workload} workload; expected a "
                f"comma-separated subset of {expected}"
            )
        for framework in self.framework_list:
            chosen = frameworks.get(framework)
            if chosen.backend_is_option:
                chosen.options(backend=self.backend)  # type: ignore[call-arg]  # validates it, naming the choices
        unknown = sorted(set(self.variant_list) - set(variant_names()))
        if unknown or not self.variant_list:
            raise ValueError(f"--variants: unknown {unknown}; expected a comma-separated subset of {variant_names()}")

    @property
    def framework_list(self) -> tuple[str, ...]:
        return _items(self.frameworks) or workloads.get(self.workload).frameworks

    @property
    def variant_list(self) -> tuple[str, ...]:
        return _items(self.variants)


_OPTION_HELPS = {
    "study": "study id (default: [<workload>-<model>-]<profile>-<backend>-data<data_seed>, plus -<precision> unless "
    "fp32); reuse it to resume",
    "workload": f"what is learned: one of {list(workloads.names())}",
    "seeds": "number of seeds",
    "first_seed": "first training seed",
    "frameworks": "comma-separated subset of the frameworks (default: every framework the workload has models in)",
    "backend": "backend of the frameworks that take one (Keras)",
    "variants": f"comma-separated, from {variant_names()}; each is its own group",
    "out": "report folder (default: reports/<study>)",
    "data_root": "data root (default: $THREAD_BENCH_DATA or ./data)",
    "analyze": "run the analysis at the end (true/false)",
    "executor": f"where the trainings run: {' or '.join(executors.EXECUTORS)} (one after another on this machine, or "
    "as tasks on a Ray cluster)",
    "ray_address": "the Ray cluster (--executor ray): host:port of its head (`ray start --head --port PORT`), auto "
    "(the one started on this machine), or empty: $RAY_ADDRESS, else a new local Ray instance",
    "retries": "times a training lost with its Ray worker or node is submitted again",
    "cpus_per_training": "CPUs a training asks Ray for on a cluster without GPUs (with GPUs: one GPU each)",
}


def _items(text: str) -> tuple[str, ...]:
    """The distinct items of a comma-separated list, in order."""
    return tuple(dict.fromkeys(item.strip() for item in text.split(",") if item.strip()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m thread_bench.study",
        description="Train every framework on several seeds (one prepared dataset, each training in its own "
        "process), tag the runs with a study id, then run the analysis. Re-running the same study skips the "
        "trainings that already finished.",
    )
    cli.add_profile_option(parser)
    cli.add_dataclass_options(parser, StudyOptions, helps=_OPTION_HELPS)
    cli.add_dataclass_options(parser, TrainConfig, include=("epochs", "precision"))
    for workload in workloads.WORKLOADS.values():  # passed on to every training
        cli.add_data_options(parser, workload.data_config, exclude=("input_size",))
        cli.add_dataclass_options(parser, workload.model_config, exclude=("input_size",))
    cli.add_experiment_option(parser)
    cli.add_verbose_option(parser)
    return parser


def settings_from_args(args: argparse.Namespace) -> StudySettings:
    """Resolve the options ("" = not given, as MLflow passes unset parameters).

    Raises:
        ValueError: a malformed or out-of-range option.
    """
    options = StudyOptions(**cli.given(args, StudyOptions))
    workload = workloads.get(options.workload)
    cli.check_workload_options(args, workload)
    train = resolve(TrainConfig, args.profile, cli.given(args, TrainConfig), profiles=workload.profiles)
    data_overrides = {name: value for name, value in cli.pick_data(args, workload.data_config).items() if value != ""}
    if data_overrides.get("source") not in (None, workload.builtin_source):
        # Absolute, so that the trainings (and a later resume from elsewhere) log the same source param.
        data_overrides["source"] = str(Path(data_overrides["source"]).resolve())
    data = resolve(workload.data_config, args.profile, data_overrides, profiles=workload.profiles)
    workload.check_source(data)
    model = resolve(
        workload.model_config, args.profile, cli.given(args, workload.model_config), profiles=workload.profiles
    )
    for framework in options.framework_list:
        workload.implementation(framework, model)  # the model exists in every framework asked for
    passed = {tracking.data_param(k): v for k, v in data_overrides.items() if v is not None and k != "seed"}
    passed.update(cli.given(args, workload.model_config))
    suffix = f"-{train.precision}" if train.precision != TrainConfig.precision else ""
    prefix = "" if workload.name == workloads.DEFAULT else f"{workload.name}-{getattr(model, 'model', '')}-"
    study = options.study or f"{prefix}{args.profile}-{options.backend}-data{data.seed}{suffix}"
    return StudySettings(
        study=study,
        workload=workload.name,
        seeds=tuple(range(options.first_seed, options.first_seed + options.seeds)),
        frameworks=options.framework_list,
        backend=options.backend,
        variants=options.variant_list,
        precision=train.precision,
        profile=args.profile,
        data=data,
        passed=passed,
        epochs=train.epochs,
        epochs_given=args.epochs is not None,
        experiment=tracking.experiment_name(args.experiment or None, workload.experiment),
        out=options.out or str(Path("reports") / study),
        data_root=data_root(options.data_root or None).resolve(),
        analyze=options.analyze,
        executor=options.executor,
        ray_address=options.ray_address,
        retries=options.retries,
        cpus_per_training=options.cpus_per_training,
    )


def _study(args: argparse.Namespace) -> tuple[StudySettings, StudyOutcome]:
    settings = settings_from_args(args)
    store.open_store()  # an unusable tracking store is reported before the data is prepared
    executor = make_executor(settings)
    try:
        executor.connect(mlflow.get_tracking_uri())  # and an unreachable Ray cluster
        return settings, run_study(settings, executor)
    finally:
        executor.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = cli.start(parser, argv)
    # SIGTERM like Ctrl-C: the training is stopped, every run ends.
    status, done = cli.guarded(
        parser, lambda: _study(args), interrupted=": re-run the same command to resume the study"
    )
    if done is None:
        return status
    settings, outcome = done
    print(
        f"study {settings.study}: {len(outcome.trained)} trained, {len(outcome.skipped)} already finished, "
        f"{len(outcome.failed)} failed (study run {outcome.run_id})"
    )
    if outcome.analysis_run_id:
        print(f"report: {Path(settings.out or '') / 'report.md'} (analysis run {outcome.analysis_run_id})")
    if outcome.failed:
        print(f"failed trainings: {outcome.failed}; re-run the same command to retry them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
