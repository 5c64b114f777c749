"""A full disk at each stage of a training (the synthetic corpus, the prepared dataset, the logged model, and a
model whose room another process took after it was checked) ends in one line naming the path, the room left
there and, when known, the room needed; the run ends FAILED, nothing half-written is left, and the store stays
usable.

Each test fills a small tmpfs mounted for it, which needs the right to mount (root, as in CI); elsewhere the
tests are skipped, saying why.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import pytest

from thread_bench import tracking

pytestmark = [pytest.mark.system, pytest.mark.fault]

#: The room of each small disk: less than the smoke profile's synthetic corpus (1.4 MB) or its prepared dataset
#: with the room kept to spare; more than the tracking store's new SQLite database (about 1 MB) but less than it
#: and the logged model (2.6 MB).
SMALL_DISK = "600k"
STORE_DISK = "2500k"

_TRAIN = "python -m thread_bench.torch_train"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``mount(size)``: a tmpfs of ``size`` (``mount -o size=``) mounted for this test, unmounted after it."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode(errors='replace').strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root on the ordinary disk with the smoke profile's corpus and prepared dataset."""
    root = tmp_path_factory.mktemp("smoke-data")
    done = subprocess.run(
        [sys.executable, "-m", "thread_bench.preprocessing", "--profile", "smoke"],
        cwd=root,
        env=_environment(root / "mlflow.db", root),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return root


def _environment(database: Path, data_root: Path) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    return {**environment, "MLFLOW_TRACKING_URI": f"sqlite:///{database}", "THREAD_BENCH_DATA": str(data_root)}


def _train(
    argv: list[str], *, store: Path, data_root: Path, code: str = ""
) -> tuple[subprocess.CompletedProcess[str], mlflow.entities.Run]:
    """A smoke training in a process of its own (its working directory, so its artifacts, in ``store``; prefixed
    by ``code``), and its run read back from the store."""
    program = f"{code}\nfrom thread_bench import torch_train\nraise SystemExit(torch_train.main({argv!r}))"
    done = subprocess.run(
        [sys.executable, "-c", program],
        cwd=store,
        env=_environment(store / "mlflow.db", data_root),
        capture_output=True,
        text=True,
        timeout=300,
    )
    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    try:
        (run,) = mlflow.search_runs(
            search_all_experiments=True, filter_string="tags.mlflow.runName = 'torch-seed0'", output_format="list"
        )
    finally:
        mlflow.set_tracking_uri(None)
    return done, run


def _one_line(done: subprocess.CompletedProcess[str], start: str) -> str:
    """The error line; the command failed (1) with it as the last line of its output, and no traceback."""
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "sqlalche.me" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{_TRAIN}: error: disk full: cannot write {start}"), last
    assert last.endswith("free some space and run again; no MLflow run is left RUNNING"), last
    return last


def _failed_with(run: mlflow.entities.Run, line: str) -> None:
    assert run.info.status == "FAILED"
    reason = line.removeprefix(f"{_TRAIN}: error: ").removesuffix("; no MLflow run is left RUNNING")
    assert run.data.tags[tracking.TAG_END_REASON].startswith(f"DiskFullError: {reason[:60]}")


def _files(directory: Path) -> list[Path]:
    return [path for path in directory.rglob("*") if path.is_file()]


def test_the_synthetic_corpus_on_a_full_disk(small_disk: Callable[[str], Path], tmp_path: Path) -> None:
    disk = small_disk(SMALL_DISK)
    done, run = _train(["--profile", "smoke"], store=tmp_path, data_root=disk)
    line = _one_line(done, f"the synthetic corpus to {disk / 'raw'} (")
    assert f"free on {disk})" in line  # the room left (no size is known beforehand for the corpus)
    _failed_with(run, line)
    assert _files(disk) == []  # the half-written corpus is gone


def test_the_prepared_dataset_on_a_full_disk_is_refused_before_it_is_written(
    small_disk: Callable[[str], Path], tmp_path: Path, smoke_data: Path
) -> None:
    disk = small_disk(SMALL_DISK)
    (corpus,) = (smoke_data / "raw").iterdir()
    done, run = _train(["--profile", "smoke", "--source", str(corpus)], store=tmp_path, data_root=disk)
    line = _one_line(done, f"the prepared dataset to {disk / 'prepared'} (")
    assert f"free on {disk}; it needs " in line
    _failed_with(run, line)
    assert _files(disk) == []


def test_a_model_larger_than_the_room_left_is_refused_before_it_is_written(
    small_disk: Callable[[str], Path], smoke_data: Path
) -> None:
    disk = small_disk(STORE_DISK)  # the store and its artifacts
    done, run = _train(["--profile", "smoke"], store=disk, data_root=smoke_data)
    line = _one_line(done, f"the model to {disk / 'mlruns'}")
    assert f"free on {disk}; it needs " in line
    _failed_with(run, line)
    assert not list((disk / "mlruns").rglob("state_dict.pt"))  # nothing of the model was written


def test_a_model_whose_room_was_taken_after_the_check_is_discarded_and_the_run_still_ends_failed(
    small_disk: Callable[[str], Path], smoke_data: Path
) -> None:
    """The disk fills during MLflow's copy (the check passes: another process takes the room afterwards). The
    half-copied model is removed, which gives the store the room to record the run's end."""
    disk = small_disk(STORE_DISK)
    skip_check = "from thread_bench import diskspace\ndiskspace.check_room = lambda *args: None"
    done, run = _train(["--profile", "smoke"], store=disk, data_root=smoke_data, code=skip_check)
    line = _one_line(done, f"the model to {disk / 'mlruns'}")
    _failed_with(run, line)
    assert not list((disk / "mlruns").rglob("state_dict.pt"))  # the half-copied weights are gone
    mlflow.set_tracking_uri(f"sqlite:///{disk / 'mlflow.db'}")
    try:
        (logged,) = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    finally:
        mlflow.set_tracking_uri(None)
    assert str(logged.status) == "FAILED"  # not PENDING for good
