"""The ``study`` entry point: train N seeds x frameworks on one prepared dataset, then run the analysis.

python -m thread_bench.study [--workload thread_density|digits] [--model cnn3] [--study ID] [--seeds 3]
                             [--frameworks keras,torch] [--backend tensorflow]
                             [--variants default,nondeterministic,tuned] [--precision fp32]
                             [--profile laptop] [--data_seed N] [--source DIR] [--epochs N] [--experiment NAME]
                             [--out DIR] [--executor local|ray] [--ray_address HOST:PORT] [--retries 2]
                             [--cpus_per_training 1]

Every training run is tagged ``thread_bench.study=<ID>`` and nested under a ``study`` run. The study is
resumable: re-running the same command skips every (framework, backend, variant, seed) that already has a
FINISHED training run in the study made by the same code (the run's ``mlflow.source.git.commit`` tag equals
the commit of this checkout; no tag on either side, outside a git checkout, also counts as equal), on the same
dataset (``dataset_digest``) and with the same resolved settings (:func:`settings_params`), so an interrupted
study loses at most the training in progress. Any other finished run of the study is set aside (its study tag
moved to ``thread_bench.set_aside_study``, with ``thread_bench.set_aside_reason``: the run stays, out of the
study and its analysis) and its training, if this command asks for it, is run again, with one INFO line saying
why (``torch/default/0: re-run, settings differ: epochs 3 != 5``). Each variant forms its own group in the
analysis; one study has one precision (a comparison is made within one).

**Each training's settings are built once, here** (:class:`TrainingRequest`: the values this study gives it),
and resolved before any work (:func:`plan`) as the training will resolve them, so a bad value stops the study
at once, in one line naming the parameter. What crosses to the training's process (here, or on a Ray worker,
where only a command and its environment travel) is the training's ordinary command line, derived from the
request's fields (:func:`command_line`): the same command a person would type, logged as such.

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
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import RunStatus
from mlflow.utils.git_utils import get_git_commit
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_PARENT_RUN_ID

import thread_bench
from thread_bench import cli, executors, frameworks, lifecycle, store, tracking, workloads
from thread_bench.config import DEFAULT_VARIANT, TrainConfig, resolve, variant_names
from thread_bench.data.build import data_root
from thread_bench.data.prepared import PreparedDataset
from thread_bench.preparation import prepare_and_log
from thread_bench.training import driver

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
    #: The workload's data config, resolved: the dataset the study prepares.
    data: Any
    #: The values given for the trainings' configs, by field: ``TrainConfig`` (``epochs``, ``precision``), the
    #: workload's data config (an absolute ``source``) and model config. Each training gets them as given and
    #: resolves the rest from the profile and its variant (:class:`TrainingRequest`).
    train_given: Mapping[str, Any]
    data_given: Mapping[str, Any]
    model_given: Mapping[str, Any]
    epochs: int
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
#: What a finished training run is, for the resume: (framework, backend, variant, seed).
RunKey = tuple[str, str, str, int]


@dataclass(frozen=True)
class StudyOutcome:
    run_id: str
    trained: list[Training]
    skipped: list[Training]
    failed: list[Training]
    analysis_run_id: str | None


def label(training: Training) -> str:
    """``torch/default/0``: a training of a study, for people and tags."""
    framework, variant, seed = training
    return f"{framework}/{variant}/{seed}"


# ---------------------------------------------------------------------------------- a training's settings

#: :class:`TrainingRequest` field metadata: how a field's name (or, for a config's values, each field name)
#: becomes its option in the training's command line; ``None``: the field is not an option.
_OPTION = "option"


def _same_name(name: str) -> str:
    return name


@dataclass(frozen=True)
class TrainingRequest:
    """One training of a study as the study hands it over: built once per training (:func:`plan`), checked by
    :meth:`resolve` before any training starts, and turned into the training's command line by
    :func:`command_line`.

    It holds what the study gives the training, not the resolved configs: the training resolves the rest from
    its defaults, the profile and the variant, exactly as :meth:`resolve` does here (``driver.resolve_request``),
    so each default is defined once, in its dataclass, and the command stays the one a person would type.
    """

    #: Which entry point runs it (``python -m <entry_module>``): not an option.
    framework: str = field(metadata={_OPTION: None})
    workload: str
    profile: str
    variant: str
    experiment: str
    #: The values given, by field: ``TrainConfig`` (the training's ``seed`` at least), the workload's data
    #: config (options named by ``tracking.data_param``: ``--data_seed``) and model config, the framework's
    #: options (``backend`` where it takes one).
    train: Mapping[str, Any]
    data: Mapping[str, Any] = field(metadata={_OPTION: tracking.data_param})
    model: Mapping[str, Any]
    options: Mapping[str, Any]

    def resolve(self) -> driver.TrainRequest:
        """The settings the training will run with, resolved and checked as the training resolves its command line.

        Raises:
            ValueError, FileNotFoundError: a bad value, naming the parameter.
        """
        return driver.resolve_request(
            frameworks.get(self.framework),
            workloads.get(self.workload),
            self.profile,
            variant=self.variant,
            train=self.train,
            data=self.data,
            model=self.model,
            options=self.options,
            experiment=self.experiment,
        )


def command_line(request: TrainingRequest) -> list[str]:
    """The training entry point's options that say ``request``, derived from its fields: ``--<field>=<value>``,
    and for a config's values ``--<option>=<value>`` each (the entry point's options are generated from the same
    dataclasses, under the same names). With ``=``, a value that starts with ``-`` is still a value."""
    argv: list[str] = []
    for spec in dataclasses.fields(request):
        option: Callable[[str], str] | None = spec.metadata.get(_OPTION, _same_name)
        if option is None:
            continue
        value = getattr(request, spec.name)
        for name, item in value.items() if isinstance(value, Mapping) else [(spec.name, value)]:
            if item is not None:
                argv.append(f"--{option(name)}={str(item).lower() if isinstance(item, bool) else item}")
    return argv


def training_command(request: TrainingRequest) -> list[str]:
    """``python -m <the framework's entry module> <command_line(request)>``."""
    return [sys.executable, "-m", frameworks.get(request.framework).entry_module, *command_line(request)]


