"""keras_train and torch_train: both entry points on the smoke profile against a temporary tracking store.

The end-to-end runs happen once per module (``smoke_runs``): each framework trains twice with the same seed
(the second run checks determinism), the first one also prepares the smoke dataset.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest

import isa_helpers
from analysis.runs import knob_params
from conftest import make_fake_prepared, names_not_in_tracking
from thread_bench import frameworks, keras_train, torch_train, tracking, workloads
from thread_bench.data.build import DATA_ROOT_ENV
from thread_bench.training import driver, torch_trainer
from thread_bench.training.options import TorchOptions
from thread_bench.workloads.thread_density import keys as thread_density_keys
from thread_bench.workloads.thread_density.config import DataConfig, ModelConfig

ROOT = Path(__file__).resolve().parents[2]
ENTRY_POINTS = {"torch": torch_train, "keras": keras_train}
KNOBS = {
    "torch": {"torch_compile", "compile_mode", "channels_last", "cudnn_benchmark", "torch_fp32_precision"},
    "keras": {"jit_compile", "tf_memory_growth", "tf_onednn", "tf_tensor_float_32"},
}
#: The params of the other workloads' configs that thread-density runs do not have.
OTHER_WORKLOAD_PARAMS = {
    field.name
    for workload in workloads.WORKLOADS.values()
    for config in (workload.data_config, workload.model_config)
    for field in dataclasses.fields(config)
} - {field.name for config in (DataConfig, ModelConfig) for field in dataclasses.fields(config)}
#: docs/DESIGN.md §5, plus data_seed; and every knob the analysis groups runs by, but those of one framework
#: (or, for xla_preallocate, of one Keras backend; or of another workload).
DESIGN_PARAMS = {
    "framework",
    "seed",
    "dataset_digest",
    "n_train",
    "n_val",
    "n_test",
    "n_params",
    "data_seed",
    # precision read back from the framework
    "compute_dtype",
    "output_dtype",
    "tf32_matmul",
    "tf32_conv",
    "bf16_hardware",
} | (set(knob_params()) - KNOBS["torch"] - KNOBS["keras"] - {"xla_preallocate"} - OTHER_WORKLOAD_PARAMS)
SUMMARY_METRICS = {
    tracking.BEST_VAL_LOSS,
    tracking.BEST_EPOCH,
    tracking.MIN_TRAIN_LOSS,
    tracking.EPOCHS_TRAINED,
    tracking.TOTAL_TRAIN_TIME_S,
    tracking.MEDIAN_EPOCH_TIME_S,
    tracking.FIRST_EPOCH_TIME_S,
    tracking.MEDIAN_TRAIN_TIME_S,
    tracking.MEDIAN_VAL_TIME_S,
    tracking.TRAIN_SAMPLES_PER_S,
    tracking.HOST_RSS_PEAK_BYTES,
    tracking.HOST_MAXRSS_BYTES,
    thread_density_keys.VAL_MAE_THREADS_PER_CM,
    thread_density_keys.BASELINE_VAL_LOSS,
    thread_density_keys.BASELINE_VAL_MAE_THREADS_PER_CM,
}
EPOCH_METRICS = {
    tracking.TRAIN_LOSS,
    tracking.VAL_LOSS,
    tracking.EPOCH_TIME_S,
    tracking.TRAIN_TIME_S,
    tracking.VAL_TIME_S,
    tracking.LEARNING_RATE,
    tracking.HOST_RSS_PEAK_BYTES,
}
SMOKE_ARGS = ["--profile", "smoke", "--seed", "3", "--epochs", "2"]


def _use_store(patch: pytest.MonkeyPatch, directory: Path) -> str:
    uri = f"sqlite:///{directory / 'mlflow.db'}"
    patch.chdir(directory)
    patch.setenv("MLFLOW_TRACKING_URI", uri)
    patch.setenv(DATA_ROOT_ENV, str(directory / "data"))
    patch.delenv("MLFLOW_RUN_ID", raising=False)
    patch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    # The keras entry point sets these for its backend; restore them after the test.
    patch.setenv("KERAS_BACKEND", "tensorflow")
    patch.setenv("TF_CPP_MIN_LOG_LEVEL", os.environ.get("TF_CPP_MIN_LOG_LEVEL", "1"))
    mlflow.set_tracking_uri(uri)
    return uri


def _train_runs(experiment: str = tracking.DEFAULT_EXPERIMENT) -> list[mlflow.entities.Run]:
    runs = mlflow.search_runs(experiment_names=[experiment], output_format="list", order_by=["start_time ASC"])
    return [r for r in runs if r.data.tags.get(tracking.TAG_ROLE) == tracking.ROLE_TRAIN]


def _losses(run_id: str) -> list[tuple[float, float]]:
    client = mlflow.MlflowClient()
    train = sorted((m.step, m.value) for m in client.get_metric_history(run_id, tracking.TRAIN_LOSS))
    val = sorted((m.step, m.value) for m in client.get_metric_history(run_id, tracking.VAL_LOSS))
    return [(t, v) for (_, t), (_, v) in zip(train, val, strict=True)]


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, list[mlflow.entities.Run]]]:
    """Each framework trained twice (same seed) on the smoke profile; the store stays open for the tests."""
    directory = tmp_path_factory.mktemp("smoke")
    with pytest.MonkeyPatch.context() as patch:
        _use_store(patch, directory)
        for framework, entry in ENTRY_POINTS.items():
            for _ in range(2):
                assert entry.main([*SMOKE_ARGS]) == 0, framework
        runs = _train_runs()
        yield {fw: [r for r in runs if r.data.params["framework"] == fw] for fw in ENTRY_POINTS}
        mlflow.set_tracking_uri(None)


@pytest.mark.parametrize("framework", sorted(ENTRY_POINTS))
def test_a_run_logs_params_metrics_artifacts_and_model(
    smoke_runs: dict[str, list[mlflow.entities.Run]], framework: str
) -> None:
    run = smoke_runs[framework][0]
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert DESIGN_PARAMS | KNOBS[framework] <= set(params)
    assert params["framework"] == framework
    assert params["backend"] == ("torch" if framework == "torch" else "tensorflow")
    assert (params["profile"], params["seed"], params["epochs"], params["data_seed"]) == ("smoke", "3", "2", "0")
    assert params["deterministic"] == "True" and params["precision"] == "fp32" and params["variant"] == "default"
    assert (params["compute_dtype"], params["output_dtype"], params["tf32_matmul"]) == ("float32", "float32", "False")
    assert params["input_pipeline"] == ("device" if framework == "torch" else "host")  # the CPU; tf.data
    assert int(params["n_params"]) > 0 and int(params["n_train"]) > 0
    if framework == "keras":
        assert params["jit_compile"] == "False"  # "auto" resolves to False for TensorFlow on a CPU
    assert set(run.data.metrics) >= SUMMARY_METRICS
    assert run.data.metrics[tracking.EPOCHS_TRAINED] == 2
    assert run.data.metrics[thread_density_keys.BASELINE_VAL_LOSS] > 0
    tags = run.data.tags
    assert tags[tracking.TAG_ROLE] == tracking.ROLE_TRAIN and tags[tracking.TAG_FRAMEWORK] == framework
    assert tags[tracking.TAG_DATASET_DIGEST] == params["dataset_digest"]
    assert tags[tracking.TAG_DEVICE] and tags[tracking.TAG_CPU] and tags[tracking.TAG_FRAMEWORK_VERSION]
    (dataset_input,) = run.inputs.dataset_inputs
    assert params["dataset_digest"].startswith(dataset_input.dataset.digest)

    client = mlflow.MlflowClient()
    for metric in EPOCH_METRICS:
        # host_rss_peak_bytes is also a summary (the maximum), logged again at the last step.
        assert {m.step for m in client.get_metric_history(run.info.run_id, metric)} == {0, 1}, metric
    history_rss = [m.value for m in client.get_metric_history(run.info.run_id, tracking.HOST_RSS_PEAK_BYTES)]
    assert run.data.metrics[tracking.HOST_RSS_PEAK_BYTES] == max(history_rss)
    directory = Path(client.download_artifacts(run.info.run_id, ""))
    assert {"history.csv", "config.json"} <= {p.name for p in directory.iterdir()}
    with open(directory / "history.csv") as handle:
        history = list(csv.DictReader(handle))
    assert [float(row["train_loss"]) for row in history] == [loss for loss, _ in _losses(run.info.run_id)]
    config = json.loads((directory / "config.json").read_text())
    assert config["train"]["seed"] == 3 and config["dataset"]["digest"] == params["dataset_digest"]

    # A raw 8-bit patch of 1.5 cm at 100 px/cm (the model's windows are 1 cm): test_model_products.py has the rest.
    patch = np.random.default_rng(0).integers(0, 256, (150, 150), dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # loads and predicts without a warning (a GPU machine picks CUDA)
        model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
        answer = model.predict(pd.DataFrame({"image": [patch], "px_per_cm": [100.0]}))
    assert list(answer.columns) == ["density_v", "density_h", "windows"] and answer.loc[0, "windows"] == 4
    assert np.all(np.isfinite(answer[["density_v", "density_h"]].to_numpy()))
    assert model.metadata.signature is not None


def test_both_frameworks_log_the_same_metric_names_on_the_same_dataset(
    smoke_runs: dict[str, list[mlflow.entities.Run]],
) -> None:
    keras_run, torch_run = smoke_runs["keras"][0], smoke_runs["torch"][0]
    system = {k for k in keras_run.data.metrics if k.startswith("system/")}
    assert set(keras_run.data.metrics) - system == set(torch_run.data.metrics) - system
    assert keras_run.data.params["dataset_digest"] == torch_run.data.params["dataset_digest"]
    assert {p for p in keras_run.data.params if p not in KNOBS["keras"] | {"xla_preallocate"}} == {
        p for p in torch_run.data.params if p not in KNOBS["torch"]
    }


def test_the_first_run_prepared_the_dataset_in_a_nested_preprocess_run(
    smoke_runs: dict[str, list[mlflow.entities.Run]],
) -> None:
    first = smoke_runs["torch"][0]
    runs = mlflow.search_runs(experiment_names=[tracking.DEFAULT_EXPERIMENT], output_format="list")
    preprocess = [r for r in runs if r.data.tags.get(tracking.TAG_ROLE) == tracking.ROLE_PREPROCESS]
    assert len(preprocess) == 1  # later runs reused the dataset
    assert preprocess[0].data.tags["mlflow.parentRunId"] == first.info.run_id
    assert preprocess[0].data.params[tracking.PARAM_DATASET_DIGEST] == first.data.params["dataset_digest"]


def test_training_and_preprocessing_log_only_names_defined_in_tracking(
    smoke_runs: dict[str, list[mlflow.entities.Run]],
) -> None:
    logged = mlflow.search_runs(experiment_names=[tracking.DEFAULT_EXPERIMENT], output_format="list")
    preprocess = [r for r in logged if r.data.tags.get(tracking.TAG_ROLE) == tracking.ROLE_PREPROCESS]
    assert preprocess
    for run in [*smoke_runs["torch"], *smoke_runs["keras"], *preprocess]:
        assert names_not_in_tracking(run) == set(), run.data.tags[tracking.TAG_ROLE]


@pytest.mark.parametrize("framework", sorted(ENTRY_POINTS))
def test_same_seed_gives_identical_losses(smoke_runs: dict[str, list[mlflow.entities.Run]], framework: str) -> None:
    first, second = smoke_runs[framework]
    assert _losses(first.info.run_id) == _losses(second.info.run_id)


# ---------------------------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("framework", "argv", "message"),
    [
        ("torch", ["--epochs", "-1"], "epochs must be a positive integer"),
        ("torch", ["--lr_schedule", "step"], "lr_schedule must be one of"),
        ("torch", ["--source", "/no/such/corpus"], "no such directory"),
        ("torch", ["--compile", "maybe"], "expected a boolean"),
        ("keras", ["--backend", "theano"], "backend must be one of"),
        ("keras", ["--jit_compile", "always"], "jit_compile must be one of"),
        ("keras", ["--input_size", "16"], "input_size"),
        ("torch", ["--precision", "fp16"], "precision must be one of ['fp32', 'tf32', 'bf16'], got 'fp16'"),
        ("keras", ["--variant", "fast"], "unknown variant 'fast'; expected one of ['default', 'nondeterministic'"),
        ("torch", ["--compile_mode", "turbo"], "compile_mode must be one of"),
        ("keras", ["--input_pipeline", "device"], "input_pipeline=device is not available for Keras on TensorFlow"),
    ],
)
def test_invalid_params_exit_2_with_one_line_before_any_run(
    tracking_store: str, framework: str, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        ENTRY_POINTS[framework].main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "Traceback" not in error
    assert mlflow.search_experiments(filter_string=f"name = '{tracking.DEFAULT_EXPERIMENT}'") == []


def test_a_dataset_of_the_wrong_size_is_refused_up_front(
    tracking_store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = make_fake_prepared(tmp_path, 8, 4, 2, size=40)
    with pytest.raises(SystemExit):
        torch_train.main(["--profile", "smoke", "--dataset", str(dataset)])
    assert "pass --input_size 40" in capsys.readouterr().err


@pytest.mark.parametrize(("error", "status"), [(RuntimeError("boom"), "FAILED"), (KeyboardInterrupt(), "KILLED")])
def test_an_exception_or_ctrl_c_during_training_ends_the_run(
    tracking_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException, status: str
) -> None:
    def broken_fit(*args: Any, **kwargs: Any) -> None:
        raise error

    monkeypatch.setattr(torch_trainer, "fit", broken_fit)
    dataset = make_fake_prepared(tmp_path, 8, 4, 2, size=32)
    argv = ["--profile", "smoke", "--dataset", str(dataset)]
    if isinstance(error, KeyboardInterrupt):
        assert torch_train.main(argv) == 130
    else:
        with pytest.raises(RuntimeError, match="boom"):
            torch_train.main(argv)
    (run,) = _train_runs()
    assert run.info.status == status
    assert run.data.params["framework"] == "torch"  # the setup was logged before training started


def test_under_mlflow_run_the_training_gets_its_own_run_linked_to_the_launch_run(
    tracking_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What `mlflow run` does: create a run, log the MLproject parameters as given ('' = unset), export its id.
    client = mlflow.MlflowClient()
    experiment_id = client.create_experiment(tracking.DEFAULT_EXPERIMENT)
    launch = client.create_run(experiment_id, tags={"mlflow.source.type": "PROJECT"})
    client.log_param(launch.info.run_id, "epochs", "''")
    client.log_param(launch.info.run_id, "seed", "3")
    monkeypatch.setenv("MLFLOW_RUN_ID", launch.info.run_id)
    dataset = make_fake_prepared(tmp_path, 8, 4, 2, size=32)
    argv = ["--profile", "smoke", "--dataset", str(dataset), "--seed", "3", "--epochs", "2"]
    assert torch_train.main([*argv, "--tracemalloc", "true", "--lr_schedule", "inverse_time"]) == 0
    (run,) = _train_runs()
    assert run.data.metrics[tracking.HOST_PY_ALLOC_PEAK_BYTES] > 0  # the optional tracemalloc peak
    assert run.data.metrics[tracking.LEARNING_RATE] == pytest.approx(1e-3 / 1.1)  # epoch 1 of 1/(1 + epoch/10)
    assert run.info.run_id != launch.info.run_id
    assert run.data.params["epochs"] == "2" and run.data.params["seed"] == "3"
    assert run.data.tags[tracking.TAG_LAUNCH_RUN_ID] == launch.info.run_id
    assert run.data.tags["mlflow.parentRunId"] == launch.info.run_id  # same experiment: nested in the UI
    assert client.get_run(launch.info.run_id).data.tags[tracking.TAG_TRAINING_RUN_ID] == run.info.run_id


def test_keras_refuses_to_switch_backend_in_a_running_process(
    tracking_store: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import keras

    other = "jax" if keras.backend.backend() != "jax" else "torch"
    with pytest.raises(SystemExit) as exit_info:
        keras_train.main(["--profile", "smoke", "--backend", other])
    assert exit_info.value.code == 2
    assert "start a fresh process" in capsys.readouterr().err


def test_keras_on_the_jax_and_torch_backends(tmp_path: Path) -> None:
    """The non-default backends, each in a fresh process (Keras picks its backend at import)."""
    dataset = make_fake_prepared(tmp_path, 16, 6, 2, size=32)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_RUN_ID", None)
    processes = {
        backend: subprocess.Popen(
            [sys.executable, "-m", "thread_bench.keras_train", "--profile", "smoke", "--dataset", str(dataset),
             "--backend", backend, "--epochs", "1", "--experiment", "backends"],
            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        for backend in ("jax", "torch")
    }  # fmt: skip
    for backend, process in processes.items():
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, f"{backend}: {stderr[-3000:]}"
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    try:
        runs = _train_runs("backends")
        assert sorted(r.data.params["backend"] for r in runs) == ["jax", "torch"]
        assert all(r.info.status == "FINISHED" for r in runs)
        jax_run = next(r for r in runs if r.data.params["backend"] == "jax")
        assert jax_run.data.params["xla_preallocate"] == "false"
    finally:
        mlflow.set_tracking_uri(None)


def test_the_entry_points_are_in_mlproject_with_the_issue_parameters() -> None:
    import yaml

    entry_points = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]
    common_params = {
        "seed",
        "data_seed",
        "profile",
        "epochs",
        "batch_size",
        "learning_rate",
        "lr_schedule",
        "patience",
        "min_delta",
        "base_filters",
        "dropout",
        "source",
        "experiment",
        "deterministic",
    }
    assert common_params | {"backend", "jit_compile"} <= set(entry_points["keras_train"]["parameters"])
    assert common_params | {"channels_last", "compile"} <= set(entry_points["torch_train"]["parameters"])
    assert {"precision", "variant"} <= set(entry_points["torch_train"]["parameters"])
    # Same protocol parameters in both; only the framework knobs differ.
    keras_params = set(entry_points["keras_train"]["parameters"]) - {"backend", "jit_compile"}
    torch_knobs = {"channels_last", "compile", "compile_mode"}
    assert keras_params == set(entry_points["torch_train"]["parameters"]) - torch_knobs


def test_help_lists_every_option() -> None:
    out = io.StringIO()
    driver.build_parser(frameworks.get("torch")).print_help(out)
    assert "--data_seed" in out.getvalue() and "--channels_last" in out.getvalue()


@pytest.mark.parametrize("framework", sorted(ENTRY_POINTS))
def test_a_bf16_nondeterministic_run_logs_what_the_framework_did(
    tracking_store: str, tmp_path: Path, framework: str
) -> None:
    isa_helpers.skip_unless_bf16_runs(frameworks.get(framework).default_backend)
    dataset = make_fake_prepared(tmp_path, 16, 6, 2, size=32)
    argv = ["--profile", "smoke", "--dataset", str(dataset), "--epochs", "1", "--precision", "bf16"]
    assert ENTRY_POINTS[framework].main([*argv, "--variant", "nondeterministic"]) == 0
    (run,) = _train_runs()
    params = run.data.params
    assert (params["precision"], params["variant"], params["deterministic"]) == ("bf16", "nondeterministic", "False")
    # Read back from the framework: bfloat16 layers, a float32 output layer (and loss), no TF32.
    assert (params["compute_dtype"], params["output_dtype"]) == ("bfloat16", "float32")
    assert params["tf32_matmul"] == params["tf32_conv"] == "False"
    assert params["bf16_hardware"] in {"native", "emulated"}
    assert (
        run.data.tags["mlflow.runName"]
        == f"{framework}{'-tensorflow' if framework == 'keras' else ''}-bf16-nondeterministic-seed0"
    )
    if framework == "torch":
        from thread_bench.models import pyfunc

        model = pyfunc.load_model(f"runs:/{run.info.run_id}/model", device="cpu")
        assert model.compute_dtype == "bfloat16"  # the logged model predicts as it trained


def test_a_variant_sets_its_knobs_and_explicit_options_still_win() -> None:
    parser = driver.build_parser(frameworks.get("torch"))
    request = driver.request_from_args(
        parser.parse_args(["--profile", "smoke", "--variant", "tuned", "--compile", "false"]), frameworks.get("torch")
    )
    assert request.variant == "tuned" and not request.train.deterministic
    assert request.options == TorchOptions(channels_last=True, compile=False)


def test_batchnorm_statistics_scores_a_torch_run_three_ways_and_refuses_a_keras_run(
    smoke_runs: dict[str, list[mlflow.entities.Run]], capsys: pytest.CaptureFixture[str]
) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import batchnorm_statistics

    run = smoke_runs["torch"][0]
    assert batchnorm_statistics.main(["--run_id", run.info.run_id, "--windows", "8"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line for line in out if line.startswith(("| as logged", "| recomputed"))]
    assert len(rows) == 3
    values = [[float(cell) for cell in row.strip(" |").split(" | ")[1:]] for row in rows]
    assert all(len(row) == 4 and all(np.isfinite(row)) for row in values)
    # The logged model is the best epoch's, scored on the same validation split as in training.
    assert values[0][1] == pytest.approx(run.data.metrics[tracking.BEST_VAL_LOSS], rel=1e-4)
    assert values[0][3] == values[1][3] == values[2][3]  # the FFT measures the same windows each time
    assert values[1] != values[0]  # recomputing changed the statistics

    with pytest.raises(SystemExit):
        batchnorm_statistics.main(["--run_id", smoke_runs["keras"][0].info.run_id])
    assert "a PyTorch run is needed, this one's framework is 'keras'" in capsys.readouterr().err


def test_serving_skew_shows_a_window_equalised_model_answers_requests_as_its_training_scored(
    smoke_runs: dict[str, list[mlflow.entities.Run]], capsys: pytest.CaptureFixture[str]
) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import serving_skew

    run = smoke_runs["torch"][0]
    assert serving_skew.main(["--run_id", run.info.run_id]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "trained with equalisation window, serves with window" in out[0]
    table = [line.strip(" |").split(" | ") for line in out if line.startswith("| ")]
    assert table[0] == ["inputs", "n", "nMAE", "median relative error"] and set(table[1]) == {"---"}
    values = {cells[0]: [float(cell) for cell in cells[1:]] for cells in table[2:]}
    assert len(values) == 4 and all(np.isfinite(row).all() for row in values.values())
    stored = values["validation split as stored (rotations and flips included)"]
    assert stored[1] == pytest.approx(run.data.metrics[tracking.BEST_VAL_LOSS], rel=1e-4)
    # A request gets exactly the inputs of the training's own equalisation, and not the other one's.
    served = values["windows as requests (the logged model's preprocessing)"]
    assert served == values["windows equalised on their own (equalisation=window)"]
    assert served != values["windows cut from the equalised patch (equalisation=patch)"]

    with pytest.raises(SystemExit):
        serving_skew.main(["--run_id", "0" * 32])
    assert f"--run_id {'0' * 32}: not a training run" in capsys.readouterr().err
