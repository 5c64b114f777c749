"""The `weave_compare` entry point on a real MLflow store: a FINISHED run with its metrics and artifacts, maps read
from a directory, a CSV or a weave_map run, and bad input reported in one line without a run left behind."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest

from conftest import names_not_in_tracking, private_store
from thread_bench import tracking
from thread_bench.weave_compare import main
from thread_bench.workloads.thread_density import keys
from thread_bench.workloads.thread_density import weave_compare as wc
from weave_helpers import Canvas, make_bolt, weave_map_table, write_weave_map

CANVAS_A = Canvas(10.0, 25.0, 20.0)
#: Cut 4 cm further across the bolt and mounted the other way round.
CANVAS_B = Canvas(14.0, 20.0, 15.0, reversed=True)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with private_store(tmp_path_factory.mktemp("weave-compare-store")) as uri:
        mlflow.MlflowClient().search_experiments()  # the SQLite schema is made here, once, not in the first test
        yield uri


@pytest.fixture(scope="module")
def maps(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two canvases' weave map directories, cut from one bolt."""
    rng = np.random.default_rng(11)
    bolt = make_bolt(rng)
    folder = tmp_path_factory.mktemp("weave-maps")
    return (
        write_weave_map(folder / "a", weave_map_table(bolt, CANVAS_A, rng)),
        write_weave_map(folder / "b", weave_map_table(bolt, CANVAS_B, rng)),
    )


def _runs(experiment: str) -> list[mlflow.entities.Run]:
    if mlflow.get_experiment_by_name(experiment) is None:
        return []
    return mlflow.search_runs(experiment_names=[experiment], output_format="list")


def test_a_comparison_is_one_finished_run_with_metrics_and_artifacts(
    store: str, maps: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    map_a, map_b = maps
    out = tmp_path / "out"
    assert main(["--map_a", str(map_a), "--map_b", str(map_b / "weave_map.csv"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    (run,) = _runs(tracking.WEAVE_EXPERIMENT)
    assert run.info.status == "FINISHED"
    assert f"weave-compare run {run.info.run_id}" in printed
    assert "profiles match at shift 4.0 cm, b reversed" in printed and "consistent with one bolt" in printed
    assert run.data.tags[tracking.TAG_ROLE] == tracking.ROLE_WEAVE_COMPARE
    params = run.data.params
    assert params[keys.PARAM_MAP_A] == str(map_a) and params[keys.PARAM_METHOD] == "cnn"
    assert (params[keys.PARAM_WARP_A], params[keys.PARAM_WARP_B], params[keys.PARAM_MIN_OVERLAP_CM]) == (
        "v",
        "v",
        "6.0",
    )
    assert params[keys.PARAM_N_SURROGATES] == str(wc.N_SURROGATES)
    metrics = run.data.metrics
    assert metrics[keys.SHIFT_CM] == pytest.approx(4.0, abs=0.5) and metrics[keys.REVERSED] == 1.0
    assert metrics[keys.CORRELATION] > 0.8 and metrics[keys.P_VALUE] <= wc.MATCH_P_VALUE
    assert metrics[keys.OVERLAP_CM] >= 15.0
    assert metrics[keys.MEAN_WARP_DENSITY_A_THREADS_PER_CM] == pytest.approx(14.0, abs=1.0)
    assert metrics[keys.WARP_DENSITY_DIFFERENCE_THREADS_PER_CM] == pytest.approx(
        metrics[keys.MEAN_WARP_DENSITY_A_THREADS_PER_CM] - metrics[keys.MEAN_WARP_DENSITY_B_THREADS_PER_CM]
    )
    assert names_not_in_tracking(run) == set()
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert artifacts == {keys.ARTIFACT_WEAVE_COMPARE_FIGURE, keys.ARTIFACT_WEAVE_COMPARE_JSON}
    record = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/{keys.ARTIFACT_WEAVE_COMPARE_JSON}")
    assert record["verdict"] in printed and record["metrics"][keys.SHIFT_CM] == metrics[keys.SHIFT_CM]
    assert len(record["correlation_forward"]) == len(record["shifts_cm"])
    assert sorted(path.name for path in out.iterdir()) == ["weave_compare.json", "weave_compare.png"]
    assert json.loads((out / "weave_compare.json").read_text())["verdict"] == record["verdict"]


def test_maps_are_read_from_weave_map_runs(
    store: str, maps: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A weave_map run's artifact root holds weave_map.csv: ``runs:/<id>`` or the bare id reads it."""
    run_ids = []
    for folder in maps:
        with mlflow.start_run(experiment_id=tracking.ensure_experiment("maps")) as run:
            mlflow.log_artifact(str(folder / "weave_map.csv"))
        run_ids.append(run.info.run_id)
    assert main(["--map_a", f"runs:/{run_ids[0]}", "--map_b", run_ids[1], "--experiment", "from-runs"]) == 0
    assert "consistent with one bolt" in capsys.readouterr().out
    (run,) = _runs("from-runs")
    assert run.info.status == "FINISHED" and run.data.metrics[keys.REVERSED] == 1.0
    assert run.data.params[keys.PARAM_MAP_B] == run_ids[1]


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("path", "--map_b '{path}': no such file or directory"),
        ("run", "--map_b 'runs:/{run}': cannot download weave_map.csv of run {run}"),
        ("column", "lacks the column(s) density_v_true, density_h_true"),
    ],
)
def test_bad_input_is_one_line_and_leaves_no_run(
    store: str,
    maps: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    which: str,
    message: str,
) -> None:
    map_a, _ = maps
    path, run = tmp_path / "no-such-map", "0123456789abcdef0123456789abcdef"
    map_b = {"path": str(path), "run": f"runs:/{run}", "column": str(map_a)}[which]
    extra = ["--method", "true"] if which == "column" else []
    experiment = f"bad-{which}"
    with pytest.raises(SystemExit) as exit_info:
        main(["--map_a", str(map_a), "--map_b", map_b, "--experiment", experiment, *extra])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message.format(path=path, run=run) in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert _runs(experiment) == []  # the maps are read and checked before the run starts


def test_a_failure_inside_the_run_marks_it_failed(
    store: str, maps: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refused(*args: object, **kwargs: object) -> None:
        raise ValueError("the artifact store refused the record")

    monkeypatch.setattr(wc.mlflow, "log_dict", refused)
    with pytest.raises(SystemExit) as exit_info:
        main(["--map_a", str(maps[0]), "--map_b", str(maps[1]), "--experiment", "refused"])
    assert exit_info.value.code == 2
    assert "the artifact store refused the record" in capsys.readouterr().err
    (run,) = _runs("refused")
    assert run.info.status == "FAILED"
    assert "refused the record" in run.data.tags[tracking.TAG_END_REASON]
