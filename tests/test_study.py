"""The study entry point: a tiny real study (2 seeds x 2 frameworks, smoke profile), resumed, and its report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import psutil
import pytest

from analysis import cli as analysis_cli
from thread_bench import lifecycle, store, study, tracking

# seaborn 0.13's boxplot passes matplotlib's deprecated ``vert``; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:vert. bool was deprecated:matplotlib.MatplotlibDeprecationWarning")


def search(experiment: str, role: str) -> pd.DataFrame:
    found = mlflow.search_runs(
        experiment_names=[experiment], filter_string=f"tags.`{tracking.TAG_ROLE}` = '{role}'", output_format="pandas"
    )
    assert isinstance(found, pd.DataFrame)
    return found


def test_tiny_study_trains_resumes_and_reports(
    tracking_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("THREAD_BENCH_DATA", str(tmp_path / "data"))
    out = tmp_path / "report"
    argv = ["--profile", "smoke", "--seeds", "2", "--study", "tiny", "--experiment", "e2e", "--out", str(out)]

    assert study.main(argv) == 0

    trainings = search("e2e", tracking.ROLE_TRAIN)
    assert len(trainings) == 4
    assert set(trainings["status"]) == {"FINISHED"}
    assert set(trainings[f"tags.{tracking.TAG_STUDY}"]) == {"tiny"}
    assert sorted(zip(trainings["params.framework"], trainings["params.seed"], strict=True)) == [
        ("keras", "0"),
        ("keras", "1"),
        ("torch", "0"),
        ("torch", "1"),
    ]
    assert trainings["params.dataset_digest"].nunique() == 1
    study_run = search("e2e", tracking.ROLE_STUDY)
    assert set(trainings["tags.mlflow.parentRunId"]) == {study_run["run_id"].item()}

    # One evaluation run per framework, linked to the best training run of that framework.
    evaluations = search("e2e", tracking.ROLE_EVALUATION)
    assert len(evaluations) == 2
    for evaluation in evaluations.to_dict("records"):
        source = trainings[trainings["run_id"] == evaluation[f"tags.{tracking.TAG_SOURCE_RUN_ID}"]]
        assert len(source) == 1, "the evaluation's source is one of the study's training runs"
        framework = source["params.framework"].item()
        same_framework = trainings[trainings["params.framework"] == framework]
        assert (
            source[f"metrics.{tracking.BEST_VAL_LOSS}"].item()
            == same_framework[f"metrics.{tracking.BEST_VAL_LOSS}"].min()
        )
    assert evaluations[f"metrics.{tracking.TEST_LOSS}"].notna().all()
    assert (evaluations[f"metrics.{tracking.PREDICT_TIME_S}"] > 0).all()

    # The report: both frameworks in the table, every figure, logged on the analysis run.
    table = pd.read_csv(out / "table.csv", index_col="quantity")
    assert {"keras", "torch"} <= set(table.columns)
    assert float(table.loc["Runs (seeds)", "keras"]) == 2
    assert float(table.loc["Test loss of the best model", "torch"]) > 0
    assert "FFT baseline test loss (no learning)" in table.index
    figures = {path.stem for path in (out / "figures").glob("*.png") if path.stat().st_size > 0}
    assert {"learning_curves", "epoch_times", "memory", "prediction_time", "test_loss"} <= figures
    analysis = search("e2e", tracking.ROLE_ANALYSIS)
    assert analysis["tags.mlflow.parentRunId"].item() == study_run["run_id"].item()
    assert set(evaluations["tags.mlflow.parentRunId"]) == {analysis["run_id"].item()}
    artifacts = {f.path for f in mlflow.MlflowClient().list_artifacts(analysis["run_id"].item(), "report")}
    assert {"report/table.md", "report/table.html", "report/report.md", "report/figures"} <= artifacts

    # Resuming the same study trains nothing more.
    capsys.readouterr()
    assert study.main([*argv, "--analyze", "false"]) == 0
    assert "0 trained, 4 already finished" in capsys.readouterr().out
    assert len(search("e2e", tracking.ROLE_TRAIN)) == 4


def _settings(*argv: str) -> study.StudySettings:
    return study.settings_from_args(study.build_parser().parse_args(list(argv)))


def test_study_defaults_and_validation() -> None:
    settings = _settings("--profile", "smoke")

    assert settings.study == "smoke-tensorflow-data0"
    assert settings.seeds == (0, 1, 2)
    assert settings.frameworks == ("keras", "torch")
    assert settings.epochs == 2 and not settings.epochs_given
    assert _settings("--profile", "smoke", "--seeds", "2", "--first_seed", "5").seeds == (5, 6)
    with pytest.raises(ValueError, match="--frameworks"):
        _settings("--frameworks", "keras,mxnet")
    with pytest.raises(ValueError, match="backend must be one of"):
        _settings("--backend", "theano")
    with pytest.raises(SystemExit):  # argparse: "argument --seeds: expected int, got 'two'"
        _settings("--seeds", "two")
    with pytest.raises(ValueError, match="--seeds must be >= 1"):
        _settings("--seeds", "0")
    with pytest.raises(ValueError, match=r"--variants: unknown \['fast'\]"):
        _settings("--variants", "fast")


def test_pending_skips_finished_pairs_seed_by_seed() -> None:
    settings = _settings("--profile", "smoke", "--seeds", "2", "--backend", "jax")
    done = pd.DataFrame(
        {
            "run_id": ["a", "b"],
            "framework": ["keras", "keras"],
            "backend": ["jax", "tensorflow"],  # a tensorflow run is not a jax run
            "seed": [0, 1],
        }
    )

    todo, skipped = study.pending(settings, done)

    assert skipped == [("keras", "default", 0)]  # a run logged before variants counts as default
    assert todo == [("torch", "default", 0), ("keras", "default", 1), ("torch", "default", 1)]


def test_variants_are_trained_seed_by_seed_and_resumed_each_on_its_own() -> None:
    settings = _settings("--profile", "smoke", "--seeds", "1", "--frameworks", "torch", "--variants", "tuned,default")
    done = pd.DataFrame(
        {"run_id": ["a"], "framework": ["torch"], "backend": ["torch"], "variant": ["default"], "seed": [0]}
    )

    todo, skipped = study.pending(settings, done)

    assert (todo, skipped) == ([("torch", "tuned", 0)], [("torch", "default", 0)])
    command = study.training_command(settings, "torch", "tuned", 0)
    assert command[command.index("--variant") + 1] == "tuned" and command[command.index("--precision") + 1] == "fp32"


def test_precision_names_the_default_study_and_bad_lists_are_refused() -> None:
    assert _settings("--profile", "smoke", "--precision", "bf16").study == "smoke-tensorflow-data0-bf16"
    assert _settings("--profile", "smoke", "--variants", "default,tuned,default").variants == ("default", "tuned")
    with pytest.raises(ValueError, match=r"--variants: unknown \['fast'\]"):
        _settings("--variants", "default,fast")
    with pytest.raises(ValueError, match="precision must be one of"):
        _settings("--precision", "fp8")


def test_training_subprocesses_are_tagged_through_the_run_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_RUN_ID", "launch")
    settings = _settings("--profile", "smoke", "--study", "s")

    environment = study.child_environment(settings, "parent")
    command = study.training_command(settings, "keras", "default", 3)

    assert "MLFLOW_RUN_ID" not in environment
    assert json.loads(environment["MLFLOW_RUN_CONTEXT"]) == {tracking.TAG_STUDY: "s", "mlflow.parentRunId": "parent"}
    assert command[1:4] == ["-m", "thread_bench.keras_train", "--profile"]
    assert command[command.index("--seed") + 1] == "3"
    assert command[command.index("--backend") + 1] == "tensorflow"


def test_resuming_with_other_settings_is_refused(tracking_store: str) -> None:
    mlflow.set_experiment("resume")
    tags = {tracking.TAG_ROLE: tracking.ROLE_TRAIN, tracking.TAG_STUDY: "s"}
    with mlflow.start_run(tags=tags):
        mlflow.log_params({"framework": "torch", "backend": "torch", "seed": 0, "profile": "laptop"})
        mlflow.log_params({"data_seed": 0, "epochs": 30, "dataset_digest": "x"})

    with pytest.raises(ValueError, match=r"study 's' already has training runs with profile=\['laptop'\]"):
        study.finished_runs(_settings("--profile", "smoke", "--study", "s", "--experiment", "resume"))


def test_analysis_without_runs_exits_with_a_clear_message(
    tracking_store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        analysis_cli.main(["--experiment", "nothing-here"])

    assert exit_info.value.code == 2
    assert "no experiment named 'nothing-here'" in capsys.readouterr().err


# ------------------------------------------------------------------------- one live process per study


def _fake_run(experiment_id: str, role: str, study_id: str, identity: lifecycle.ProcessIdentity) -> str:
    tags = {tracking.TAG_ROLE: role, tracking.TAG_STUDY: study_id, **tracking.process_tags(identity)}
    return mlflow.MlflowClient().create_run(experiment_id, tags=tags).info.run_id


def test_a_study_refuses_to_start_while_another_process_runs_it(
    tracking_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("THREAD_BENCH_DATA", str(tmp_path / "data"))
    experiment_id = mlflow.MlflowClient().create_experiment("busy")
    live = _fake_run(experiment_id, tracking.ROLE_TRAIN, "s", lifecycle.ProcessIdentity.current())

    with pytest.raises(SystemExit) as exit_info:
        study.main(["--profile", "smoke", "--study", "s", "--experiment", "busy"])

    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"study 's' is already running: train run {live} (pid {os.getpid()} on " in err
    assert not (tmp_path / "data").exists(), "refused before any work"
    assert len(search("busy", tracking.ROLE_STUDY)) == 0


def test_of_two_studies_started_at_once_the_first_goes_on(tracking_store: str) -> None:
    experiment_id = mlflow.MlflowClient().create_experiment("race")
    me = lifecycle.ProcessIdentity.current()
    first = _fake_run(experiment_id, tracking.ROLE_STUDY, "s", me)
    second = _fake_run(experiment_id, tracking.ROLE_STUDY, "s", me)
    settings = _settings("--profile", "smoke", "--study", "s", "--experiment", "race")

    study.refuse_concurrent_study(settings, experiment_id, first)
    with pytest.raises(ValueError, match=f"study 's' is already running: study run {first}"):
        study.refuse_concurrent_study(settings, experiment_id, second)


def test_runs_of_a_killed_study_are_reconciled_not_refused(tracking_store: str) -> None:
    experiment_id = mlflow.MlflowClient().create_experiment("killed")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    identity = lifecycle.ProcessIdentity.current()
    identity = lifecycle.ProcessIdentity(
        identity.host, gone.pid, psutil.Process(gone.pid).create_time(), identity.namespace
    )
    gone.wait()
    runs = [_fake_run(experiment_id, role, "s", identity) for role in (tracking.ROLE_STUDY, tracking.ROLE_TRAIN)]
    settings = _settings("--profile", "smoke", "--study", "s", "--experiment", "killed")

    assert sorted(tracking.reconcile_runs([experiment_id])) == sorted(runs)
    study.refuse_concurrent_study(settings, experiment_id)
    for run_id in runs:
        run = mlflow.MlflowClient().get_run(run_id)
        assert run.info.status == "KILLED"
        assert f"(pid {gone.pid} on " in run.data.tags[tracking.TAG_END_REASON]


def _start_study(tracking_store: str, data: Path) -> subprocess.Popen[str]:
    store.open_store(tracking_store)  # this process reads the store too: its schema must exist before either
    argv = ["--profile", "smoke", "--seeds", "1", "--frameworks", "torch", "--study", "sig", "--experiment", "sig"]
    return subprocess.Popen(
        [sys.executable, "-m", "thread_bench.study", *argv, "--analyze", "false"],
        env={**os.environ, "MLFLOW_TRACKING_URI": tracking_store, "THREAD_BENCH_DATA": str(data)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _wait_for_training(study_process: subprocess.Popen[str]) -> psutil.Process:
    """The training process, once its run has started."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert study_process.poll() is None, study_process.communicate()[1][-3000:]
        if mlflow.get_experiment_by_name("sig") is not None and len(search("sig", tracking.ROLE_TRAIN)):
            children = psutil.Process(study_process.pid).children()
            (training,) = [child for child in children if "thread_bench.torch_train" in child.cmdline()]
            return training
        time.sleep(0.2)
    raise AssertionError("the training never started")