def training_request(settings: StudySettings, training: Training, backend: str | None = None) -> TrainingRequest:
    """The request for one training of the study (``backend``: another than the settings', to compare a run of
    the study made with it)."""
    framework, variant, seed = training
    takes_backend = frameworks.get(framework).backend_is_option
    return TrainingRequest(
        framework=framework,
        workload=settings.workload,
        profile=settings.profile,
        variant=variant,
        experiment=settings.experiment,
        train={**settings.train_given, "seed": seed},
        data=settings.data_given,
        model=settings.model_given,
        options={"backend": backend or settings.backend} if takes_backend else {},
    )


def plan(settings: StudySettings) -> dict[Training, TrainingRequest]:
    """Every training of the study with its request, seeds outermost, each resolved here once: a bad value
    stops the study before any work, in one line naming the parameter, not when its training starts.

    Seeds outermost: an interrupted study then holds about as many runs of each framework and variant.

    Raises:
        ValueError, FileNotFoundError: a value a training would refuse.
    """
    requests: dict[Training, TrainingRequest] = {}
    for seed in settings.seeds:
        for variant in settings.variants:
            for framework in settings.frameworks:
                request = training_request(settings, (framework, variant, seed))
                request.resolve()
                requests[(framework, variant, seed)] = request
    return requests


# -------------------------------------------------------------------------------------- resumability


@dataclass(frozen=True)
class FinishedRun:
    """A FINISHED training run of the study, as the resume reads it."""

    run_id: str
    #: Its params, as logged (text).
    params: Mapping[str, str]
    #: MLflow's ``mlflow.source.git.commit`` tag: the commit of the code it ran; ``None`` outside a git checkout.
    commit: str | None

    @property
    def key(self) -> RunKey:
        """(framework, backend, variant, seed); a run logged before variants existed counts as ``default``."""
        params = self.params
        framework, backend = params.get(tracking.PARAM_FRAMEWORK, ""), params.get(tracking.PARAM_BACKEND, "")
        variant = params.get(tracking.PARAM_VARIANT, DEFAULT_VARIANT)
        return framework, backend, variant, int(params.get(tracking.PARAM_SEED, -1))


@dataclass(frozen=True)
class Resume:
    """What a study does with its trainings, given its finished runs (:func:`pending`)."""

    todo: list[Training]
    skipped: list[Training]
    #: Finished runs of the study that are not what it would make now, taken out of it: run id -> why.
    set_aside: dict[str, str]


