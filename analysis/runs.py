"""Select training runs from the tracking store, group them, pick the best of each group.

Works against any tracking URI MLflow can reach (``MLFLOW_TRACKING_URI`` or ``mlflow.set_tracking_uri``).
All MLflow names come from :mod:`thread_bench.tracking`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

from thread_bench import backends, frameworks, tracking, workloads
from thread_bench.config import TrainConfig
from thread_bench.data.build import data_root as data_root_path
from thread_bench.data.prepared import MANIFEST, DamagedDatasetError, PreparedDataset, load_prepared
from thread_bench.tracking import training_filter
from thread_bench.workloads import Workload

log = logging.getLogger(__name__)

#: Fields of the protocol (``TrainConfig``) that do not define *what* was trained: seeds are the replicates of a
#: group; the threads and the device's share for resident data change how fast, not what.
_REPLICATE_OR_SPEED_FIELDS = frozenset({"seed", "threads", "device_data_fraction"})


def knob_params() -> tuple[str, ...]:
    """Params that define *what* was trained (not which replicate): runs of one framework that differ in any of
    these are different experiments, so they form separate groups. Derived from the config dataclasses (every
    registered workload's model and data settings, the protocol's) and the registries (each framework's and
    backend's knobs), so a new field, framework or backend adds its knobs without an edit here;
    ``seed`` is deliberately absent: seeds are the replicates of a group."""
    model = [f.name for w in workloads.WORKLOADS.values() for f in dataclasses.fields(w.model_config)]
    data = [
        tracking.data_param(f.name)
        for w in workloads.WORKLOADS.values()
        for f in dataclasses.fields(w.data_config)
        if f.name != "seed"  # one dataset per analysis (its digest): the data seed is fixed with it
    ]
    train = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in _REPLICATE_OR_SPEED_FIELDS]
    ordered = [tracking.PARAM_WORKLOAD, *model, *data, tracking.PARAM_BACKEND, tracking.PARAM_VARIANT]
    framework_knobs = [knob for framework in frameworks.FRAMEWORKS.values() for knob in framework.knobs]
    backend_knobs = [knob for name in backends.NAMES for knob in backends.get(name).KNOBS]
    return tuple(dict.fromkeys([*ordered, *framework_knobs, *backend_knobs, tracking.PARAM_PROFILE, *train]))


def group_columns() -> tuple[str, ...]:
    """What separates groups: the knobs, and the device the run trained on (tag), since runs on two GPU models
    are not replicates of one measurement."""
    return (*knob_params(), "device")


#: Summary metrics carried into the per-run table (the training runs log them once, at the end).
SUMMARY_METRICS = (
    tracking.BEST_VAL_LOSS,
    tracking.BEST_EPOCH,
    tracking.MIN_TRAIN_LOSS,
    tracking.EPOCHS_TRAINED,
    tracking.TOTAL_TRAIN_TIME_S,
    tracking.FIRST_EPOCH_TIME_S,
    tracking.MEDIAN_EPOCH_TIME_S,
    tracking.MEDIAN_TRAIN_TIME_S,
    tracking.MEDIAN_VAL_TIME_S,
    tracking.TRAIN_SAMPLES_PER_S,
    tracking.HOST_RSS_PEAK_BYTES,
    tracking.HOST_PY_ALLOC_PEAK_BYTES,
    tracking.GPU_MEM_PEAK_BYTES,
    tracking.GPU_MEM_NVML_BYTES,
)

#: The summary metrics a finished training run may lack, which the report shows as "not measured": GPU
#: memory on a CPU run, the Python heap peak when tracemalloc is off, and the steady-state pass times on a run
#: logged before they were. Every other summary metric is logged by every training run: one missing means
#: the run is not one of this project's, and :func:`tidy` refuses it rather than report it as not measured.
OPTIONAL_METRICS = frozenset(
    {
        tracking.GPU_MEM_PEAK_BYTES,
        tracking.GPU_MEM_NVML_BYTES,
        tracking.HOST_PY_ALLOC_PEAK_BYTES,
        tracking.MEDIAN_TRAIN_TIME_S,
        tracking.MEDIAN_VAL_TIME_S,
    }
)

#: Per-epoch metrics read back as the training history.
EPOCH_METRICS = tracking.EPOCH_METRICS


def experiment_id(experiment: str) -> str:
    """The id of the experiment named ``experiment``.

    Raises:
        ValueError: no such experiment in the current tracking store.
    """
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        raise ValueError(f"no experiment named {experiment!r} in the tracking store {mlflow.get_tracking_uri()}")
    return str(found.experiment_id)


def search_training_runs(experiment: str, *, study: str | None = None, extra_filter: str | None = None) -> pd.DataFrame:
    """The FINISHED training runs of ``experiment`` (and ``study``), one row each, tidied by :func:`tidy`.

    Raises:
        ValueError: unknown experiment, or no finished training run matches (the message says what exists).
    """
    experiment_ids = [experiment_id(experiment)]
    raw = mlflow.search_runs(
        experiment_ids=experiment_ids,
        filter_string=training_filter(study, extra_filter),
        output_format="pandas",
    )
    assert isinstance(raw, pd.DataFrame)
    if raw.empty:
        raise ValueError(_no_runs_message(experiment, experiment_ids, study, extra_filter))
    return tidy(raw)


def tidy(raw: pd.DataFrame) -> pd.DataFrame:
    """One row per run with plain column names: ``run_id``, ``run_name``, ``framework``, ``backend``, ``seed``,
    ``dataset_digest``, the study, every knob param (as logged, strings) and the summary metrics (floats).

    ``params.*``/``tags.*`` columns of ``raw`` are kept too, for anything not named here. A summary metric
    in :data:`OPTIONAL_METRICS` that a run did not log is NaN.

    Raises:
        ValueError: a run has no framework, or lacks a summary metric that every training run logs.
    """
    runs = raw.copy()

    def column(name: str) -> pd.Series:
        return runs[name] if name in runs.columns else pd.Series(np.nan, index=runs.index, dtype=object)

    runs["run_name"] = column(f"tags.{MLFLOW_RUN_NAME}")
    runs["framework"] = column(f"params.{tracking.PARAM_FRAMEWORK}").fillna(column(f"tags.{tracking.TAG_FRAMEWORK}"))
    runs["dataset_digest"] = column(f"params.{tracking.PARAM_DATASET_DIGEST}").fillna(
        column(f"tags.{tracking.TAG_DATASET_DIGEST}")
    )
    runs["study"] = column(f"tags.{tracking.TAG_STUDY}")
    # Runs logged before workloads existed are thread-density runs.
    runs[tracking.PARAM_WORKLOAD] = column(f"params.{tracking.PARAM_WORKLOAD}").fillna(workloads.DEFAULT)
    runs["device"] = column(f"tags.{tracking.TAG_DEVICE}")
    runs["cpu"] = column(f"tags.{tracking.TAG_CPU}")
    runs["versions"] = column(f"tags.{tracking.TAG_FRAMEWORK_VERSION}")
    runs["seed"] = pd.to_numeric(column(f"params.{tracking.PARAM_SEED}"), errors="coerce").astype("Int64")
    for knob in (k for k in knob_params() if k != tracking.PARAM_WORKLOAD):
        runs[knob] = column(f"params.{knob}")
    for metric in SUMMARY_METRICS:
        runs[metric] = pd.to_numeric(column(f"metrics.{metric}"), errors="coerce").astype(float)
    missing = runs["framework"].isna()
    if missing.any():
        raise ValueError(f"training runs without a framework param or tag: {list(runs.loc[missing, 'run_id'])}")
    for metric in (m for m in SUMMARY_METRICS if m not in OPTIONAL_METRICS):
        lacking = runs[metric].isna()
        if lacking.any():
            raise ValueError(
                f"training runs without a {metric} metric, which every training run logs: "
                f"{list(runs.loc[lacking, 'run_id'])}; select this project's FINISHED training runs"
            )
    return runs.reset_index(drop=True)


def of_workload(runs: pd.DataFrame, workload: str) -> pd.DataFrame:
    """The runs of ``workload``.

    Raises:
        ValueError: none of the runs is one (the message names the workloads they are of).
    """
    chosen = runs[runs[tracking.PARAM_WORKLOAD] == workload]
    if chosen.empty:
        found = sorted(runs[tracking.PARAM_WORKLOAD].astype(str).unique())
        raise ValueError(f"none of the {len(runs)} selected training runs is a {workload} run (found: {found})")
    return chosen.reset_index(drop=True)


def assign_groups(runs: pd.DataFrame, knobs: Sequence[str] | None = None) -> pd.DataFrame:
    """Add a ``group`` column: the framework, plus every knob (or device) that varies between runs of that
    framework.

    Two frameworks with a single setting each give the groups ``keras`` and ``torch``; Keras runs on two
    backends give ``keras (backend=jax)`` and ``keras (backend=tensorflow)``. A knob that a varying ``variant``
    sets (constant within each variant) is left out of the label: ``torch (variant=tuned)``, not
    ``torch (variant=tuned, deterministic=False, channels_last=True, ...)``.
    """
    chosen = group_columns() if knobs is None else knobs
    varying = {str(framework): _varying_knobs(frame, chosen) for framework, frame in runs.groupby("framework")}

    def label(row: pd.Series) -> str:
        parts = [f"{knob}={row[knob]}" for knob in varying[str(row["framework"])] if pd.notna(row[knob])]
        return f"{row['framework']} ({', '.join(parts)})" if parts else str(row["framework"])

    grouped = runs.copy()
    grouped["group"] = grouped.apply(label, axis=1) if len(grouped) else pd.Series(dtype=str)
    for framework, knob_names in varying.items():
        if knob_names:
            log.info("%s runs differ in %s: grouped by them too", framework, ", ".join(knob_names))
    return grouped.sort_values(["group", "seed", "run_id"], kind="stable").reset_index(drop=True)


def _varying_knobs(frame: pd.DataFrame, knobs: Sequence[str]) -> list[str]:
    varying = [knob for knob in knobs if knob in frame.columns and frame[knob].nunique(dropna=False) > 1]
    variant = tracking.PARAM_VARIANT
    if variant not in varying:
        return varying
    by_variant = frame.groupby(variant, dropna=False)
    return [k for k in varying if k == variant or (by_variant[k].nunique(dropna=False) > 1).any()]


def best_per_group(runs: pd.DataFrame) -> pd.DataFrame:
    """The run with the lowest ``best_val_loss`` of each group (ties: the earlier-listed run).

    Raises:
        ValueError: a group has no run with a finite ``best_val_loss``.
    """
    best = []
    for name, frame in runs.groupby("group", sort=True):
        losses = frame[tracking.BEST_VAL_LOSS]
        if not np.isfinite(losses).any():
            raise ValueError(f"group {name!r}: no run has a {tracking.BEST_VAL_LOSS} metric ({list(frame['run_id'])})")
        best.append(frame.loc[losses.idxmin()])
    return pd.DataFrame(best).reset_index(drop=True)


def require_single_dataset(runs: pd.DataFrame) -> str:
    """The one dataset digest all ``runs`` trained on.

    Raises:
        ValueError: a run has no digest, or the runs used different datasets (the message names them all),
            since their test splits, and so their losses, would not be comparable.
    """
    missing = runs["dataset_digest"].isna() | (runs["dataset_digest"].astype(str) == "")
    if missing.any():
        raise ValueError(
            f"runs without a {tracking.PARAM_DATASET_DIGEST} param: {_describe(runs[missing])}; cannot tell which "
            "data they were trained on"
        )
    digests = list(dict.fromkeys(runs["dataset_digest"]))
    if len(digests) > 1:
        lines = [f"  {digest[:16]}: {_describe(runs[runs['dataset_digest'] == digest])}" for digest in digests]
        raise ValueError(
            "the selected training runs used different prepared datasets, so they cannot be compared on one "
            "test split; select runs of one dataset (e.g. --study or --filter "
            f"\"params.{tracking.PARAM_DATASET_DIGEST} = '…'\"):\n" + "\n".join(lines)
        )
    return str(digests[0])


def load_histories(runs: pd.DataFrame, keys: Iterable[str] = EPOCH_METRICS) -> pd.DataFrame:
    """The per-epoch metrics of every run, one row per (run, epoch), with the run's ``group`` and ``seed``.

    Columns: ``run_id``, ``group``, ``seed``, ``epoch`` and one per metric key found (NaN where a run lacks it).
    """
    client = MlflowClient()
    frames = []
    for run in runs.itertuples(index=False):
        series = {}
        for key in keys:
            history = client.get_metric_history(run.run_id, key)
            if history:
                # A metric re-logged at the same step keeps its last value.
                series[key] = pd.Series({m.step: m.value for m in sorted(history, key=lambda m: m.timestamp)})
        if not series:
            continue
        frame = pd.DataFrame(series).rename_axis("epoch").reset_index()
        frame.insert(0, "run_id", run.run_id)
        frame.insert(1, "group", getattr(run, "group", run.framework))
        frame.insert(2, "seed", run.seed)
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["run_id", "group", "seed", "epoch", *keys])
    return pd.concat(frames, ignore_index=True).sort_values(["group", "seed", "run_id", "epoch"], kind="stable")


def _describe(runs: pd.DataFrame) -> str:
    return ", ".join(f"{row.run_id} ({row.framework}, seed {row.seed})" for row in runs.itertuples(index=False))


def _no_runs_message(experiment: str, experiment_ids: list[str], study: str | None, extra: str | None) -> str:
    scope = f"experiment {experiment!r}"
    scope += (f", study {study!r}" if study else "") + (f", filter {extra!r}" if extra else "")
    any_training = mlflow.search_runs(
        experiment_ids=experiment_ids,
        filter_string=training_filter(study, extra, finished=False),
        output_format="pandas",
    )
    assert isinstance(any_training, pd.DataFrame)
    hint = ""
    if not any_training.empty:
        states = any_training["status"].value_counts().to_dict()
        hint = f"; there are training runs that did not finish: {states}"
    return f"no FINISHED training runs found for {scope} in {mlflow.get_tracking_uri()}{hint}"


# ------------------------------------------------------------------------------- the dataset of a run


def data_config(run: Mapping[str, Any], workload: Workload | None = None) -> Any:
    """The data config (``workload``'s; default: the default workload's) a training run prepared its dataset
    from, rebuilt from its params.

    ``None`` when the run trained on a prepared directory given as is (``--dataset``): its ``source`` param
    is then that directory, not a corpus.
    """
    workload = workload or workloads.get(workloads.DEFAULT)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(workload.data_config):
        key = f"params.{tracking.data_param(field.name)}"
        raw = run.get(key)
        if raw is None or (isinstance(raw, float) and np.isnan(raw)) or raw == "":
            continue
        values[field.name] = _CONVERT[str(field.type)](raw)
    if values.get("source") is None:
        return None
    config = workload.data_config(**values)
    try:
        workload.check_source(config)
    except FileNotFoundError:
        return None
    return config


def locate_dataset(
    run: Mapping[str, Any],
    digest: str,
    workload: Workload | None = None,
    *,
    dataset_dir: str | Path | None = None,
    data_root: str | Path | None = None,
    workers: int | None = None,
) -> PreparedDataset:
    """The prepared dataset (content digest ``digest``) that ``run`` trained on.

    Tried in order: ``dataset_dir``; the path in the run's ``config.json`` artifact; ``<data_root>/prepared/
    <dataset_key>``; rebuilding it from the run's data params (preparation is deterministic, so the same
    params give the same digest) with ``workers`` processes (default: all cores).

    Raises:
        ValueError: ``dataset_dir`` holds another dataset, or a rebuilt one has another digest.
        FileNotFoundError: none of the above found it (the message lists what was tried).
    """
    if dataset_dir is not None:
        dataset = load_prepared(dataset_dir)
        if dataset.digest != digest:
            raise ValueError(
                f"--dataset {dataset_dir} has digest {dataset.digest[:16]}…, but the runs trained on {digest[:16]}…"
            )
        return dataset
    tried = []
    for description, candidate in _dataset_candidates(run, data_root):
        tried.append(f"{description} {candidate}")
        if not (candidate / MANIFEST).is_file():
            continue
        try:
            dataset = load_prepared(candidate)
        except DamagedDatasetError as error:  # fall through to the next candidate, or the rebuild
            tried[-1] += f" (damaged: {error})"
            continue
        if dataset.digest == digest:
            return dataset
        tried[-1] += f" (digest {dataset.digest[:16]}…)"
    workload = workload or workloads.get(workloads.DEFAULT)
    config = data_config(run, workload)
    if config is not None:
        log.info("prepared dataset %s… not found; rebuilding it from the params of run %s", digest[:16], run["run_id"])
        dataset = workload.prepare(config, data_root, workers).dataset
        if dataset.digest != digest:
            raise ValueError(
                f"rebuilding the dataset of run {run['run_id']} from its params gave digest {dataset.digest[:16]}…, "
                f"not {digest[:16]}… (different corpus or code version); pass --dataset DIR"
            )
        return dataset
    raise FileNotFoundError(
        f"prepared dataset {digest[:16]}… of run {run['run_id']} not found; tried: {'; '.join(tried) or 'nothing'}. "
        "Pass --dataset DIR or --data_root DIR"
    )


def _dataset_candidates(run: Mapping[str, Any], data_root: str | Path | None) -> list[tuple[str, Path]]:
    candidates = []
    try:
        config = mlflow.artifacts.load_dict(f"runs:/{run['run_id']}/{tracking.ARTIFACT_CONFIG}")
        path = (config.get("dataset") or {}).get("path")
        if path:
            candidates.append((f"{tracking.ARTIFACT_CONFIG} of the run:", Path(path)))
    except (MlflowException, OSError) as error:
        log.debug("run %s has no readable %s: %s", run["run_id"], tracking.ARTIFACT_CONFIG, error)
    key = run.get(f"params.{tracking.PARAM_DATASET_KEY}")
    if isinstance(key, str) and key:
        candidates.append(("data root:", data_root_path(data_root) / "prepared" / key))
    return candidates


_CONVERT: dict[str, Any] = {"int": lambda v: int(float(v)), "float": float, "str": str}
