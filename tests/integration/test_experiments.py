"""Where runs land: the experiment a command picks (its option, ``MLFLOW_EXPERIMENT_NAME``, the one ``mlflow run
--experiment-name`` gave its launch run, the workload's), and the experiment kind MLflow's UI opens it as."""

from __future__ import annotations

import logging

import mlflow
import pytest

from thread_bench import tracking


def _kind(name: str) -> str | None:
    found = mlflow.get_experiment_by_name(name)
    assert found is not None
    return found.tags.get(tracking.TAG_EXPERIMENT_KIND)


def test_an_experiment_the_suite_creates_opens_as_machine_learning(tracking_store: str) -> None:
    tracking.ensure_experiment("made-here")
    assert _kind("made-here") == tracking.EXPERIMENT_KIND == "custom_model_development"


def test_an_experiment_made_elsewhere_gets_the_kind_unless_one_was_chosen(tracking_store: str) -> None:
    client = mlflow.MlflowClient()
    client.create_experiment("made-by-mlflow-run")  # what `mlflow run --experiment-name` does: no kind
    client.create_experiment("chosen", tags={tracking.TAG_EXPERIMENT_KIND: "genai_development"})
    tracking.ensure_experiment("made-by-mlflow-run")
    tracking.ensure_experiment("chosen")
    assert _kind("made-by-mlflow-run") == tracking.EXPERIMENT_KIND
    assert _kind("chosen") == "genai_development"


def _launched(monkeypatch: pytest.MonkeyPatch, experiment: str | None) -> str:
    """What `mlflow run` gives its entry point: MLFLOW_RUN_ID, and MLFLOW_EXPERIMENT_ID as the process started
    with it (tracking reads it at import); returns the launch run's id."""
    client = mlflow.MlflowClient()
    experiment_id = client.create_experiment(experiment) if experiment else tracking.DEFAULT_EXPERIMENT_ID
    launch = client.create_run(experiment_id)
    monkeypatch.setenv("MLFLOW_RUN_ID", launch.info.run_id)
    monkeypatch.setattr(tracking, "_LAUNCH_EXPERIMENT_ID", str(experiment_id))
    return launch.info.run_id


def test_the_launchers_experiment_is_the_runs_unless_another_is_given(
    tracking_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _launched(monkeypatch, "chosen-at-launch")
    assert tracking.experiment_name(None, "workload-default") == "chosen-at-launch"
    assert tracking.experiment_name("given", "workload-default") == "given"
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from-env")
    assert tracking.experiment_name(None, "workload-default") == "from-env"


def test_the_default_experiment_of_the_launcher_is_not_chosen(
    tracking_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _launched(monkeypatch, None)
    assert tracking.experiment_name(None, "workload-default") == "workload-default"
    # mlflow.set_experiment writes MLFLOW_EXPERIMENT_ID into the process's environment: no launcher's choice.
    monkeypatch.setattr(tracking, "_LAUNCH_EXPERIMENT_ID", None)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", mlflow.MlflowClient().create_experiment("elsewhere"))
    assert tracking.experiment_name(None, "workload-default") == "workload-default"
    monkeypatch.setattr(tracking, "_LAUNCH_EXPERIMENT_ID", "12345")  # a store that does not know it: no failure
    assert tracking.experiment_name(None, "workload-default") == "workload-default"


def test_a_run_apart_from_its_launch_run_says_how_to_keep_them_together(
    tracking_store: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    launch_id = _launched(monkeypatch, None)
    with caplog.at_level(logging.WARNING), tracking.tracked_run("thread-density") as run:
        pass
    assert run.data.tags[tracking.TAG_LAUNCH_RUN_ID] == launch_id
    assert "mlflow.parentRunId" not in mlflow.get_run(run.info.run_id).data.tags
    assert f"`mlflow run` put its launch run {launch_id} in the Default experiment" in caplog.text
    assert "pass `--experiment-name thread-density` to mlflow run" in caplog.text


def test_a_run_beside_its_launch_run_is_its_child_without_a_warning(
    tracking_store: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    launch_id = _launched(monkeypatch, "together")
    with caplog.at_level(logging.WARNING), tracking.tracked_run(tracking.experiment_name(None)) as run:
        pass
    finished = mlflow.get_run(run.info.run_id)
    assert finished.data.tags["mlflow.parentRunId"] == launch_id
    assert mlflow.get_run(launch_id).info.experiment_id == finished.info.experiment_id
    assert "launch run" not in caplog.text
