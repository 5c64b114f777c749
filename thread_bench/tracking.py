"""MLflow conventions (docs/DESIGN.md §5): the stable names every workload shares, and a run that always ends with
a status.

Training, preprocessing and analysis import their keys from here, a workload's own from its ``keys`` module
(``thread_bench/workloads/<name>/keys.py``); no metric, param or tag name is spelled anywhere else. A config
field is logged under its own name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import mlflow
import psutil
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import LifecycleStage, Run, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from thread_bench import diskspace, lifecycle, store

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "thread-density"
#: Weave maps of whole radiographs and their comparisons (``weave_map``, ``weave_compare``): not trainings, so
#: nothing there competes for a champion.
WEAVE_EXPERIMENT = "weave-maps"

# Tags.
TAG_FRAMEWORK = "thread_bench.framework"
TAG_ROLE = "thread_bench.role"
TAG_DATASET_DIGEST = "thread_bench.dataset_digest"
TAG_SOURCE_RUN_ID = "thread_bench.source_run_id"
TAG_STUDY = "thread_bench.study"
TAG_FRAMEWORK_VERSION = "thread_bench.framework_version"
TAG_DEVICE = "thread_bench.device"
TAG_CPU = "thread_bench.cpu"
#: The instruction sets the run's CPU kernels were allowed (``cpu_isa`` and each library's cap) and the
#: processor's own highest level: why two runs of one seed may differ (``thread_bench/cpu_isa.py``).
TAG_CPU_ISA = "thread_bench.cpu_isa"
#: On a training run started by ``mlflow run``: the run MLflow created for the launch (see training.driver).
TAG_LAUNCH_RUN_ID = "thread_bench.launch_run_id"
#: On that launch run: the training run it led to.
TAG_TRAINING_RUN_ID = "thread_bench.training_run_id"
#: On a launch run of another entry point (preprocessing): the run it led to.
TAG_LINKED_RUN_ID = "thread_bench.linked_run_id"
#: On a launch run of ``mlflow run -e analysis`` / ``-e study``: the analysis or study run it led to.
TAG_ANALYSIS_RUN_ID = "thread_bench.analysis_run_id"
TAG_STUDY_RUN_ID = "thread_bench.study_run_id"
#: The process that runs the run (see lifecycle.ProcessIdentity): a RUNNING run whose process is gone is
#: reconciled (marked KILLED) by the next run in its experiment.
TAG_HOST = "thread_bench.host"
TAG_PID = "thread_bench.pid"
TAG_PROCESS_START = "thread_bench.process_start"
TAG_PROCESS_NAMESPACE = "thread_bench.process_namespace"
#: On a study's training run: which training of the study and which attempt at it (``torch/default/0#1``), so
#: that the study can end the run of an attempt lost with its machine (no pid to check there).
TAG_STUDY_TRAINING = "thread_bench.study_training"
#: Why a run ended other than FINISHED: ``signal SIGTERM``, the exception, or the reconciliation.
TAG_END_REASON = "thread_bench.end_reason"
#: MLflow's experiment-kind tag: the UI opens an experiment in its machine-learning view (runs, charts, models)
#: rather than its GenAI view (traces) when it reads ``custom_model_development`` here. Set on every experiment
#: the suite creates or writes to, unless someone chose a kind already.
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
#: On a finished training run a study took out of itself on resuming (its ``TAG_STUDY`` removed): that study, and
#: why (``commit 0123abcd4567 != 89ab…``, ``dataset digest differs …``, ``settings differ: epochs 3 != 5``).
TAG_SET_ASIDE_STUDY = "thread_bench.set_aside_study"
TAG_SET_ASIDE_REASON = "thread_bench.set_aside_reason"

ROLE_TRAIN = "train"
ROLE_PREPROCESS = "preprocess"
ROLE_EVALUATION = "evaluation"
ROLE_ANALYSIS = "analysis"
ROLE_STUDY = "study"
ROLE_PINGPONG = "pingpong"
ROLE_WEAVE_MAP = "weave_map"
ROLE_WEAVE_COMPARE = "weave_compare"

# Params (every framework).
PARAM_FRAMEWORK = "framework"
#: What is learned (``thread_bench.workloads``): ``thread_density`` or ``digits``.
PARAM_WORKLOAD = "workload"
PARAM_DATASET_DIGEST = "dataset_digest"
PARAM_BACKEND = "backend"
PARAM_PROFILE = "profile"
PARAM_PRECISION = "precision"
#: DataConfig.seed (the prepared dataset); ``seed`` is TrainConfig.seed (initialisation and shuffling).
#: The same name on the command line (``--data_seed``); see :func:`data_param`.
PARAM_DATA_SEED = "data_seed"
PARAM_DATASET_KEY = "dataset_key"
PARAM_N_TRAIN = "n_train"
PARAM_N_VAL = "n_val"
PARAM_N_TEST = "n_test"
PARAM_N_PARAMS = "n_params"
# Framework-specific knobs.
PARAM_JIT_COMPILE = "jit_compile"
PARAM_TF_MEMORY_GROWTH = "tf_memory_growth"
#: Whether TensorFlow ran its oneDNN kernels (``TF_ENABLE_ONEDNN_OPTS``; on unless the user turned it off).
PARAM_TF_ONEDNN = "tf_onednn"
PARAM_XLA_PREALLOCATE = "xla_preallocate"
PARAM_TORCH_COMPILE = "torch_compile"
PARAM_CHANNELS_LAST = "channels_last"
PARAM_COMPILE_MODE = "compile_mode"
#: The named set of knobs (``config.VARIANTS``) a training ran with.
PARAM_VARIANT = "variant"
#: TrainConfig.input_pipeline as resolved for this run (``device``, ``host`` or ``staged``; never ``auto``).
PARAM_INPUT_PIPELINE = "input_pipeline"
# Effective numerics, read back from the framework after ``precision`` was applied (not the request).
PARAM_COMPUTE_DTYPE = "compute_dtype"
PARAM_OUTPUT_DTYPE = "output_dtype"
PARAM_TF32_MATMUL = "tf32_matmul"
PARAM_TF32_CONV = "tf32_conv"
#: ``native`` (bf16 instructions in the CPU or GPU), ``emulated`` (a CPU without them) or ``unused``.
PARAM_BF16_HARDWARE = "bf16_hardware"
PARAM_TORCH_FP32_PRECISION = "torch_fp32_precision"
PARAM_TF_TENSOR_FLOAT_32 = "tf_tensor_float_32"
PARAM_JAX_MATMUL_PRECISION = "jax_default_matmul_precision"
PARAM_CUDNN_BENCHMARK = "cudnn_benchmark"
# The config dataclasses' fields, logged under their own names (``driver._log_setup``, the preprocessing):
# a field's name is its param's name, so these must equal them (tests/unit/test_tracking_names.py checks).
# TrainConfig.
PARAM_SEED = "seed"
PARAM_EPOCHS = "epochs"
PARAM_BATCH_SIZE = "batch_size"
PARAM_LEARNING_RATE = "learning_rate"
PARAM_LR_SCHEDULE = "lr_schedule"
PARAM_PATIENCE = "patience"
PARAM_MIN_DELTA = "min_delta"
PARAM_ADAM_EPSILON = "adam_epsilon"
PARAM_DETERMINISTIC = "deterministic"
PARAM_TRACEMALLOC = "tracemalloc"
PARAM_THREADS = "threads"
#: The instruction sets the CPU kernels were allowed: ``native`` or a cap (``TrainConfig.cpu_isa``).
PARAM_CPU_ISA = "cpu_isa"
PARAM_DEVICE_DATA_FRACTION = "device_data_fraction"
# A workload's data and model config fields are logged under their own names (a DataConfig's ``seed`` as
# ``data_seed``, :func:`data_param`); the analysis derives them from the dataclasses (analysis.runs.knob_params).
# The data config's ``source`` and the model config's ``implementation`` (its style in a framework) are common to
# every workload.
PARAM_SOURCE = "source"
PARAM_IMPLEMENTATION = "implementation"

# Per-epoch metrics (step = epoch, from 0).
TRAIN_LOSS = "train_loss"
VAL_LOSS = "val_loss"
EPOCH_TIME_S = "epoch_time_s"
TRAIN_TIME_S = "train_time_s"
VAL_TIME_S = "val_time_s"
LEARNING_RATE = "learning_rate"
HOST_RSS_PEAK_BYTES = "host_rss_peak_bytes"
GPU_MEM_PEAK_BYTES = "gpu_mem_peak_bytes"
GPU_MEM_NVML_BYTES = "gpu_mem_nvml_bytes"
#: Every per-epoch metric, in the order of ``history.csv``.
EPOCH_METRICS = (
    TRAIN_LOSS,
    VAL_LOSS,
    EPOCH_TIME_S,
    TRAIN_TIME_S,
    VAL_TIME_S,
    LEARNING_RATE,
    HOST_RSS_PEAK_BYTES,
    GPU_MEM_PEAK_BYTES,
    GPU_MEM_NVML_BYTES,
)

# Summary metrics.
BEST_VAL_LOSS = "best_val_loss"
BEST_EPOCH = "best_epoch"
MIN_TRAIN_LOSS = "min_train_loss"
EPOCHS_TRAINED = "epochs_trained"
TOTAL_TRAIN_TIME_S = "total_train_time_s"
MEDIAN_EPOCH_TIME_S = "median_epoch_time_s"
TRAIN_SAMPLES_PER_S = "train_samples_per_s"
HOST_PY_ALLOC_PEAK_BYTES = "host_py_alloc_peak_bytes"
#: The first epoch (tracing, compilation, warm-up), reported apart from ``median_epoch_time_s``.
FIRST_EPOCH_TIME_S = "first_epoch_time_s"
#: The steady state's (``training.common.steady_state``) median training and validation pass; logged since
#: the analysis reads them instead of recomputing them from the history (older runs lack them).
MEDIAN_TRAIN_TIME_S = "median_train_time_s"
MEDIAN_VAL_TIME_S = "median_val_time_s"
#: The kernel's lifetime peak RSS of the process (ru_maxrss): an upper bound for the sampled peaks.
HOST_MAXRSS_BYTES = "host_maxrss_bytes"
ARTIFACT_CONFUSION_FIGURE = "confusion_{split}.png"

# Artifacts of a training run.
ARTIFACT_HISTORY = "history.csv"
ARTIFACT_CONFIG = "config.json"
ARTIFACT_MODEL = "model"

# A logged model's loader settings (``model_config``, thread_bench.models.pyfunc), which MLflow also logs as params
# of the training run with their default, ``auto``.
PARAM_MODEL_DEVICE = "device"
PARAM_MODEL_KERAS_BACKEND = "keras_backend"

# Evaluation runs: params (also ``framework``, ``backend``, ``seed``, ``dataset_digest``, ``n_test``,
# ``batch_size``), metrics (also ``best_val_loss``, the source run's) and the predictions artifact.
PARAM_GROUP = "group"
PARAM_SOURCE_RUN_ID = "source_run_id"
PARAM_MODEL_URI = "model_uri"
PARAM_PREDICT_DEVICE = "predict_device"
#: Timed prediction passes (evaluation and analysis runs).
PARAM_REPEATS = "repeats"
ARTIFACT_PREDICTIONS = "predictions.csv"
TEST_LOSS = "test_loss"
PREDICT_TIME_S = "predict_time_s"
PREDICT_SAMPLES_PER_S = "predict_samples_per_s"
#: The first, cold prediction pass (tracing, allocator growth), reported apart from the warm median.
PREDICT_FIRST_TIME_S = "predict_first_time_s"

# Analysis runs: the FFT counter (non-learning baseline) on the same test split.
# Their params (also ``repeats``, ``batch_size``, ``dataset_digest``), counts and the report folder.
PARAM_EXPERIMENT = "experiment"
PARAM_STUDY = "study"
PARAM_FILTER = "filter"
PARAM_FFT_BASELINE = "fft_baseline"
PARAM_HELD_OUT = "held_out"
PARAM_BOOTSTRAP_SEED = "bootstrap_seed"
N_TRAINING_RUNS = "n_training_runs"
N_GROUPS = "n_groups"
ARTIFACT_REPORT = "report"
#: Whether the analysis may move an alias held by a version trained on another dataset (analysis.registry).
PARAM_PROMOTE = "promote"
#: On the analysis run: the registered model it registered into, the version ``@champion`` points to after it,
#: and the URI that loads that model (``models:/<name>@champion``); absent when the store refused registration.
TAG_REGISTERED_MODEL = "thread_bench.registered_model"
TAG_CHAMPION_VERSION = "thread_bench.champion_version"
TAG_CHAMPION_URI = "thread_bench.champion_uri"

# The model registry (analysis.registry, docs/DESIGN.md §5): the analysis registers each group's best model as a
# version of one registered model per experiment (:func:`registered_model_name`) and points aliases at the best
# by ``best_val_loss``, the criterion it selects runs by. A version's tags are its evaluation run's params and
# metrics under their own names (``framework``, ``backend``, ``group``, ``seed``, ``source_run_id``,
# ``dataset_digest``, ``best_val_loss``, ``test_loss`` and the workload's test metrics), and this one:
VERSION_TAG_EVALUATION_RUN_ID = "evaluation_run_id"
#: The overall best version: ``models:/<name>@champion``.
ALIAS_CHAMPION = "champion"
#: Each framework's best version (:func:`best_alias`): ``best-torch``, ``best-keras``, ``best-tensorflow``.
ALIAS_BEST_TEMPLATE = "best-{framework}"

# Study runs: params (also ``study``, ``precision``, ``backend``, ``profile``, ``data_seed``, ``epochs``) and
# what became of the trainings.
PARAM_SEEDS = "seeds"
PARAM_FRAMEWORKS = "frameworks"
PARAM_VARIANTS = "variants"
#: Where the trainings ran (``local`` or ``ray``, thread_bench.executors).
PARAM_EXECUTOR = "executor"
N_TRAINED = "n_trained"
N_SKIPPED = "n_skipped"
N_FAILED = "n_failed"
#: Attempts lost with their worker or node, and retried.
N_LOST = "n_lost"

# Preprocessing runs: params (every DataConfig field, ``profile``, ``dataset_key``, ``dataset_digest``, and
# these) and metrics (also ``n_train``/``n_val``/``n_test``, the sizes of the splits, and
# ``host_rss_peak_bytes``).
PARAM_SOURCE_DIGEST = "source_digest"
#: Whether an existing prepared dataset was reused instead of built.
PARAM_REUSED = "reused"
PREP_CORPUS_TIME_S = "corpus_time_s"
PREP_TIME_S = "prep_time_s"
PREP_TOTAL_TIME_S = "total_time_s"
#: The peak RSS of the preparation's worker processes (they run in parallel: reported apart).
HOST_RSS_PEAK_WORKERS_BYTES = "host_rss_peak_workers_bytes"


# Ping-pong runs (``thread_bench.pingpong``): params (also ``model``, ``frameworks``, ``epochs``, ``seed``,
# ``dataset_digest``), and per stage (step = stage number) each framework's scores on the test split, as
# ``<framework>_<quantity>`` (:func:`pingpong_metric`); the stages' table and confusion matrices as artifacts.


def data_param(field: str) -> str:
    """The param (and command-line option) of a DataConfig field: its own name, but ``data_seed`` for ``seed``,
    which a training's own seed takes."""
    return PARAM_DATA_SEED if field == "seed" else field


