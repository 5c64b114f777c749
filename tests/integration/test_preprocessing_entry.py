"""The `preprocessing` entry point: a logged MLflow run, clear errors, nothing left running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import psutil
import pytest

from corpus_helpers import read_index_rows, write_grid_corpus, write_index
from thread_bench import tracking
from thread_bench.preprocessing import main
from thread_bench.workloads.thread_density import keys as thread_density_keys


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


def _start_preprocessing(data: Path, uri: str) -> subprocess.Popen[str]:
    # Enough patches that the build takes a few seconds, so that the signal lands in the middle of it.
    argv = ["--profile", "laptop", "--n_paintings", "8", "--n_patches", "96", "--out", str(data), "--workers", "2"]
    return subprocess.Popen(
        [sys.executable, "-m", "thread_bench.preprocessing", *argv],
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a command
    )


def test_a_stop_signal_during_preparation_leaves_nothing_behind(tracking_store: str, tmp_path: Path) -> None:
    """SIGTERM to the process alone (a service manager), Ctrl-C to its whole group (a terminal): either way the
    staging directory is removed, the workers end without a traceback and the exit status says which signal."""
    cases = {signal.SIGTERM: tmp_path / "term", signal.SIGINT: tmp_path / "int"}
    processes = {signum: _start_preprocessing(data, tracking_store) for signum, data in cases.items()}
    workers: list[psutil.Process] = []
    deadline = time.monotonic() + 120
    pending = dict(processes)
    while pending and time.monotonic() < deadline:
        for signum, process in list(pending.items()):
            assert process.poll() is None, process.communicate()[1][-2000:]
            children = psutil.Process(process.pid).children()
            # Mid-build: both workers (and multiprocessing's resource tracker) exist, and may still be starting.
            if len(children) >= 3 and list((cases[signum] / "prepared").glob(".*.tmp-*")):
                time.sleep(0.1)
                workers += children
                if signum == signal.SIGINT:
                    os.killpg(process.pid, signum)
                else:
                    process.send_signal(signum)
                del pending[signum]
        time.sleep(0.01)
    assert not pending, "the build never started"

    for signum, process in processes.items():
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 128 + signum, stderr[-2000:]
        assert "Traceback" not in stderr and "BrokenPipeError" not in stderr
        assert f"interrupted (signal {signal.Signals(signum).name})" in stderr
        assert list((cases[signum] / "prepared").iterdir()) == []
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert alive == []


def test_a_rebuilt_dataset_reports_disagreeing_ground_truth(tracking_store: str, tmp_path: Path) -> None:
    corpus_dir = write_grid_corpus(tmp_path / "corpus", n_paintings=3, patches_per_painting=2)
    rows: list[dict[str, object]] = list(read_index_rows(corpus_dir))
    rows[0]["density_v"] = 99.0
    write_index(corpus_dir, rows)

    argv = ["--profile", "smoke", "--source", str(corpus_dir), "--out", str(tmp_path / "data"), "--workers", "1"]
    assert main(argv) == 0

    (run,) = _runs()
    assert run.data.metrics[thread_density_keys.PREP_DENSITY_MISMATCHES] == 1
