"""MLflow conventions (DESIGN.md section 5): the stable names, and a run that always ends with a status.

Training, preprocessing and analysis import their keys from here; no metric, param or tag name is spelled
anywhere else.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

import mlflow
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "thread-density"

# Tags.
TAG_FRAMEWORK = "thread_bench.framework"
TAG_ROLE = "thread_bench.role"
TAG_DATASET_DIGEST = "thread_bench.dataset_digest"
TAG_SOURCE_RUN_ID = "thread_bench.source_run_id"
TAG_STUDY = "thread_bench.study"
TAG_FRAMEWORK_VERSION = "thread_bench.framework_version"
TAG_DEVICE = "thread_bench.device"
TAG_CPU = "thread_bench.cpu"
#: On a training run started by ``mlflow run``: the run MLflow created for the launch (see training.driver).
TAG_LAUNCH_RUN_ID = "thread_bench.launch_run_id"
#: On that launch run: the training run it led to.
TAG_TRAINING_RUN_ID = "thread_bench.training_run_id"
#: On a launch run of another entry point (preprocessing): the run it led to.
TAG_LINKED_RUN_ID = "thread_bench.linked_run_id"
#: On a launch run of ``mlflow run -e analysis`` / ``-e study``: the analysis or study run it led to.
TAG_ANALYSIS_RUN_ID = "thread_bench.analysis_run_id"
TAG_STUDY_RUN_ID = "thread_bench.study_run_id"

ROLE_TRAIN = "train"
ROLE_PREPROCESS = "preprocess"
ROLE_EVALUATION = "evaluation"
ROLE_ANALYSIS = "analysis"
ROLE_STUDY = "study"

# Params (both frameworks).
PARAM_FRAMEWORK = "framework"
PARAM_DATASET_DIGEST = "dataset_digest"
PARAM_BACKEND = "backend"
PARAM_PROFILE = "profile"
PARAM_PRECISION = "precision"
#: DataConfig.seed (the prepared dataset); ``seed`` is TrainConfig.seed (initialisation and shuffling).
PARAM_DATA_SEED = "data_seed"
PARAM_DATASET_KEY = "dataset_key"
PARAM_N_TRAIN = "n_train"
PARAM_N_VAL = "n_val"
PARAM_N_TEST = "n_test"
PARAM_N_PARAMS = "n_params"
# Framework-specific knobs.
PARAM_JIT_COMPILE = "jit_compile"
PARAM_TF_MEMORY_GROWTH = "tf_memory_growth"
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
#: The kernel's lifetime peak RSS of the process (ru_maxrss): an upper bound for the sampled peaks.
HOST_MAXRSS_BYTES = "host_maxrss_bytes"
#: The best model re-scored on the validation split, and what predicting the training mean scores there.
VAL_MAE_THREADS_PER_CM = "val_mae_threads_per_cm"
BASELINE_VAL_LOSS = "baseline_val_loss"
BASELINE_VAL_MAE_THREADS_PER_CM = "baseline_val_mae_threads_per_cm"

# Artifacts of a training run.
ARTIFACT_HISTORY = "history.csv"
ARTIFACT_CONFIG = "config.json"
ARTIFACT_MODEL = "model"

# Evaluation runs.
TEST_LOSS = "test_loss"
TEST_MAE_THREADS_PER_CM = "test_mae_threads_per_cm"
PREDICT_TIME_S = "predict_time_s"
PREDICT_SAMPLES_PER_S = "predict_samples_per_s"
#: The first, cold prediction pass (tracing, allocator growth), reported apart from the warm median.
PREDICT_FIRST_TIME_S = "predict_first_time_s"

# Analysis runs: the FFT counter (non-learning baseline) on the same test split.
FFT_TEST_LOSS = "fft_test_loss"
FFT_TEST_MAE_THREADS_PER_CM = "fft_test_mae_threads_per_cm"
FFT_FAILED_SUBPATCHES = "fft_failed_subpatches"

# Preprocessing runs.
PREP_TIME_S = "prep_time_s"
PREP_SKIPPED_PATCHES = "skipped_patches"


def experiment_name(given: str | None) -> str:
    """``-P experiment=…`` wins, then ``MLFLOW_EXPERIMENT_NAME``, then the project default."""
    if given:
        return given
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT


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
    """Start an MLflow run that ends FINISHED, FAILED (exception) or KILLED (Ctrl-C), never RUNNING.

    **Under ``mlflow run``** (``MLFLOW_RUN_ID`` set), MLflow has already created a launch run and logged every
    MLproject parameter there as given, an unset one as ``''``. MLflow params cannot be changed afterwards, so
    the resolved values cannot go into that run: the command logs into a run of its own in ``experiment``,
    nested under the launch run when both share an experiment, and the two are linked by tags both ways
    (``TAG_LAUNCH_RUN_ID`` here, ``launch_link_tag`` on the launch run). Inside an active run, the new run is
    its child.
    """
    launch_run_id = os.environ.pop("MLFLOW_RUN_ID", None)
    nested = nested or mlflow.active_run() is not None
    all_tags = dict(tags or {})
    client = mlflow.MlflowClient()
    if not nested:
        target = mlflow.set_experiment(experiment_name(experiment))
        if launch_run_id:
            all_tags[TAG_LAUNCH_RUN_ID] = launch_run_id
            if target.experiment_id == client.get_run(launch_run_id).info.experiment_id:
                all_tags[MLFLOW_PARENT_RUN_ID] = launch_run_id  # the UI shows this run under the launch run
    run = mlflow.start_run(run_name=run_name, tags=all_tags, nested=nested, log_system_metrics=log_system_metrics)
    try:
        with run:
            if launch_run_id and not nested:
                _link_launch_run(client, launch_run_id, run, launch_link_tag or TAG_LINKED_RUN_ID)
            yield run
    except KeyboardInterrupt:
        # mlflow's ActiveRun.__exit__ marks any exception FAILED; Ctrl-C is a kill, not a failure.
        client.set_terminated(run.info.run_id, status="KILLED")
        log.warning("interrupted: run %s marked KILLED", run.info.run_id)
        raise


def _link_launch_run(client: mlflow.MlflowClient, launch_run_id: str, run: mlflow.ActiveRun, tag: str) -> None:
    client.set_tag(launch_run_id, tag, run.info.run_id)
    client.set_tag(
        launch_run_id,
        "mlflow.note.content",
        f"Launch record of `mlflow run`: the parameters as given ('' = from the profile). The work itself, with "
        f"the resolved parameters, metrics and artifacts, is run {run.info.run_id} in experiment "
        f"{run.info.experiment_id}.",
    )


def log_params(params: Mapping[str, Any]) -> None:
    """Log params, turning ``None`` into an empty string (MLflow rejects ``None``)."""
    mlflow.log_params({k: ("" if v is None else v) for k, v in params.items()})
