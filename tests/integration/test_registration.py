"""Registering a workload is one line (``workloads.register``), and nothing in the core names a workload.

A toy third workload is defined here, as a plug-in would define it outside ``thread_bench``: its data and model
configs with their profiles, a preparation that makes its own images and writes them through the shared
machinery (``thread_bench.data.build``) in the shared format (``thread_bench.data.prepared``), its scores, and
its models in PyTorch and in Keras (``toy_torch_models``, ``toy_keras_models`` next to this file: the record
names its models modules, so they must be importable by name). The end-to-end test registers it with one call,
trains it in both frameworks through the real training driver and compares the runs with the real analysis,
all in this process, since the registration lives in it.

The toy: 16x16 images of vertical sinusoidal stripes, whose frequency (1.5 to 6 cycles per image) is the label;
the loss is the squared error. Its labels are declared ``density``, the prepared format's only real-valued kind
(the other is ``classes``), so they lie inside its plausible range (1 to 100).

And the other registries: an unknown framework, backend or workload is refused in one line that names it and
the known ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest

from analysis import cli as analysis_cli
from thread_bench import backends, frameworks, tracking, workloads
from thread_bench.config import check_finite, check_positive, check_seed, check_split_fractions
from thread_bench.data.build import (
    DATA_ROOT_ENV,
    PrepareResult,
    build_prepared,
    prepared_path,
    reuse_prepared,
    timing_stats,
)
from thread_bench.data.prepared import FORMAT_VERSION, SPLITS, array_filename, canonical_json, load_prepared
from thread_bench.metrics import mean_absolute_error
from thread_bench.training import driver
from thread_bench.workloads import Scores, Workload

# seaborn 0.13's boxplot (the analysis' figures) passes matplotlib's deprecated ``vert``; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:vert. bool was deprecated:matplotlib.MatplotlibDeprecationWarning")

NAME = "toy"
#: The toy's ``source``: it makes its images itself (no other source exists).
GENERATED = "generated"
IMAGE_SIZE = 16
#: The stripe frequencies, cycles per image: the labels.
FREQUENCIES = (1.5, 6.0)
#: What the generator is, for the manifest's source digest (a new generator would be a new source).
SOURCE_DIGEST = hashlib.sha256(b"toy stripes, version 1").hexdigest()
#: The toy's own metrics (a plug-in's MLflow keys are its own): mean absolute errors in cycles per image.
VAL_MAE = "toy_val_mae"
BASELINE_VAL_MAE = "toy_baseline_val_mae"
TEST_MAE = "toy_test_mae"


@dataclass(frozen=True)
class ToyDataConfig:
    """What the toy's prepared dataset is made from; all of it enters the dataset's key."""

    source: str = GENERATED
    seed: int = 0
    n_samples: int = 600
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    input_size: int = IMAGE_SIZE

    def __post_init__(self) -> None:
        check_seed(self, "seed", "the dataset's seed (--data_seed)")
        check_positive(self, ("n_samples", "input_size"))
        check_finite(self, ("val_fraction", "test_fraction"))
        check_split_fractions(self)


@dataclass(frozen=True)
class ToyModelConfig:
    """One convolution of ``filters`` channels, pooling, a linear output (``toy_torch_models``)."""

    filters: int = 4
    input_size: int = IMAGE_SIZE

    def __post_init__(self) -> None:
        check_positive(self, ("filters", "input_size"))


PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {"TrainConfig": {"epochs": 30, "patience": 5}},
    "laptop": {"TrainConfig": {"epochs": 10, "patience": 5}},
    "smoke": {
        "ToyDataConfig": {"n_samples": 200},
        "TrainConfig": {"epochs": 2, "batch_size": 32, "patience": 2},
    },
}


# ------------------------------------------------------------------------------------------------ data


def stripes(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 images ``(n, size, size)`` of vertical stripes at random phases, and their frequencies."""
    rng = np.random.default_rng((seed, 1))
    frequencies = rng.uniform(*FREQUENCIES, n)
    phases = rng.uniform(0.0, 2 * math.pi, n)
    waves = np.sin(2 * math.pi * frequencies[:, None] * np.arange(size)[None, :] / size + phases[:, None])
    rows = np.round((waves + 1.0) * 127.5).astype(np.uint8)
    return np.repeat(rows[:, None, :], size, axis=1), frequencies.astype(np.float32)