#: What a registered model's name cannot hold: MLflow refuses ``/`` and ``:`` (they would be read as a version or
#: stage in ``models:/<name>/<version>``), and a ``?`` would end the path of a ``models:/<name>@<alias>`` URI.
_MODEL_NAME_SEPARATORS = re.compile(r"[/:?]+")
#: What an alias cannot hold: MLflow allows letters, digits, ``_`` and ``-`` (``mlflow.utils.validation``; it also
#: refuses ``latest`` and ``v<digits>``, which name versions and cannot begin with ``best-``).
_NOT_IN_ALIAS = re.compile(r"[^\w-]+")


def registered_model_name(experiment: str) -> str:
    """The registered model the analyses of ``experiment`` register into: the experiment's own name, so that
    ``models:/thread-density@champion`` is the best thread-density model. With ``/``, ``:`` or ``?`` (which a
    model name cannot hold) replaced by ``-``, and ``-`` and blanks at either end dropped.

    One per experiment, because an experiment is one comparison: its runs are what an analysis compares, and a
    smoke or test experiment's models never compete with the real ones.

    Raises:
        ValueError: nothing usable is left of the name (``/``, ``.``).
    """
    name = _MODEL_NAME_SEPARATORS.sub("-", experiment).strip().strip("-").strip()
    if name in ("", ".", ".."):
        raise ValueError(f"experiment {experiment!r}: no registered model name can be made of it; use another name")
    return name


