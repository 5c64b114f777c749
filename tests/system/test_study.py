"""The study entry point: a tiny real study (2 seeds x 2 frameworks, smoke profile), resumed, and its report."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import psutil
import pytest
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT

from analysis import cli as analysis_cli
from thread_bench import lifecycle, store, study, tracking
from thread_bench.training import driver
from thread_bench.workloads.thread_density import keys as thread_density_keys

# seaborn 0.13's boxplot passes matplotlib's deprecated ``vert``; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:vert. bool was deprecated:matplotlib.MatplotlibDeprecationWarning")


ROOT = Path(__file__).resolve().parents[2]


def search(experiment: str, role: str) -> pd.DataFrame:
    found = mlflow.search_runs(
        experiment_names=[experiment], filter_string=f"tags.`{tracking.TAG_ROLE}` = '{role}'", output_format="pandas"
    )
    assert isinstance(found, pd.DataFrame)
    return found


def test_tiny_study_trains_resumes_and_reports(
    tracking_store: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
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
    expected = {"report/table.md", "report/table.html", "report/report.md", "report/figures", "report/held_out"}
    assert expected <= artifacts

    # The held-out-style test: each best model and the FFT on the same windows, in the report and on the evaluations.
    by_difficulty = pd.read_csv(out / "held_out" / "held_out_by_difficulty.csv")
    assert {"nmae_keras", "nmae_torch", "nmae_fft"} <= set(by_difficulty.columns)
    assert {"weave", "thread profile", "imaging", "density (threads/cm)"} <= set(by_difficulty["factor"])
    assert (out / "held_out" / "held_out.png").stat().st_size > 0
    report_text = (out / "report.md").read_text()
    assert "## Held-out styles" in report_text
    assert report_text.count(" held-out samples: ") == 2  # one verdict per framework
    # Every seed's model is scored too (the best under its group, the other by run id), for the verdicts, which
    # two seeds per framework cannot give.
    for framework in ("keras", "torch"):
        assert f"held-out nMAE: too few seeds to call ({framework} has 2; a verdict needs 3" in report_text
    assert "## Verdicts" in report_text and f"{tracking.BEST_VAL_LOSS}: too few seeds to call" in report_text
    held_out = evaluations[f"metrics.{thread_density_keys.HELD_OUT_TEST_LOSS}"]
    assert (held_out > 0).all()
    assert (evaluations[f"metrics.{thread_density_keys.HELD_OUT_FFT_TEST_LOSS}"] > 0).all()

    # benchmarks/held_out_seeds.py on this study at its smallest (it needs a study's runs: here is one).
    script = [sys.executable, str(ROOT / "benchmarks" / "held_out_seeds.py"), "--experiment", "e2e", "--study", "tiny"]
    scored = subprocess.run(
        [*script, "--windows", "8", "--out", str(tmp_path / "seeds")],
        env={**os.environ, "MLFLOW_TRACKING_URI": tracking_store, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert "torch: held-out nMAE" in scored.stdout and "keras: held-out nMAE" in scored.stdout

    # Resuming the same study trains nothing more.
    capsys.readouterr()
    assert study.main([*argv, "--analyze", "false"]) == 0
    assert "0 trained, 4 already finished" in capsys.readouterr().out
    assert len(search("e2e", tracking.ROLE_TRAIN)) == 4

    # Resumed with another epoch budget: every run leaves the study (set aside, not deleted), the one asked for
    # is trained again.
    with caplog.at_level(logging.INFO, logger="thread_bench.study"):
        assert study.main([*argv, "--analyze", "false", "--frameworks", "torch", "--seeds", "1", "--epochs", "1"]) == 0
    assert "1 trained, 0 already finished" in capsys.readouterr().out
    assert "torch/default/0: re-run, settings differ: epochs 2 != 1" in caplog.messages
    trainings = search("e2e", tracking.ROLE_TRAIN)
    assert len(trainings) == 5
    (kept,) = trainings[trainings[f"tags.{tracking.TAG_STUDY}"] == "tiny"].to_dict("records")
    assert (kept["params.framework"], kept["params.seed"], kept["params.epochs"]) == ("torch", "0", "1")
    assert (trainings[f"tags.{tracking.TAG_SET_ASIDE_STUDY}"] == "tiny").sum() == 4


def _settings(*argv: str) -> study.StudySettings:
    return study.settings_from_args(study.build_parser().parse_args(list(argv)))


def test_study_defaults_and_validation() -> None:
    settings = _settings("--profile", "smoke")

    assert settings.study == "smoke-tensorflow-data0"
    assert settings.seeds == (0, 1, 2)
    assert settings.frameworks == ("keras", "torch")
    assert settings.epochs == 2 and settings.train_given == {}
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


# ------------------------------------------------------------------------------- a training's settings


def test_the_plan_trains_seed_by_seed_and_passes_on_only_what_was_given() -> None:
    settings = _settings("--profile", "smoke", "--seeds", "2", "--variants", "tuned,default", "--epochs", "3")

    requests = study.plan(settings)

    assert list(requests)[:4] == [
        ("keras", "tuned", 0),
        ("torch", "tuned", 0),
        ("keras", "default", 0),
        ("torch", "default", 0),
    ]
    assert len(requests) == 8
    command = study.training_command(requests[("torch", "tuned", 1)])
    assert command[1:3] == ["-m", "thread_bench.torch_train"]
    assert command[3:] == [
        "--workload=thread_density",
        "--profile=smoke",
        "--variant=tuned",
        "--experiment=thread-density",
        "--epochs=3",
        "--seed=1",
    ], "the profile's and the variant's values are the training's to resolve, not the study's to repeat"


@pytest.mark.parametrize("framework", ["keras", "torch"])
def test_the_training_command_round_trips_through_the_entry_points_parser(framework: str, tmp_path: Path) -> None:
    """The command a study hands a training, parsed by that training's entry point, resolves to what the study
    checked before it started."""
    source = tmp_path / "corpus"
    source.mkdir()
    (source / "index.csv").touch()  # a corpus directory (read only by the preparation, which this test skips)
    argv = ["--profile", "smoke", "--backend", "jax", "--variants", "tuned", "--precision", "bf16", "--epochs", "3"]
    argv += ["--dropout", "0.25", "--data_seed", "7", "--subpatches_per_patch", "3", "--source", str(source)]
    settings = _settings(*argv, "--seeds", "2", "--first_seed", "4", "--experiment=-x")  # "-x": still a value
    request = study.plan(settings)[(framework, "tuned", 5)]

    command = study.training_command(request)
    entry = driver.entry_point(framework)
    parsed = driver.request_from_args(entry.build_parser().parse_args(command[3:]), entry.framework)

    assert command[2] == entry.framework.entry_module
    assert parsed == request.resolve()
    train = parsed.train
    assert (train.seed, train.epochs, train.precision, train.deterministic) == (5, 3, "bf16", False)
    assert (parsed.model.dropout, parsed.data.seed, parsed.data.subpatches_per_patch) == (0.25, 7, 3)
    assert parsed.data.source == str(source) and parsed.experiment == "-x"
    assert parsed.options.backend == ("jax" if framework == "keras" else "torch")


def test_a_digits_training_command_round_trips_too() -> None:
    """Another workload's options (model, implementation style, data) and a framework without a backend option."""
    argv = ["--workload", "digits", "--model", "cnn3", "--implementation", "keras_layers", "--frameworks", "tensorflow"]
    settings = _settings(*argv, "--profile", "smoke", "--n_samples", "600", "--data_seed", "3", "--seeds", "1")
    request = study.plan(settings)[("tensorflow", "default", 0)]

    command = study.training_command(request)
    entry = driver.entry_point("tensorflow")
    parsed = driver.request_from_args(entry.build_parser().parse_args(command[3:]), entry.framework)

    assert parsed == request.resolve()
    assert parsed.workload == "digits" and parsed.model.implementation == "keras_layers"
    assert (parsed.data.n_samples, parsed.data.seed) == (600, 3)
    assert study.settings_params(request)["implementation"] == "keras_layers"


