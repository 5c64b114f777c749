"""The `preprocessing` entry point: a logged MLflow run, clear errors, nothing left running."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from corpus_helpers import write_grid_corpus
from thread_bench import tracking
from thread_bench.preprocessing import main


def _runs(experiment: str = tracking.DEFAULT_EXPERIMENT) -> list[mlflow.entities.Run]:
    return mlflow.search_runs(experiment_names=[experiment], output_format="list")


def test_logs_a_preprocess_run(tracking_store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus_dir = write_grid_corpus(tmp_path / "corpus", n_paintings=3, patches_per_painting=2)
    args = ["--profile", "smoke", "--source", str(corpus_dir), "--out", str(tmp_path / "data"), "--seed", "3"]
    assert main(args) == 0
    assert "prepared dataset" in capsys.readouterr().out
    (run,) = _runs()
    assert run.info.status == "FINISHED"
    assert run.data.tags[tracking.TAG_ROLE] == tracking.ROLE_PREPROCESS
    digest = run.data.tags[tracking.TAG_DATASET_DIGEST]
    assert run.data.params[tracking.PARAM_DATASET_DIGEST] == digest
    assert run.data.params["seed"] == "3" and run.data.params["profile"] == "smoke"
    assert run.data.params["reused"] == "False"
    assert run.data.metrics["n_train"] > 0 and run.data.metrics["prep_time_s"] > 0
    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)]
    assert artifacts == ["manifest.json"]
    # A second call reuses the dataset (same digest) and says so.
    assert main([*args, "--experiment", "again"]) == 0
    (reused,) = _runs("again")
    assert reused.data.params["reused"] == "True"
    assert reused.data.tags[tracking.TAG_DATASET_DIGEST] == digest


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--profile", "tiny"], "invalid choice: 'tiny'"),
        (["--seed", "three"], "argument --seed: expected int, got 'three'"),
        (["--source", "no/such/dir"], "--source 'no/such/dir': no such directory"),
        (["--input_size", "500"], "input_size=500 must be <= crop_px=200"),
        (["--workers", "0"], "--workers must be >= 1"),
    ],
)
def test_bad_parameters_fail_before_any_run(
    tracking_store: str, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert mlflow.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT) is None


def test_bad_corpus_row_is_reported_without_traceback(
    tracking_store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus_dir = write_grid_corpus(tmp_path / "corpus", n_paintings=3, patches_per_painting=1)
    (corpus_dir / "p1_0_v.png").unlink()
    with pytest.raises(SystemExit) as exit_info:
        main(["--profile", "smoke", "--source", str(corpus_dir), "--out", str(tmp_path / "data")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "row 2 (v_mask): file" in err and "p1_0_v.png not found" in err
    assert "Traceback" not in err


def test_under_mlflow_run_the_work_gets_its_own_linked_run(
    tracking_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `mlflow run` creates the launch run and logs the parameters as given ('' = from the profile).
    client = mlflow.MlflowClient()
    experiment_id = client.create_experiment(tracking.DEFAULT_EXPERIMENT)
    launch = client.create_run(experiment_id)
    client.log_param(launch.info.run_id, "seed", "")
    monkeypatch.setenv("MLFLOW_RUN_ID", launch.info.run_id)
    corpus_dir = write_grid_corpus(tmp_path / "corpus", n_paintings=3, patches_per_painting=2)
    assert main(["--profile", "smoke", "--source", str(corpus_dir), "--out", str(tmp_path / "data")]) == 0
    (work,) = [r for r in _runs() if r.info.run_id != launch.info.run_id]
    assert work.data.params["seed"] == "0"
    assert work.data.tags[tracking.TAG_LAUNCH_RUN_ID] == launch.info.run_id
    assert client.get_run(launch.info.run_id).data.tags[tracking.TAG_LINKED_RUN_ID] == work.info.run_id