def best_alias(framework: str) -> str:
    """The alias of a framework's best version: ``best-torch``, with any character an alias cannot hold made ``-``
    (a registered framework's name is an identifier; a plug-in's need not be)."""
    return ALIAS_BEST_TEMPLATE.format(framework=_NOT_IN_ALIAS.sub("-", framework))


def alias_uri(name: str, alias: str = ALIAS_CHAMPION) -> str:
    """The URI that loads the version ``alias`` points to: ``models:/<name>@champion``."""
    return f"models:/{name}@{alias}"


def experiment_name(given: str | None, default: str = DEFAULT_EXPERIMENT) -> str:
    """``-P experiment=…`` wins, then ``MLFLOW_EXPERIMENT_NAME``, then the experiment ``mlflow run
    --experiment-name`` put its launch run in (:func:`launch_experiment`), then ``default`` (the workload's)."""
    if given:
        return given
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or launch_experiment() or default


#: MLflow's ``Default`` experiment, where ``mlflow run`` puts its launch run when told no other.
DEFAULT_EXPERIMENT_ID = "0"


#: The experiment ``mlflow run`` put its launch run in, as the environment said when this process started:
#: MLflow hands it to the entry point as ``MLFLOW_EXPERIMENT_ID`` beside ``MLFLOW_RUN_ID``. Read once, at import,
#: because ``mlflow.set_experiment`` later writes ``MLFLOW_EXPERIMENT_ID`` into the process's own environment.
_LAUNCH_EXPERIMENT_ID = os.environ.get("MLFLOW_EXPERIMENT_ID") if os.environ.get("MLFLOW_RUN_ID") else None


