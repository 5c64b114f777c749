"""Where prepared datasets live and how every workload's preparation writes one: the shared machinery.

A workload's ``prepare`` (``Workload.prepare``) makes its arrays; this module gives it a place to put them
(:func:`data_root`, :func:`prepared_path`), the reuse of an intact dataset (:func:`reuse_prepared`) and the atomic
build (:func:`build_prepared`: staging directory, content digest, manifest written last, rename into place, the
work directories of killed builds removed), so that every prepared dataset is written and trusted the same way.
The format itself is :mod:`thread_bench.data.prepared`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from thread_bench import diskspace, lifecycle
from thread_bench.data.prepared import (
    FORMAT_VERSION,
    MANIFEST,
    DamagedDatasetError,
    PreparedDataset,
    content_digest,
    dataset_layout,
    file_stamps,
    load_prepared,
    write_stamp,
)

log = logging.getLogger(__name__)

#: Where prepared datasets (and the generated synthetic corpus) live unless told otherwise; relative to the
#: working directory, overridable with the ``THREAD_BENCH_DATA`` environment variable.
DATA_ROOT_ENV = "THREAD_BENCH_DATA"
DEFAULT_DATA_ROOT = Path("data")

#: Staging and trash directories next to the datasets: ``.<key>.<kind>-<host>-<pid>-<start ms>``; the owner is
#: in the name so that a later run can tell a build in progress from the remains of a killed one.
_WORK_DIRECTORY = re.compile(r"^\.(?P<key>.+)\.(?P<kind>tmp|trash)-(?P<host>.+)-(?P<pid>\d+)-(?P<start_ms>\d+)$")
#: Before owners were named: ``.<key>.tmp-<pid>``.
_OLD_STAGING = re.compile(r"^\.(?P<key>.+)\.tmp-(?P<pid>\d+)$")


@dataclass(frozen=True)
class PrepareResult:
    dataset: PreparedDataset
    built: bool
    """False when an existing dataset with the same key was reused."""
    corpus_dir: Path
    """Where the source was read from (the corpus; for other workloads the folder of their source files)."""
    stats: dict[str, float | int] = field(default_factory=dict)
    """Timings (seconds) and counts of this call."""


def data_root(root: str | Path | None = None) -> Path:
    if root is not None and str(root) != "":
        return Path(root)
    return Path(os.environ.get(DATA_ROOT_ENV) or DEFAULT_DATA_ROOT)


def prepared_path(root: str | Path | None, key: str) -> Path:
    """Where the prepared dataset ``key`` lives: ``<data root>/prepared/<key>`` (see :func:`data_root`)."""
    return data_root(root) / "prepared" / key


def timing_stats(started: float, source_time_s: float, build_started: float | None = None) -> dict[str, float | int]:
    """The timings of a preparation (``PrepareResult.stats``), under the metric names preprocessing runs log.

    Args:
        started: ``time.perf_counter()`` when the call began.
        source_time_s: the seconds spent making or reading the source.
        build_started: ``time.perf_counter()`` when the build began; None when a dataset was reused.
    """
    from thread_bench import tracking  # MLflow: not in a workload's spawned preparation workers

    now = time.perf_counter()
    stats: dict[str, float | int] = {tracking.PREP_CORPUS_TIME_S: source_time_s}
    if build_started is not None:
        stats[tracking.PREP_TIME_S] = now - build_started
    stats[tracking.PREP_TOTAL_TIME_S] = now - started
    return stats


def reuse_prepared(target: Path) -> PreparedDataset | None:
    """The intact dataset at ``target`` (checked as ``load_prepared`` does), or None when it must be built.

    Removes the work directories that killed builds left next to it first (:func:`remove_stale_work_directories`).
    """
    remove_stale_work_directories(target.parent)
    reused = _reusable(target)
    if reused is not None:
        log.info("reusing prepared dataset %s (content digest verified)", target)
    return reused


def build_prepared(target: Path, write: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """Build the dataset ``target`` atomically; returns its manifest.

    ``write(staging)`` writes every array file into the (empty) staging directory and returns the manifest, less
    ``format_version``, ``key`` (``target``'s name) and ``content_digest``, which are added here. The manifest
    is then written last, and the directory renamed into place (:func:`_publish`): a reader never sees a half-built
    dataset, and a build interrupted at any point leaves nothing behind but, if killed, a work directory the next
    build removes.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _work_directory(target, "tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        with diskspace.writing(target.parent, "the prepared dataset"):  # a full disk: one line naming the folder
            manifest = {"format_version": FORMAT_VERSION, "key": target.name, **write(staging)}
            manifest["content_digest"] = content_digest(staging, manifest)
            # The manifest is the completeness marker: written last, then the directory appears atomically.
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            # The digest was just computed from these very files: record it, so the first reuse is cheap too.
            arrays = dataset_layout(manifest, staging / MANIFEST).arrays
            write_stamp(staging, manifest["content_digest"], file_stamps(staging, arrays))
            _publish(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _reusable(target: Path, *, quiet: bool = False) -> PreparedDataset | None:
    """The dataset at ``target`` when it is complete and intact; None (said in one line unless ``quiet``)
    when it must be built."""
    if not target.exists():
        return None
    try:
        return load_prepared(target)
    except (DamagedDatasetError, FileNotFoundError) as error:
        if not quiet:
            log.warning("prepared dataset %s cannot be reused, rebuilding it: %s", target.name, error)
        return None


def remove_stale_work_directories(directory: Path) -> list[Path]:
    """Remove the staging and trash directories in ``directory`` whose process is gone (killed mid-build);
    returns them. Those of live processes, and of other hosts (which cannot be checked), are kept."""
    if not directory.is_dir():
        return []
    removed = []
    for path in directory.iterdir():
        owner = _dead_owner(path.name)
        if owner is None:
            continue
        log.info("removing %s, left by a build that was killed (%s)", path, owner)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _dead_owner(name: str) -> str | None:
    """The process that made the work directory ``name``, described, when it is certainly gone; else None."""
    matched = _WORK_DIRECTORY.match(name)
    if matched:
        here = lifecycle.ProcessIdentity.current()
        start_time = int(matched["start_ms"]) / 1000
        owner = lifecycle.ProcessIdentity(matched["host"], int(matched["pid"]), start_time, here.namespace)
        return owner.describe() if owner.on_this_machine() and not owner.alive() else None
    old = _OLD_STAGING.match(name)
    if old and not psutil.pid_exists(int(old["pid"])):
        return f"pid {old['pid']}"
    return None


def _work_directory(target: Path, kind: str) -> Path:
    me = lifecycle.ProcessIdentity.current()
    return target.parent / f".{target.name}.{kind}-{me.host}-{me.pid}-{round(me.start_time * 1000)}"


def _publish(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``, unless another process published an intact dataset there first.

    A ``target`` without a manifest, or damaged, is moved aside first (never left to block every later build);
    the check and the renames hold the lock of the ``prepared`` folder, so two builders cannot interleave them.
    """
    trash = None
    with lifecycle.directory_lock(target.parent):
        if target.exists():
            if _reusable(target, quiet=True) is not None:
                log.info("another process prepared %s meanwhile; using it", target)
                return
            trash = _work_directory(target, "trash")
            os.rename(target, trash)
        os.rename(staging, target)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