def dataset_key(config: ToyDataConfig) -> str:
    payload = {"format_version": FORMAT_VERSION, "workload": NAME, "source": SOURCE_DIGEST}
    payload["settings"] = dataclasses.asdict(config)
    return f"{NAME}-{hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:16]}"


def _write(config: ToyDataConfig, staging: Path) -> dict[str, Any]:
    """The splits (the images come in random order: consecutive slices), and the manifest."""
    images, labels = stripes(config.n_samples, config.input_size, config.seed)
    n_test = round(config.n_samples * config.test_fraction)
    n_val = round(config.n_samples * config.val_fraction)
    bounds = {"test": (0, n_test), "val": (n_test, n_test + n_val), "train": (n_test + n_val, config.n_samples)}
    for split in SPLITS:
        part = slice(*bounds[split])
        np.save(staging / array_filename(split, "images"), np.ascontiguousarray(images[part]))
        np.save(staging / array_filename(split, "labels"), np.ascontiguousarray(labels[part]))
    return {
        "workload": NAME,
        "arrays": {"images": "uint8", "labels": "float32"},
        "labels": {"kind": "density"},
        "seed": config.seed,
        "settings": dataclasses.asdict(config),
        "source": {"kind": GENERATED, "digest": SOURCE_DIGEST},
        "splits": {split: {"n": high - low} for split, (low, high) in bounds.items()},
    }


def prepare(config: ToyDataConfig, root: str | Path | None, workers: int | None = None) -> PrepareResult:
    """Reuse or build the toy's prepared dataset (``workers`` unused: a few hundred images take milliseconds)."""
    started = time.perf_counter()
    target = prepared_path(root, dataset_key(config))
    reused = reuse_prepared(target)
    if reused is not None:
        return PrepareResult(reused, built=False, corpus_dir=target, stats=timing_stats(started, 0.0))
    build_started = time.perf_counter()
    build_prepared(target, lambda staging: _write(config, staging))
    stats = timing_stats(started, 0.0, build_started)
    return PrepareResult(load_prepared(target), built=True, corpus_dir=target, stats=stats)


# ---------------------------------------------------------------------------------------------- scores


def squared_error(outputs: np.ndarray, labels: np.ndarray) -> float:
    """The loss in NumPy (float64): what the best epoch's ``val_loss`` must be."""
    difference = np.asarray(outputs, np.float64).reshape(-1) - np.asarray(labels, np.float64).reshape(-1)
    return float(np.mean(difference**2))


def score(outputs: np.ndarray, labels: np.ndarray, train_labels: np.ndarray) -> Scores:
    mean = np.full(len(labels), float(np.mean(train_labels)))
    return Scores(
        loss=squared_error(outputs, labels),
        metrics={VAL_MAE: mean_absolute_error(outputs, labels), BASELINE_VAL_MAE: mean_absolute_error(mean, labels)},
    )


def evaluate(outputs: np.ndarray, labels: np.ndarray) -> Scores:
    return Scores(loss=squared_error(outputs, labels), metrics={TEST_MAE: mean_absolute_error(outputs, labels)})


def prediction_columns(split: Any, outputs: np.ndarray) -> dict[str, np.ndarray]:
    return {"frequency": np.asarray(split.labels), "predicted": np.asarray(outputs).reshape(-1)}


def summary(metrics: Mapping[str, float]) -> str:
    return f"val MAE {metrics[VAL_MAE]:.2f} cycles; predicting the training mean: {metrics[BASELINE_VAL_MAE]:.2f}"


TOY = Workload(
    name=NAME,
    description="toy: the stripe frequency of 16x16 images (a test's plug-in workload)",
    experiment=NAME,
    data_config=ToyDataConfig,
    model_config=ToyModelConfig,
    profiles=PROFILES,
    models={"torch": "toy_torch_models", "keras": "toy_keras_models"},
    prepare=prepare,
    score=score,
    evaluate=evaluate,
    prediction_columns=prediction_columns,
    report_rows=(("Test MAE of the best model", "cycles", TEST_MAE),),
    loss_name="squared error",
    summary=summary,
    builtin_source=GENERATED,
    source_directory="nothing else (the toy makes its images itself)",
    implementations=lambda framework, config: {"torch": ("module",), "keras": ("functional",)}[framework],
)


# ---------------------------------------------------------------------------------------------- tests


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> Workload:
    """The toy, registered in one line; the registry is put back as it was when the test ends."""
    monkeypatch.setattr(workloads, "WORKLOADS", dict(workloads.WORKLOADS))
    return workloads.register(TOY)