def launch_experiment() -> str | None:
    """The name of the experiment ``mlflow run --experiment-name`` (or ``--experiment-id``) chose for its launch
    run; ``None`` outside ``mlflow run``, when the launcher was given no experiment (its ``Default``: the
    workload's own experiment is then the better home, and :func:`tracked_run` says how to bring the launch run
    along), or when the store does not know it."""
    if _LAUNCH_EXPERIMENT_ID is None or _LAUNCH_EXPERIMENT_ID == DEFAULT_EXPERIMENT_ID:
        return None
    try:
        return str(mlflow.MlflowClient().get_experiment(_LAUNCH_EXPERIMENT_ID).name)
    except MlflowException as error:
        log.debug("the launch run's experiment %s: %s", _LAUNCH_EXPERIMENT_ID, error)
        return None


#: Attempts at finding or creating an experiment when other processes create it at the same moment.
_EXPERIMENT_ATTEMPTS = 5
#: The end reason is a tag value: MLflow keeps 5000 characters; a reason needs one line.
_REASON_CHARS = 500


def ensure_experiment(name: str) -> str:
    """The id of the active experiment ``name``, created if missing; safe when many processes race for it.

    ``mlflow.set_experiment`` is not: the process that loses the creation race gets the experiment back
    without making it active, and its run then lands in the Default experiment. Here the loser reads the
    winner's experiment back, and callers pass the id on. The experiment carries :data:`TAG_EXPERIMENT_KIND`, so that
    MLflow's UI opens it in its machine-learning view.

    Raises:
        ValueError: the experiment exists but is deleted.
    """
    client = mlflow.MlflowClient()
    for attempt in range(_EXPERIMENT_ATTEMPTS):
        found = client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage != LifecycleStage.ACTIVE:
                raise ValueError(
                    f"experiment {name!r} (id {found.experiment_id}) is deleted in {mlflow.get_tracking_uri()}; "
                    f"restore it (mlflow experiments restore --experiment-id {found.experiment_id}) or use another name"
                )
            if TAG_EXPERIMENT_KIND not in found.tags:  # made by `mlflow run` or by hand; a kind set stays
                _set_experiment_kind(client, found.experiment_id)
            return str(found.experiment_id)
        try:
            return str(client.create_experiment(name, tags={TAG_EXPERIMENT_KIND: EXPERIMENT_KIND}))
        except MlflowException as error:
            if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
            log.debug("experiment %r was created by another process meanwhile (attempt %d)", name, attempt + 1)
            time.sleep(0.05 * (attempt + 1))
    raise RuntimeError(f"experiment {name!r}: neither found nor created after {_EXPERIMENT_ATTEMPTS} attempts")