def current_commit() -> str | None:
    """The git commit of the code a training of this study runs (this ``thread_bench``'s checkout), found as
    MLflow finds the ``mlflow.source.git.commit`` of a run; ``None`` outside a git checkout (or without git).
    Uncommitted changes are not seen, as MLflow does not see them."""
    return get_git_commit(os.path.abspath(thread_bench.__file__))


def finished_runs(settings: StudySettings) -> list[FinishedRun]:
    """The study's FINISHED training runs (``tracking.training_filter``), oldest first; empty when none yet."""
    experiment = mlflow.get_experiment_by_name(settings.experiment)
    if experiment is None:
        return []
    runs = mlflow.search_runs(
        experiment_ids=[experiment.experiment_id],
        filter_string=tracking.training_filter(settings.study),
        order_by=["attributes.start_time ASC"],
        output_format="list",
    )
    assert isinstance(runs, list)
    return [FinishedRun(run.info.run_id, run.data.params, run.data.tags.get(MLFLOW_GIT_COMMIT)) for run in runs]


def settings_params(request: TrainingRequest) -> dict[str, str]:
    """A training's resolved settings, as the params it logs from its configs (text, as MLflow keeps them): the
    profile, the workload, and every field of its TrainConfig, model config and data config (the data's under
    their param names, ``input_size`` once, with the model's); ``implementation`` resolved as the training
    resolves it. ``input_pipeline`` counts only when it names one: ``auto`` leaves the choice to the training's
    machine, and the run logs what that machine chose. The framework options are not compared: a training logs
    what its framework made of them, under names of their own; the variant (in the run's key) and the commit
    fix them."""
    resolved = request.resolve()
    params = {tracking.PARAM_PROFILE: request.profile, tracking.PARAM_WORKLOAD: request.workload}
    params |= driver.config_params(resolved.train, resolved.model, dataclasses.asdict(resolved.data))
    if hasattr(resolved.model, tracking.PARAM_IMPLEMENTATION):
        workload = workloads.get(request.workload)
        params[tracking.PARAM_IMPLEMENTATION] = workload.implementation(request.framework, resolved.model)
    if resolved.train.input_pipeline == "auto":
        del params[tracking.PARAM_INPUT_PIPELINE]
    return {name: str(value) for name, value in params.items()}


def mismatch(run: FinishedRun, expected: Mapping[str, str], commit: str | None, digest: str) -> str | None:
    """Why ``run`` is not the training the study would make now; ``None`` when it is: the same commit (compared
    as they are: a run without a commit tag matches only a study outside a git checkout, where no code can be
    compared), the same dataset digest, and ``expected`` (:func:`settings_params`) among its params."""
    if run.commit != commit:
        return f"commit {_short(run.commit)} != {_short(commit)}"
    logged_digest = run.params.get(tracking.PARAM_DATASET_DIGEST)
    if logged_digest != digest:
        return f"dataset digest differs ({_short(logged_digest)} != {_short(digest)})"
    differ = [
        f"{name} {run.params.get(name, '(not logged)')} != {value}"
        for name, value in expected.items()
        if run.params.get(name) != value
    ]
    return f"settings differ: {', '.join(differ)}" if differ else None


def _short(value: str | None) -> str:
    return value[:12] if value else "none"


def _mismatch_of(
    settings: StudySettings,
    requests: Mapping[Training, TrainingRequest],
    run: FinishedRun,
    commit: str | None,
    digest: str,
) -> str | None:
    """:func:`mismatch` against what the study would make for the run's (framework, backend, variant, seed)."""
    framework, backend, variant, seed = run.key
    request = requests.get((framework, variant, seed))
    try:
        if request is None or backend != settings.backend_of(framework):
            request = training_request(settings, (framework, variant, seed), backend)
        return mismatch(run, settings_params(request), commit, digest)
    except (ValueError, FileNotFoundError) as error:
        return f"not a training of these settings ({error})"