@pytest.fixture
def toy_store(toy: Workload, tracking_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private tracking store and data root; the variables the trainers set for their backends (before the
    framework's first import) are restored when the test ends."""
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path / "data"))
    # Set beforehand to what the trainers set them to (keras_train's default backend; for the other two, a value
    # already there wins, as it does for the trainers).
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    for variable, value in (("TF_CPP_MIN_LOG_LEVEL", "1"), ("CUBLAS_WORKSPACE_CONFIG", ":4096:8")):
        monkeypatch.setenv(variable, os.environ.get(variable, value))
    return tmp_path


def _runs(role: str) -> list[mlflow.entities.Run]:
    found = mlflow.search_runs(
        experiment_names=[NAME], filter_string=f"tags.`{tracking.TAG_ROLE}` = '{role}'", output_format="list"
    )
    assert isinstance(found, list)
    return found


def test_a_registered_workload_trains_in_both_frameworks_and_is_analysed_in_process(
    toy_store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Two PyTorch seeds, so that the analysis has a best run to pick; one Keras run.
    trainings = [("torch", "1"), ("torch", "2"), ("keras", "1")]
    for framework, seed in trainings:
        argv = ["--workload", NAME, "--profile", "smoke", "--seed", seed]
        assert driver.entry_point(framework).main(argv) == 0, framework
    assert "the restored model scores" not in caplog.text  # the toy's NumPy loss is its frameworks' loss

    trained = _runs(tracking.ROLE_TRAIN)
    assert sorted((run.data.params[tracking.PARAM_FRAMEWORK], run.data.params["seed"]) for run in trained) == sorted(
        trainings
    )
    shared = {
        tracking.TRAIN_LOSS,
        tracking.VAL_LOSS,
        tracking.BEST_VAL_LOSS,
        tracking.BEST_EPOCH,
        tracking.MIN_TRAIN_LOSS,
        tracking.EPOCHS_TRAINED,
        tracking.MEDIAN_EPOCH_TIME_S,
        tracking.TRAIN_SAMPLES_PER_S,
    }
    for run in trained:
        framework = run.data.params[tracking.PARAM_FRAMEWORK]
        assert run.info.status == "FINISHED", framework
        assert shared | {VAL_MAE, BASELINE_VAL_MAE} <= set(run.data.metrics), framework
        assert all(math.isfinite(run.data.metrics[key]) for key in (tracking.BEST_VAL_LOSS, VAL_MAE)), framework
        assert run.data.params[tracking.PARAM_WORKLOAD] == NAME
        assert (run.data.params["filters"], run.data.params["n_samples"], run.data.params["input_size"]) == (
            "4",
            "200",
            "16",
        )
        assert run.data.metrics[tracking.EPOCHS_TRAINED] == 2  # the toy's smoke profile
    assert len({run.data.params[tracking.PARAM_DATASET_DIGEST] for run in trained}) == 1  # one dataset, made once
    assert len(_runs(tracking.ROLE_PREPROCESS)) == 1

    out = toy_store / "report"
    assert analysis_cli.main(["--workload", NAME, "--out", str(out), "--repeats", "1"]) == 0

    def best(framework: str) -> str:
        candidates = [run for run in trained if run.data.params[tracking.PARAM_FRAMEWORK] == framework]
        return min(candidates, key=lambda run: run.data.metrics[tracking.BEST_VAL_LOSS]).info.run_id

    evaluated = _runs(tracking.ROLE_EVALUATION)
    evaluations = {run.data.params[tracking.PARAM_FRAMEWORK]: run for run in evaluated}
    assert len(evaluated) == 2 and sorted(evaluations) == ["keras", "torch"]  # the best run of each framework
    for framework, evaluation in evaluations.items():
        assert evaluation.info.status == "FINISHED", framework
        assert evaluation.data.params[tracking.PARAM_SOURCE_RUN_ID] == best(framework)
        assert evaluation.data.params[tracking.PARAM_WORKLOAD] == NAME
        assert evaluation.data.params[tracking.PARAM_N_TEST] == "40"
        assert {tracking.TEST_LOSS, TEST_MAE} <= set(evaluation.data.metrics), framework
        assert math.isfinite(evaluation.data.metrics[TEST_MAE]), framework
    [analysed] = _runs(tracking.ROLE_ANALYSIS)
    assert analysed.info.status == "FINISHED"
    assert analysed.data.metrics[tracking.N_GROUPS] == 2
    assert "Test MAE of the best model" in (out / "report.md").read_text()


def _one_line_error(call: Callable[[], object]) -> str:
    with pytest.raises(ValueError) as error:
        call()
    message = str(error.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize(
    ("lookup", "bad", "known"),
    [
        (frameworks.get, "mxnet", frameworks.NAMES),
        (backends.get, "cntk", backends.NAMES),
        (driver.entry_point, "mxnet", frameworks.NAMES),  # an entry point of a framework nobody registered
        # A registered framework asked to start on a backend nobody registered.
        (frameworks.get("keras").startup_environment, "cntk", backends.NAMES),
        (workloads.get, "sudoku", ("thread_density", "digits", NAME)),  # the toy is offered among the known ones
    ],
)
def test_an_unknown_name_is_refused_in_one_line_naming_it_and_the_known_ones(
    toy: Workload, lookup: Callable[[str], object], bad: str, known: tuple[str, ...]
) -> None:
    message = _one_line_error(lambda: lookup(bad))
    assert repr(bad) in message and str(list(known)) in message, message


@pytest.mark.parametrize(
    ("framework", "argv", "message"),
    [
        ("torch", ["--workload", "sudoku"], "one of ['thread_density', 'digits', 'toy'], got 'sudoku'"),
        (
            "keras",
            ["--workload", NAME, "--backend", "cntk"],
            "backend must be one of ['tensorflow', 'jax', 'torch'], got 'cntk'",
        ),
        (
            "tensorflow",
            ["--workload", NAME],
            "workload 'toy' cannot be trained in tensorflow (it has models in ['torch', 'keras'])",
        ),
        ("torch", ["--workload", NAME, "--model", "cnn3"], "--model is an option of the digits workload, not of toy"),
        ("torch", ["--workload", "digits", "--filters", "8"], "--filters is an option of the toy workload"),
        ("torch", ["--workload", NAME, "--source", "/no/such/dir"], "expected 'generated' or nothing else"),
    ],
)
def test_a_training_command_refuses_what_does_not_fit_in_one_line(
    toy: Workload, framework: str, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        driver.entry_point(framework).main(["--profile", "smoke", *argv])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1, error


def test_a_second_workload_of_a_registered_name_is_refused(toy: Workload) -> None:
    assert workloads.register(TOY) is TOY  # the same record again: nothing changes
    message = _one_line_error(lambda: workloads.register(dataclasses.replace(TOY, description="another toy")))
    assert message == f"workload 'toy' is registered already ({TOY.description})"
    assert workloads.names()[-1] == NAME


def test_a_registered_workload_s_settings_group_the_analysis(toy: Workload) -> None:
    """The analysis tells runs of different toy settings apart without an edit: its knobs are derived from the
    registered workloads' dataclasses."""
    from analysis.runs import knob_params

    assert "filters" in knob_params()
    workloads.WORKLOADS.pop("toy")  # the fixture restores the registry
    assert "filters" not in knob_params()


def test_a_plug_in_named_in_the_environment_is_registered_in_every_process(tmp_path: Path) -> None:
    """``THREAD_BENCH_WORKLOADS=<module>`` registers the module's workloads in every process the suite starts (a
    study's trainings, ``mlflow run``), not only in the one that called ``register``: here a copy of digits under
    another name, offered by a fresh process's command line. A module that fails to import is named in the line
    that refuses its workload."""
    (tmp_path / "my_plugin.py").write_text(
        "import dataclasses\n"
        "from thread_bench import workloads\n"
        "from thread_bench.workloads.digits import WORKLOAD\n"
        "workloads.register(dataclasses.replace(WORKLOAD, name='digits_copy', description='a copy'))\n"
    )
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    environment = {**os.environ, workloads.PLUGINS_ENV: "my_plugin", "PYTHONPATH": path}

    def preprocessing(*argv: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "thread_bench.preprocessing", *argv]
        return subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, check=False)

    listed = preprocessing("--help")
    assert listed.returncode == 0, listed.stderr
    assert "digits_copy: a copy" in " ".join(listed.stdout.split())

    environment[workloads.PLUGINS_ENV] = "no_such_plugin"
    refused = preprocessing("--workload", "digits_copy")
    assert refused.returncode == 2
    assert "Traceback" not in refused.stderr
    assert (
        refused.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "python -m thread_bench.preprocessing: error: workload must be one of ['thread_density', 'digits'], got "
            "'digits_copy' (plug-in 'no_such_plugin' of $THREAD_BENCH_WORKLOADS failed: ModuleNotFoundError"
        )
    )