#: How each SQL store words the race in :func:`log_dataset_input`: PostgreSQL ``duplicate key value violates unique
#: constraint "dataset_pk"``, SQLite ``UNIQUE constraint failed: datasets.experiment_id, ...``, MySQL ``Duplicate
#: entry ... for key 'datasets.PRIMARY'``.
_DATASET_RACE = re.compile(r'"dataset_pk"|UNIQUE constraint failed: datasets\.|Duplicate entry .* for key \'datasets\.')
_DATASET_ATTEMPTS = 3


def log_dataset_input(source: str, name: str, digest: str, context: str = "training") -> None:
    """Log the dataset in folder ``source`` as the active run's input (MLflow's Datasets panel); safe when many
    runs of one experiment log the same dataset at once.

    ``mlflow.log_input`` is not: MLflow's SQL store looks the dataset (experiment, name, digest) up and inserts it
    when missing, in two steps, so the second of two runs that both found nothing fails on the first one's row
    (on a team server: eight trainings of one dataset started at once). Its transaction is rolled back whole, and
    a second attempt finds the row and only links it to the run.
    """
    with warnings.catch_warnings():
        # MLflow registers its local-file source for two URI schemes and warns that both match.
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        dataset_source = resolve_dataset_source(source)
    dataset = MetaDataset(source=dataset_source, name=name, digest=digest)  # type: ignore[abstract]
    for attempt in range(1, _DATASET_ATTEMPTS + 1):
        try:
            mlflow.log_input(dataset, context=context)
            return
        except MlflowException as error:
            if attempt == _DATASET_ATTEMPTS or not _DATASET_RACE.search(str(error)):
                raise
            log.debug("dataset %s was logged by another run meanwhile (attempt %d); linking it", name, attempt)
            time.sleep(0.05 * attempt)


def _set_experiment_kind(client: mlflow.MlflowClient, experiment_id: str) -> None:
    try:
        client.set_experiment_tag(experiment_id, TAG_EXPERIMENT_KIND, EXPERIMENT_KIND)
    except MlflowException as error:  # another process set it at the same moment; the UI's view is no reason to fail
        log.debug("experiment %s: the experiment kind was not set (%s)", experiment_id, error)


def process_tags(identity: lifecycle.ProcessIdentity | None = None) -> dict[str, str]:
    """The tags that name the process running a run (see :func:`process_of`)."""
    identity = identity or lifecycle.ProcessIdentity.current()
    return {
        TAG_HOST: identity.host,
        TAG_PID: str(identity.pid),
        TAG_PROCESS_START: repr(identity.start_time),
        TAG_PROCESS_NAMESPACE: identity.namespace,
    }