def pending(
    settings: StudySettings,
    requests: Mapping[Training, TrainingRequest],
    done: Sequence[FinishedRun],
    commit: str | None,
    digest: str,
) -> Resume:
    """What to train (``requests``, in their order), what to skip, and which of the finished runs ``done``
    (oldest first) to set aside, each with one INFO line saying why.

    A training is skipped when a finished run of its (framework, backend, variant, seed) has the study's
    ``commit``, dataset ``digest`` and settings (:func:`mismatch`). Every finished run that does not is set
    aside, asked for now or not: a study's runs then share one code, one dataset and one protocol.
    """
    planned = {(f, settings.backend_of(f), v, s): (f, v, s) for f, v, s in requests}
    kept: set[RunKey] = set()
    mismatched: list[tuple[FinishedRun, str]] = []
    for run in done:
        why = _mismatch_of(settings, requests, run, commit, digest)
        if why is None:
            kept.add(run.key)
        else:
            mismatched.append((run, why))
    todo = [training for key, training in planned.items() if key not in kept]
    rerun: dict[Training, str] = {}  # the latest run's reason, one line per training
    for run, why in mismatched:
        training = planned.get(run.key)
        if training is not None and training in todo:
            rerun[training] = why
        else:
            framework, backend, variant, seed = run.key
            why += "; a matching run is kept" if training else "; not asked for by this command"
            log.info("%s (%s, run %s): set aside, %s", label((framework, variant, seed)), backend, run.run_id, why)
    for training, why in rerun.items():
        log.info("%s: re-run, %s", label(training), why)
    skipped = [training for key, training in planned.items() if key in kept]
    return Resume(todo, skipped, {run.run_id: why for run, why in mismatched})


def set_aside(settings: StudySettings, runs: Mapping[str, str]) -> None:
    """Take finished runs (run id -> why) out of the study: its tag removed, the study and the reason kept in
    tags of their own, so that neither a resume nor the analysis counts them; the runs themselves stay."""
    client = mlflow.MlflowClient()
    with lifecycle.deferred_signals():
        for run_id, why in runs.items():
            client.set_tag(run_id, tracking.TAG_SET_ASIDE_STUDY, settings.study)
            client.set_tag(run_id, tracking.TAG_SET_ASIDE_REASON, why)
            client.delete_tag(run_id, tracking.TAG_STUDY)


def take_stock(settings: StudySettings, requests: Mapping[Training, TrainingRequest], digest: str) -> Resume:
    """Compare the study's finished runs with what it would make now on the dataset ``digest`` (:func:`pending`)
    and set aside those that differ."""
    resume = pending(settings, requests, finished_runs(settings), current_commit(), digest)
    set_aside(settings, resume.set_aside)
    if resume.skipped:
        log.info(
            "resuming study %s: %d trainings already finished, %d to go",
            settings.study,
            len(resume.skipped),
            len(resume.todo),
        )
    return resume


# ------------------------------------------------------------------------------------------ training


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
    return f"{label(training)}#{attempt}"


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


def training_job(training: Training, request: TrainingRequest) -> executors.Job:
    framework, variant, seed = training
    return executors.Job(training, f"{framework} ({variant}) seed {seed}", tuple(training_command(request)))


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
    """Check every training's settings, prepare the data, train what is missing with ``executor`` (connected;
    default: the settings' one, connected and closed here), analyse (see the module docstring).

    Raises:
        ValueError: a setting a training would refuse (before any work); another process runs the study;
            nothing finished to analyse; the executor cannot run (an unreachable Ray cluster).
    """
    requests = plan(settings)
    if executor is not None:
        return _run_study(settings, requests, executor)
    store.open_store()  # an unusable tracking store is reported before the data is prepared
    executor = make_executor(settings)
    try:
        executor.connect(mlflow.get_tracking_uri())  # and an unreachable Ray cluster
        return _run_study(settings, requests, executor)
    finally:
        executor.close()


def _run_study(
    settings: StudySettings, requests: Mapping[Training, TrainingRequest], executor: executors.Executor
) -> StudyOutcome:
    """The study once its trainings are planned and its executor connected: one live process per study, the
    study run, the dataset, what is left to train, the trainings, the analysis."""
    store.open_store()
    experiment_id = tracking.ensure_experiment(settings.experiment)
    tracking.reconcile_runs([experiment_id])
    refuse_concurrent_study(settings, experiment_id)
    tags = {tracking.TAG_ROLE: tracking.ROLE_STUDY, tracking.TAG_STUDY: settings.study}
    analysis_run_id = None
    with tracking.tracked_run(
        settings.experiment, run_name=f"study-{settings.study}", tags=tags, launch_link_tag=tracking.TAG_STUDY_RUN_ID
    ) as active:
        study_run_id = active.info.run_id
        refuse_concurrent_study(settings, experiment_id, study_run_id)  # one started at the same moment
        _log_study_params(settings)
        dataset = _prepare(settings)
        resume = take_stock(settings, requests, dataset.digest)
        trained, failed = _train(settings, requests, resume, executor, study_run_id)
        _check_digests(settings, dataset.digest)
        if settings.analyze:
            analysis_run_id = analyse(settings, dataset.path, study_run_id)
            mlflow.set_tag(tracking.TAG_ANALYSIS_RUN_ID, analysis_run_id)
    return StudyOutcome(study_run_id, trained, resume.skipped, failed, analysis_run_id)