def test_a_bad_setting_stops_the_study_before_any_work(
    tracking_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A value one of the trainings would refuse (here: a digits style that Keras does not have) ends the study
    at once, in one line naming the parameter: no data, no run, no training."""
    monkeypatch.setenv("THREAD_BENCH_DATA", str(tmp_path / "data"))
    store.open_store(tracking_store)  # the store's own log lines (a new schema) come before
    capsys.readouterr()
    argv = ["--workload", "digits", "--model", "cnn3", "--implementation", "module", "--profile", "smoke"]

    with pytest.raises(SystemExit) as exit_info:
        study.main([*argv, "--study", "bad", "--experiment", "bad"])

    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "implementation='module' does not fit the digits workload in keras" in err
    assert not (tmp_path / "data").exists()
    assert mlflow.get_experiment_by_name("bad") is None


def test_a_bad_setting_built_in_code_is_refused_before_the_executor_runs(
    tracking_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THREAD_BENCH_DATA", str(tmp_path / "data"))
    settings = dataclasses.replace(_settings("--profile", "smoke", "--experiment", "bad"), model_given={"dropout": 1.5})

    class Refusing:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"the executor was used ({name}) before the settings were checked")

    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.5"):
        study.run_study(settings, Refusing())  # type: ignore[arg-type]
    assert not (tmp_path / "data").exists()


def test_training_subprocesses_are_tagged_through_the_run_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_RUN_ID", "launch")
    settings = _settings("--profile", "smoke", "--study", "s")

    environment = study.child_environment(settings, "parent")
    command = study.training_command(study.plan(settings)[("keras", "default", 2)])

    assert "MLFLOW_RUN_ID" not in environment
    assert json.loads(environment["MLFLOW_RUN_CONTEXT"]) == {tracking.TAG_STUDY: "s", "mlflow.parentRunId": "parent"}
    assert command[1:3] == ["-m", "thread_bench.keras_train"]
    assert "--seed=2" in command and "--backend=tensorflow" in command


# ------------------------------------------------------------------------------------------ resuming

COMMIT = "c0ffee" * 6 + "0123"
DIGEST = "d1" * 32


def _finished(
    settings: study.StudySettings,
    training: study.Training,
    *,
    commit: str | None = COMMIT,
    backend: str | None = None,
    run_id: str = "",
    **changes: str,
) -> study.FinishedRun:
    """A finished run of ``training`` as a training of ``settings`` logs it, with ``changes`` to its params."""
    framework, variant, _ = training
    request = study.training_request(settings, training, backend)
    params = {**study.settings_params(request), tracking.PARAM_DATASET_DIGEST: DIGEST}
    params |= {"framework": framework, "backend": backend or settings.backend_of(framework), "variant": variant}
    return study.FinishedRun(run_id or f"run-{study.label(training)}", {**params, **changes}, commit)


def test_resume_skips_what_matches_seed_by_seed(caplog: pytest.LogCaptureFixture) -> None:
    settings = _settings("--profile", "smoke", "--seeds", "2", "--backend", "jax")
    done = [
        _finished(settings, ("keras", "default", 0)),
        _finished(settings, ("keras", "default", 1), backend="tensorflow"),  # a tensorflow run is not a jax run
    ]

    with caplog.at_level(logging.INFO, logger="thread_bench.study"):
        resume = study.pending(settings, study.plan(settings), done, COMMIT, DIGEST)

    assert resume.skipped == [("keras", "default", 0)]
    assert resume.todo == [("torch", "default", 0), ("keras", "default", 1), ("torch", "default", 1)]
    assert resume.set_aside == {}, "a run of another backend is of another training, kept in the study"
    assert "re-run" not in caplog.text


def test_variants_are_resumed_each_on_its_own() -> None:
    settings = _settings("--profile", "smoke", "--seeds", "1", "--frameworks", "torch", "--variants", "tuned,default")
    done = [_finished(settings, ("torch", "default", 0))]

    resume = study.pending(settings, study.plan(settings), done, COMMIT, DIGEST)

    assert (resume.todo, resume.skipped) == ([("torch", "tuned", 0)], [("torch", "default", 0)])


@pytest.mark.parametrize(
    ("given", "run", "commit", "digest", "why"),
    [
        ([], {}, COMMIT, DIGEST, None),
        (["--epochs", "5"], {}, COMMIT, DIGEST, "settings differ: epochs 2 != 5"),
        (
            ["--dropout", "0.3"],
            {"batch_size": "16"},
            COMMIT,
            DIGEST,
            "settings differ: batch_size 16 != 8, dropout 0.1 != 0.3",
        ),
        ([], {}, COMMIT, "d2" * 32, "dataset digest differs (d1d1d1d1d1d1 != d2d2d2d2d2d2)"),
        ([], {}, "abc123" * 7, DIGEST, f"commit {COMMIT[:12]} != abc123abc123"),
        ([], {"commit": None}, COMMIT, DIGEST, f"commit none != {COMMIT[:12]}"),
        ([], {"commit": None}, None, DIGEST, None),  # outside a git checkout on both sides: nothing to compare
        ([], {}, None, DIGEST, f"commit {COMMIT[:12]} != none"),
    ],
    ids=["same", "epochs", "two-settings", "digest", "commit", "run-without-commit", "no-git-at-all", "no-git-now"],
)
def test_resume_reruns_what_differs_and_says_why(
    given: list[str],
    run: dict[str, Any],
    commit: str | None,
    digest: str,
    why: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = _settings("--profile", "smoke", "--seeds", "1", "--frameworks", "torch", "--dropout", "0.1")
    now = _settings("--profile", "smoke", "--seeds", "1", "--frameworks", "torch", "--dropout", "0.1", *given)
    logged = dict(run)
    finished = _finished(before, ("torch", "default", 0), commit=logged.pop("commit", COMMIT), **logged)

    with caplog.at_level(logging.INFO, logger="thread_bench.study"):
        resume = study.pending(now, study.plan(now), [finished], commit, digest)

    if why is None:
        assert (resume.todo, resume.skipped, resume.set_aside) == ([], [("torch", "default", 0)], {})
        assert caplog.messages == []
    else:
        assert (resume.todo, resume.skipped) == ([("torch", "default", 0)], [])
        assert resume.set_aside == {finished.run_id: why}
        assert caplog.messages == [f"torch/default/0: re-run, {why}"]


def test_a_run_not_asked_for_is_set_aside_when_it_differs(caplog: pytest.LogCaptureFixture) -> None:
    """Seed 1 is not asked for this time: kept in the study when it matches, set aside (not re-run) otherwise."""
    before = _settings("--profile", "smoke", "--seeds", "2", "--frameworks", "torch")
    now = _settings("--profile", "smoke", "--seeds", "1", "--frameworks", "torch", "--epochs", "4")
    done = [_finished(before, ("torch", "default", seed)) for seed in (0, 1)]

    with caplog.at_level(logging.INFO, logger="thread_bench.study"):
        resume = study.pending(now, study.plan(now), done, COMMIT, DIGEST)

    assert resume.todo == [("torch", "default", 0)]
    assert sorted(resume.set_aside) == ["run-torch/default/0", "run-torch/default/1"]
    assert caplog.messages == [
        "torch/default/1 (torch, run run-torch/default/1): set aside, settings differ: epochs 2 != 4; not asked "
        "for by this command",
        "torch/default/0: re-run, settings differ: epochs 2 != 4",
    ]


def test_runs_that_differ_are_taken_out_of_the_study(tracking_store: str, caplog: pytest.LogCaptureFixture) -> None:
    """Against the store: the same settings skip; a changed setting sets the run aside (out of the study and its
    analysis, with the reason) and re-runs its training."""
    settings = _settings(
        "--profile", "smoke", "--seeds", "1", "--frameworks", "torch", "--study", "s", "--experiment", "r"
    )
    finished = _finished(settings, ("torch", "default", 0), commit=study.current_commit())
    mlflow.set_experiment("r")
    with mlflow.start_run(tags={tracking.TAG_ROLE: tracking.ROLE_TRAIN, tracking.TAG_STUDY: "s"}) as run:
        mlflow.log_params(finished.params)
        if finished.commit:
            mlflow.set_tag(MLFLOW_GIT_COMMIT, finished.commit)  # as MLflow tags it in a git checkout

    resume = study.take_stock(settings, study.plan(settings), DIGEST)
    assert (resume.todo, resume.skipped, resume.set_aside) == ([], [("torch", "default", 0)], {})

    changed = _settings(
        "--profile",
        "smoke",
        "--seeds",
        "1",
        "--frameworks",
        "torch",
        "--study",
        "s",
        "--experiment",
        "r",
        "--epochs",
        "3",
    )
    with caplog.at_level(logging.INFO, logger="thread_bench.study"):
        resume = study.take_stock(changed, study.plan(changed), DIGEST)

    assert resume.todo == [("torch", "default", 0)]
    assert "torch/default/0: re-run, settings differ: epochs 2 != 3" in caplog.messages
    tags = mlflow.MlflowClient().get_run(run.info.run_id).data.tags
    assert tracking.TAG_STUDY not in tags
    assert tags[tracking.TAG_SET_ASIDE_STUDY] == "s"
    assert tags[tracking.TAG_SET_ASIDE_REASON] == "settings differ: epochs 2 != 3"
    assert study.finished_runs(changed) == []


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


@pytest.mark.fault
def test_runs_of_a_killed_study_are_reconciled_not_refused(tracking_store: str) -> None:
    experiment_id = mlflow.MlflowClient().create_experiment("killed")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    identity = lifecycle.ProcessIdentity.current()
    identity = lifecycle.ProcessIdentity(
        identity.host, gone.pid, lifecycle.start_since_boot(gone.pid), identity.namespace
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


@pytest.mark.fault
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


@pytest.mark.fault
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