def process_of(run: Run) -> lifecycle.ProcessIdentity | None:
    """The process that ran ``run``, from its tags; None for a run without them (not started here)."""
    tags = run.data.tags
    if not all(tags.get(key) for key in (TAG_HOST, TAG_PID, TAG_PROCESS_START, TAG_PROCESS_NAMESPACE)):
        return None
    return lifecycle.ProcessIdentity(
        host=tags[TAG_HOST],
        pid=int(tags[TAG_PID]),
        start_time=float(tags[TAG_PROCESS_START]),
        namespace=tags[TAG_PROCESS_NAMESPACE],
    )


def quote(value: str) -> str:
    """A string literal for an MLflow search filter."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def training_filter(study: str | None = None, extra: str | None = None, *, finished: bool = True) -> str:
    """The search filter for (FINISHED) training runs, optionally of one study and with an extra clause: the one
    definition of "a finished training run", for the study and the analysis alike."""
    clauses = [f"tags.`{TAG_ROLE}` = {quote(ROLE_TRAIN)}"]
    if finished:
        clauses.append("attributes.status = 'FINISHED'")
    if study:
        clauses.append(f"tags.`{TAG_STUDY}` = {quote(study)}")
    if extra:
        clauses.append(extra)
    return " and ".join(clauses)


def all_pages(search: Callable[[str | None], Any]) -> list[Any]:
    """Every result of an MLflow search that answers page by page: ``search(page_token)`` returns one page (a
    ``PagedList`` with the next page's ``token``, ``None`` after the last)."""
    found: list[Any] = []
    token = None
    while True:
        page = search(token)
        found.extend(page)
        token = page.token
        if not token:
            return found


def running_runs(experiment_ids: list[str], extra_filter: str | None = None) -> list[Run]:
    """Every RUNNING run of the experiments (and ``extra_filter``), oldest first."""
    clauses = ["attributes.status = 'RUNNING'", *([extra_filter] if extra_filter else [])]
    client = mlflow.MlflowClient()
    return all_pages(
        lambda token: client.search_runs(
            experiment_ids, " and ".join(clauses), order_by=["attributes.start_time ASC"], page_token=token
        )
    )


def reconcile_runs(experiment_ids: list[str], extra_filter: str | None = None) -> list[str]:
    """Mark KILLED (with an end-reason tag) the RUNNING runs whose process is gone; returns their ids.

    Only runs whose process can be checked from here count (same host, boot and pid namespace); a run on
    another machine, or without process tags (``mlflow run``'s launch run), is left alone.
    """
    client = mlflow.MlflowClient()
    reconciled = []
    for run in running_runs(experiment_ids, extra_filter):
        owner = process_of(run)
        if owner is None or not owner.on_this_machine() or owner.alive():
            continue
        # Read again now that the process is known gone: it may have ended the run just before it exited.
        if client.get_run(run.info.run_id).info.status != RunStatus.to_string(RunStatus.RUNNING):
            continue
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        reason = f"reconciled: its process ({owner.describe()}) ended without ending the run; found at {now}"
        client.set_tag(run.info.run_id, TAG_END_REASON, reason)
        client.set_terminated(run.info.run_id, status=RunStatus.to_string(RunStatus.KILLED))
        log.warning("run %s was left RUNNING by %s, which is gone: marked KILLED", run.info.run_id, owner.describe())
        reconciled.append(run.info.run_id)
    return reconciled


def end_runs(runs: list[Run], status: str, reason: str) -> list[str]:
    """End ``runs`` (found RUNNING) with ``status`` and an end-reason tag; returns their ids. For runs whose
    process is known gone but cannot be checked by pid (another machine)."""
    client = mlflow.MlflowClient()
    for run in runs:
        client.set_tag(run.info.run_id, TAG_END_REASON, reason[:_REASON_CHARS])
        client.set_terminated(run.info.run_id, status=status)
        log.warning("run %s marked %s: %s", run.info.run_id, status, reason)
    return [run.info.run_id for run in runs]


def _top_level_placement(
    client: mlflow.MlflowClient, experiment: str | None, launch_run_id: str | None
) -> tuple[str, dict[str, str]]:
    """The experiment id of a top-level run (found or created; its stale runs reconciled) and the tags that
    tie it to an ``mlflow run`` launch run, if there is one."""
    name = experiment_name(experiment)
    experiment_id = _enter_experiment(name)
    tags: dict[str, str] = {}
    if launch_run_id:
        tags[TAG_LAUNCH_RUN_ID] = launch_run_id
        launched_in = client.get_run(launch_run_id).info.experiment_id
        if experiment_id == launched_in:
            tags[MLFLOW_PARENT_RUN_ID] = launch_run_id  # the UI shows this run under the launch run
        else:
            where = "the Default experiment" if launched_in == DEFAULT_EXPERIMENT_ID else f"experiment {launched_in}"
            log.warning(
                "`mlflow run` put its launch run %s in %s and this run is in %r; pass `--experiment-name %s` to "
                "mlflow run to keep the two together",
                launch_run_id,
                where,
                name,
                name,
            )
    return experiment_id, tags


@contextlib.contextmanager
def tracked_run(
    experiment: str | None,
    *,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    nested: bool = False,
    log_system_metrics: bool | None = None,
    launch_link_tag: str | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """Start an MLflow run that ends FINISHED, FAILED (exception) or KILLED (Ctrl-C, SIGTERM), never RUNNING.

    The store is checked first (:func:`thread_bench.store.open_store`), the experiment found or created by
    :func:`ensure_experiment` and the run started in it by id. The run carries its process
    (:func:`process_tags`); a top-level run first reconciles the runs of its experiment that an earlier
    process, killed outright, left RUNNING. A run that does not end FINISHED gets ``TAG_END_REASON``.

    **Under ``mlflow run``** (``MLFLOW_RUN_ID`` set), MLflow has already created a launch run and logged every
    MLproject parameter there as given, an unset one as ``''``. MLflow params cannot be changed afterwards, so
    the resolved values cannot go into that run: the command logs into a run of its own in ``experiment``,
    nested under the launch run when both share an experiment, and the two are linked by tags both ways
    (``TAG_LAUNCH_RUN_ID`` here, ``launch_link_tag`` on the launch run). Inside an active run, the new run is
    its child.
    """
    store.open_store()
    launch_run_id = os.environ.pop("MLFLOW_RUN_ID", None)
    launcher = _launcher() if launch_run_id else None
    nested = nested or mlflow.active_run() is not None
    client = mlflow.MlflowClient()
    experiment_id, all_tags = None, {**process_tags(), **(tags or {})}
    if not nested:
        experiment_id, launch_tags = _top_level_placement(client, experiment, launch_run_id)
        all_tags.update(launch_tags)
    run = None
    status, reason, lost = RunStatus.FAILED, None, False
    try:
        with lifecycle.deferred_signals():  # a run started is a run ended, whenever the signal comes
            run = mlflow.start_run(
                experiment_id=experiment_id,
                run_name=run_name,
                tags=all_tags,
                nested=nested,
                log_system_metrics=log_system_metrics,
            )
        STARTED.append(run.info.run_id)
        if launch_run_id and not nested:
            _link_launch_run(client, launch_run_id, run, launch_link_tag or TAG_LINKED_RUN_ID, launcher)
        yield run
        status = RunStatus.FINISHED
    except BaseException as error:
        status, reason = _classify(error)
        lost = isinstance(error, lifecycle.WorkLost)  # the command's last line says it: no warning besides
        if status == RunStatus.KILLED and not isinstance(error, KeyboardInterrupt | lifecycle.WorkLost):
            # Native code turned the interrupt into another exception (pybind11 under Keras): still a kill.
            signum = lifecycle.stop_signal()
            assert signum is not None
            raise lifecycle.Interrupted(signum) from error
        raise
    finally:
        if run is not None:
            with lifecycle.deferred_signals():
                _end_run(client, run, status, reason, announce=not lost)
                if launch_run_id and not nested and launcher is not None and not launcher.alive():
                    _end_launch_run(client, launch_run_id, launcher, run.info.run_id, status)


def _enter_experiment(name: str) -> str:
    """Find or create the experiment, make it the active one, check where its artifacts go, and reconcile the
    runs that killed processes left RUNNING in it; returns its id."""
    experiment_id = ensure_experiment(name)
    # Also the active experiment, as mlflow.set_experiment made it before (by id: no creation race).
    found = mlflow.set_experiment(experiment_id=experiment_id)
    store.check_artifact_location(mlflow.get_tracking_uri(), found.artifact_location)
    reconcile_runs([experiment_id])
    return experiment_id


def _classify(error: BaseException) -> tuple[int, str]:
    """(status, end reason) of a run left by ``error``: KILLED for a stop signal or work lost with its machines
    (``lifecycle.WorkLost``), FAILED otherwise (a full disk said as :class:`diskspace.DiskFullError` says it)."""
    if isinstance(error, KeyboardInterrupt) or lifecycle.stop_signal() is not None:
        return RunStatus.KILLED, lifecycle.describe_stop(error)
    if isinstance(error, lifecycle.WorkLost):
        return RunStatus.KILLED, str(error)[:_REASON_CHARS]
    full = diskspace.disk_full(error) if isinstance(error, Exception) else None
    cause = full if full is not None else error
    message = " ".join(str(cause).split())
    return RunStatus.FAILED, f"{type(cause).__name__}: {message}"[:_REASON_CHARS]


#: The runs this process started (:func:`tracked_run`), by id: an entry point says what became of them.
STARTED: list[str] = []

#: Runs this process could not end, by id, with why: the tracking server stopped answering, or the store's disk
#: is full. They stay RUNNING until a command reaches the store again and reconciles them (their process is
#: gone: KILLED).
UNENDED: dict[str, str] = {}


def _end_run(
    client: mlflow.MlflowClient, run: mlflow.ActiveRun, status: int, reason: str | None, *, announce: bool = True
) -> None:
    """Give ``run`` its end status (and reason). Unless it FINISHED, with MLflow's quick retry settings
    (:func:`store.quick_calls`): after SIGTERM or a lost server the process ends within seconds. A server that
    does not answer, or a store whose disk is full, leaves the run RUNNING, noted in :data:`UNENDED` (the entry
    point says so), and this process's side of it (the active-run stack, the system-metrics thread) ended all
    the same."""
    run_id = run.info.run_id
    with store.quick_calls() if status != RunStatus.FINISHED else contextlib.nullcontext():
        try:
            if reason is not None:
                client.set_tag(run_id, TAG_END_REASON, reason)
            active = mlflow.active_run()
            if active is not None and active.info.run_id == run_id:
                mlflow.end_run(RunStatus.to_string(status))  # also stops system metrics and flushes async logging
            else:
                client.set_terminated(run_id, status=RunStatus.to_string(status))
        except Exception as error:
            if store.unreachable(error) is not None:
                why = "the tracking server did not answer"
            elif diskspace.disk_full(error) is not None:
                why = "the store's disk is full"
            else:
                raise
            _drop_local_run(run_id)
            UNENDED[run_id] = why
            return
    if status == RunStatus.KILLED and announce:
        log.warning("interrupted (%s): run %s marked KILLED", reason, run_id)


def _drop_local_run(run_id: str) -> None:
    """Forget ``run_id`` in this process without the server: off MLflow's active-run stack, its system-metrics
    thread stopped (it would go on sending to a server that is gone)."""
    from mlflow.tracking import fluent

    while (active := mlflow.active_run()) is not None and active.info.run_id == run_id:
        fluent._active_run_stack.get().pop()
    monitor = fluent.run_id_to_system_metrics_monitor.pop(run_id, None)
    if monitor is not None:
        with contextlib.suppress(Exception):  # its last send fails quickly (quick_calls): nothing to add
            monitor.finish()


def ending_note() -> str:
    """What became of the runs this process started, for an entry point's last line."""
    if not UNENDED:
        return "no MLflow run is left RUNNING"
    runs = "; ".join(f"run {run_id} is left RUNNING ({why})" for run_id, why in UNENDED.items())
    return f"{runs}; the next command that reaches the store marks it KILLED"


def _launcher() -> lifecycle.ProcessIdentity | None:
    """The ``mlflow run`` launcher: this process's parent (with ``--env-manager local`` MLflow's shell execs the
    entry point's command, so the parent is the launcher itself)."""
    try:
        return lifecycle.ProcessIdentity.of(os.getppid())
    except psutil.NoSuchProcess:  # gone already
        return None


def _link_launch_run(
    client: mlflow.MlflowClient,
    launch_run_id: str,
    run: mlflow.ActiveRun,
    tag: str,
    launcher: lifecycle.ProcessIdentity | None,
) -> None:
    """Tie the launch run to ``run`` both ways, and give it its launcher's process tags: MLflow's launch runs
    carry none, so a launcher killed outright left its run RUNNING where no reconciliation would find it."""
    client.set_tag(launch_run_id, tag, run.info.run_id)
    for key, value in (process_tags(launcher) if launcher is not None else {}).items():
        client.set_tag(launch_run_id, key, value)
    client.set_tag(
        launch_run_id,
        "mlflow.note.content",
        f"Launch record of `mlflow run`: the parameters as given ('' = from the profile). The work itself, with "
        f"the resolved parameters, metrics and artifacts, is run {run.info.run_id} in experiment "
        f"{run.info.experiment_id}.",
    )


def _end_launch_run(
    client: mlflow.MlflowClient, launch_run_id: str, launcher: lifecycle.ProcessIdentity, run_id: str, status: int
) -> None:
    """End the launch run of a launcher that is gone (stopped by a signal: it ends nothing itself) like the work
    it started; one that still runs ends its run itself."""
    if client.get_run(launch_run_id).info.status != RunStatus.to_string(RunStatus.RUNNING):
        return
    ended = RunStatus.to_string(status)
    reason = f"its launcher, `mlflow run` ({launcher.describe()}), was stopped; run {run_id} ended {ended}"
    client.set_tag(launch_run_id, TAG_END_REASON, reason[:_REASON_CHARS])
    client.set_terminated(launch_run_id, status=ended)


def log_params(params: Mapping[str, Any]) -> None:
    """Log params, turning ``None`` into an empty string (MLflow rejects ``None``)."""
    mlflow.log_params({k: ("" if v is None else v) for k, v in params.items()})