def _log_study_params(settings: StudySettings) -> None:
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


def _prepare(settings: StudySettings) -> PreparedDataset:
    """The study's dataset, prepared once, here, so that the trainings all reuse it (and no two of them build it
    at once)."""
    workload = workloads.get(settings.workload)
    return prepare_and_log(
        settings.data, settings.data_root, settings.experiment, profile=settings.profile, workload=workload
    )


def _train(
    settings: StudySettings,
    requests: Mapping[Training, TrainingRequest],
    resume: Resume,
    executor: executors.Executor,
    study_run_id: str,
) -> tuple[list[Training], list[Training]]:
    """Run the trainings left to do with ``executor`` and log the study's counts; returns (trained, failed)."""
    if resume.todo:
        log.info("study %s: %d trainings to run, %s", settings.study, len(resume.todo), executor.describe())
    endings = executor.run(
        [training_job(training, requests[training]) for training in resume.todo],
        lambda job, attempt: training_variables(settings, study_run_id, job.key, attempt),
        lambda ending: after_attempt(settings, study_run_id, ending),
    )
    trained = [ending.job.key for ending in endings if ending.succeeded]
    failed = [ending.job.key for ending in endings if not ending.succeeded]
    lost = sum(ending.attempt - (0 if ending.lost else 1) for ending in endings)
    mlflow.log_metrics(
        {
            tracking.N_TRAINED: len(trained),
            tracking.N_SKIPPED: len(resume.skipped),
            tracking.N_FAILED: len(failed),
            tracking.N_LOST: lost,
        }
    )
    return trained, failed


def _check_digests(settings: StudySettings, digest: str) -> None:
    """Every training must have used the study's dataset; a mismatch is a bug worth a loud message."""
    other = [run.run_id for run in finished_runs(settings) if run.params.get(tracking.PARAM_DATASET_DIGEST) != digest]
    if other:
        raise ValueError(
            f"study {settings.study!r}: runs {other} trained on another dataset than "
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
    parser = cli.Parser(
        prog="python -m thread_bench.study",
        description="Train every framework on several seeds (one prepared dataset, each training in its own "
        "process), tag the runs with a study id, then run the analysis. Re-running the same study skips the "
        "trainings that already finished.",
    )
    cli.add_profile_option(parser, workloads.profiles_for())
    cli.add_dataclass_options(parser, StudyOptions, helps=_OPTION_HELPS)
    cli.add_dataclass_options(parser, TrainConfig, include=("epochs", "precision", "cpu_isa"))
    for workload in workloads.WORKLOADS.values():  # passed on to every training
        cli.add_data_options(parser, workload.data_config, exclude=("input_size",))
        cli.add_dataclass_options(parser, workload.model_config, exclude=("input_size",))
    cli.add_experiment_option(parser)
    cli.add_verbose_option(parser)
    return parser


def settings_from_args(args: argparse.Namespace) -> StudySettings:
    """Resolve the options ("" = not given, as MLflow passes unset parameters); each training's own settings
    are checked by :func:`plan` when the study starts.

    Raises:
        ValueError: a malformed or out-of-range option.
    """
    options = StudyOptions(**cli.given(args, StudyOptions))
    workload = workloads.get(options.workload)
    workloads.check_options(args, workload)
    data_given = {k: v for k, v in cli.pick_data(args, workload.data_config).items() if v not in (None, "")}
    if data_given.get("source") not in (None, workload.builtin_source):
        # Absolute, so that the trainings (and a later resume from elsewhere) log the same source param.
        data_given["source"] = str(Path(data_given["source"]).resolve())
    train_given, model_given = cli.given(args, TrainConfig), cli.given(args, workload.model_config)

    def resolved(cls: type, given: Mapping[str, Any]) -> Any:
        return resolve(cls, args.profile, given, profiles=workload.profiles)

    train = resolved(TrainConfig, train_given)
    data = resolved(workload.data_config, data_given)
    model = resolved(workload.model_config, model_given)
    workload.check_source(data)
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
        train_given=train_given,
        data_given=data_given,
        model_given=model_given,
        epochs=train.epochs,
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
    return settings, run_study(settings)


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