def _statuses() -> dict[str, str]:
    """Role -> status of the study's and the training's run (the preprocess run has FINISHED before)."""
    runs = mlflow.search_runs(experiment_names=["sig"], output_format="list")
    roles = (tracking.ROLE_STUDY, tracking.ROLE_TRAIN)
    return {
        run.data.tags[tracking.TAG_ROLE]: run.info.status for run in runs if run.data.tags[tracking.TAG_ROLE] in roles
    }


def test_sigterm_to_a_study_stops_its_training_and_ends_every_run(tracking_store: str, tmp_path: Path) -> None:
    process = _start_study(tracking_store, tmp_path / "data")
    training = _wait_for_training(process)

    process.send_signal(signal.SIGTERM)  # to the study alone: it stops its training itself
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == 143, stderr[-3000:]
    assert "Traceback" not in stderr
    assert "interrupted (signal SIGTERM): re-run the same command to resume the study" in stderr
    assert not training.is_running()
    assert _statuses() == {tracking.ROLE_STUDY: "KILLED", tracking.ROLE_TRAIN: "KILLED"}
    (trained,) = search("sig", tracking.ROLE_TRAIN).to_dict("records")
    assert trained[f"tags.{tracking.TAG_END_REASON}"] == "signal SIGTERM"


@pytest.mark.slow
def test_a_killed_study_takes_its_training_with_it(tracking_store: str, tmp_path: Path) -> None:
    process = _start_study(tracking_store, tmp_path / "data")
    training = _wait_for_training(process)

    process.kill()  # SIGKILL: the study cannot stop its training; the kernel's parent-death signal does
    process.communicate(timeout=60)
    psutil.wait_procs([training], timeout=120)

    assert not training.is_running()
    assert _statuses() == {tracking.ROLE_STUDY: "RUNNING", tracking.ROLE_TRAIN: "KILLED"}
    tracking.reconcile_runs([mlflow.get_experiment_by_name("sig").experiment_id])  # type: ignore[union-attr]
    assert _statuses() == {tracking.ROLE_STUDY: "KILLED", tracking.ROLE_TRAIN: "KILLED"}
