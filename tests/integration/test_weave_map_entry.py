"""The ``weave_map`` entry point on small synthetic canvases: one MLflow run with the maps, the CSV, the figure and
the errors against the exact truth; the champion, the shipped model or a given one; bad input refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from thread_bench import tracking
from thread_bench.models import pyfunc
from thread_bench.workloads.thread_density import canvas, weave, weave_map
from thread_bench.workloads.thread_density.config import ModelConfig

pytestmark = pytest.mark.integration

#: Small enough for a test (10 x 7 cm at 80 px/cm: 19 x 13 windows), large enough for edges and an interior; 16 bit,
#: so a TIFF, decoded into a mapped file.
SMALL = canvas.CanvasSpec(width_cm=10.0, height_cm=7.0, px_per_cm=80.0, seed=5, bit_depth=16)


@pytest.fixture(scope="module")
def small_canvas(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return canvas.write_canvas(canvas.render_canvas(SMALL), tmp_path_factory.mktemp("canvas"), "small")


def _run(argv: list[str]) -> mlflow.entities.Run:
    """The run of ``weave_map argv``: the newest of the weave-maps experiment."""
    assert weave_map.main(argv) == 0
    runs = mlflow.search_runs(
        experiment_names=[tracking.WEAVE_EXPERIMENT], order_by=["attributes.start_time DESC"], output_format="list"
    )
    return runs[0]


def test_a_radiograph_with_its_truth_gives_maps_files_and_errors(
    tracking_store: str, small_canvas: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image, truth = small_canvas
    out = tmp_path / "maps"
    run = _run(["--radiograph", str(image), "--px_per_cm", "80", "--truth", str(truth), "--out", str(out)])
    assert run.info.status == "FINISHED"
    assert run.data.tags[tracking.TAG_ROLE] == tracking.ROLE_WEAVE_MAP
    params = run.data.params
    assert params["model_chosen"] == "shipped" and params["window_cm"] == "1.0" and params["step_cm"] == "0.5"
    metrics = run.data.metrics
    # The shipped laptop model and the FFT both count this canvas to within a thread per cm on average.
    for name in ("mae_v_cnn", "mae_h_cnn", "mae_v_fft", "mae_h_fft"):
        assert 0 < metrics[name] < 1.5, (name, metrics[name])
    assert metrics["n_windows"] == 19 * 13 and 0 < metrics["n_truth_edge"] < metrics["n_truth"] <= metrics["n_valid"]
    assert metrics["n_outside"] > 0  # the margin around the canvas
    artifacts = {item.path for item in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {weave.CSV_NAME, weave.FIGURE_NAME, weave.GRID_NAME, weave.SUMMARY_NAME, weave.MAPS_DIR} <= artifacts
    table = pd.read_csv(out / weave.CSV_NAME)
    assert list(table.columns) == [*weave.COLUMNS, *weave.TRUTH_COLUMNS]
    assert table["valid"].sum() == metrics["n_valid"]
    # Blank windows (the margin) are marked, never filled.
    assert table.loc[table["valid"] == 0, "density_v_cnn"].isna().all()
    assert np.load(out / weave.MAPS_DIR / "density_v_true.npy").shape == (13, 19)
    printed = capsys.readouterr()
    assert "weave map: 13 x 19 windows" in printed.out and "MAE vs truth" in printed.out
    assert "model shipped with thread_bench is used" in printed.err and "CNN windows" in printed.err


def test_the_champion_is_the_default_model(
    tracking_store: str, small_canvas: tuple[Path, Path], tmp_path: Path
) -> None:
    image, _ = small_canvas
    champion = _register_shipped_as_champion()
    run = _run(["--radiograph", str(image), "--px_per_cm", "80", "--out", str(tmp_path / "champion")])
    assert run.data.params["model_chosen"] == "champion" and run.data.params["model_uri"] == champion
    # The same weights as the shipped model: the same maps.
    _run(
        ["--radiograph", str(image), "--px_per_cm", "80", "--model_uri", "shipped", "--out", str(tmp_path / "shipped")]
    )
    for name in (weave.CNN_V, weave.CNN_H):
        assert np.array_equal(
            np.load(tmp_path / "champion" / weave.MAPS_DIR / f"{name}.npy"),
            np.load(tmp_path / "shipped" / weave.MAPS_DIR / f"{name}.npy"),
            equal_nan=True,
        )


def _register_shipped_as_champion() -> str:
    """The shipped model's weights logged as a run's model and registered as the thread-density champion."""
    architecture = json.loads((weave_map.SHIPPED_MODEL / "architecture.json").read_text())
    wrapped = pyfunc.load_files(weave_map.SHIPPED_MODEL)
    product = pyfunc.Product(
        architecture["workload"], architecture["serving"], architecture["preprocessing"], architecture["step"]
    )
    with mlflow.start_run(experiment_id=mlflow.create_experiment("champion-source")):
        uri = pyfunc.log_model(
            wrapped.model,
            wrapped.models,
            ModelConfig(**architecture["model"]),
            architecture["precision"],
            np.zeros((1, 64, 64), np.uint8),
            product,
            framework="torch",
            backend="torch",
            weights_format=pyfunc.TORCH_STATE_DICT,
            requirements=[],
        )
    name = tracking.registered_model_name(tracking.DEFAULT_EXPERIMENT)
    version = mlflow.register_model(uri, name)
    mlflow.MlflowClient().set_registered_model_alias(name, tracking.ALIAS_CHAMPION, version.version)
    return tracking.alias_uri(name)


def test_without_arguments_it_maps_the_embedded_canvas(
    tracking_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(canvas, "DEFAULT_CANVAS", SMALL)  # the real one (24 x 18 cm) is the benchmark's
    run = _run([])
    assert run.info.status == "FINISHED" and "synthetic" in run.data.params["radiograph"]
    assert "mae_v_cnn" in run.data.metrics  # scored against its own truth
    assert (tmp_path / weave_map.DEFAULT_OUT_ROOT / weave_map.DEFAULT_CANVAS_NAME / weave.CSV_NAME).is_file()
    artifacts = {item.path for item in mlflow.MlflowClient().list_artifacts(run.info.run_id, "input")}
    assert artifacts == {f"input/{weave_map.DEFAULT_CANVAS_NAME}.tiff"}  # 16 bit: a TIFF
    assert "rendering the synthetic canvas" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--radiograph", "nowhere.png", "--px_per_cm", "80"], "radiograph nowhere.png: no such file"),
        (["--radiograph", "{image}"], "px_per_cm is required with radiograph"),
        (["--radiograph", "{image}", "--px_per_cm", "sixty"], "px_per_cm must be a number, got 'sixty'"),
        (
            ["--radiograph", "{image}", "--px_per_cm", "80", "--model_uri", "runs:/0123/nope"],
            "model_uri 'runs:/0123/nope'",
        ),
        (
            ["--radiograph", "{image}", "--px_per_cm", "40", "--truth", "{truth}"],
            "made at px_per_cm=80, the map uses px_per_cm=40",
        ),
        (["--radiograph", "{image}", "--px_per_cm", "80", "--window_cm", "0.5"], "smaller than the model's window"),
        (
            ["--radiograph", "{image}", "--px_per_cm", "80", "--step"],
            "unknown option --step (under `mlflow run`: the parameter -P step=…); did you mean --step_cm?",
        ),
    ],
)
def test_bad_input_is_one_line_naming_what_is_wrong(
    tracking_store: str,
    small_canvas: tuple[Path, Path],
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    image, truth = small_canvas
    argv = [arg.format(image=image, truth=truth) for arg in argv]
    with pytest.raises(SystemExit) as stopped:
        weave_map.main(argv)
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error
    runs = mlflow.search_runs(experiment_names=[tracking.WEAVE_EXPERIMENT], output_format="list")
    assert all(run.info.status == "FAILED" for run in runs)  # a run that started is never left RUNNING


@pytest.mark.parametrize("same_bolt", [True, False], ids=["one bolt", "two bolts"])
def test_the_maps_of_two_canvases_are_compared_through_their_runs(
    tracking_store: str, tmp_path: Path, same_bolt: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """weave_map on two rendered canvases, then weave_compare on the two runs: a pair cut from one bolt lines up at
    its true shift, well beyond chance; a pair of two bolts of the same nominal densities does not. (Seed 2 of the
    pair layouts: 16 x 8 cm at 64 px/cm is small for matching, and not every pair that size is found.)"""
    from thread_bench.workloads.thread_density import keys, weave_compare

    make = canvas.same_bolt_pair if same_bolt else canvas.different_bolt_pair
    specs = make(2, width_cm=16.0, height_cm=8.0, px_per_cm=64.0)
    runs = []
    for index, spec in enumerate(specs):
        image, truth = canvas.write_canvas(canvas.render_canvas(spec), tmp_path, f"canvas{index}")
        runs.append(_run(["--radiograph", str(image), "--truth", str(truth), "--out", str(tmp_path / f"map{index}")]))
    argv = ["--map_a", f"runs:/{runs[0].info.run_id}", "--map_b", f"runs:/{runs[1].info.run_id}", "--method", "fft"]
    assert weave_compare.main(argv) == 0
    comparison = _run_of_role(tracking.ROLE_WEAVE_COMPARE)
    metrics = comparison.data.metrics
    verdict = capsys.readouterr().out
    if same_bolt:
        true_shift = (specs[1].bolt_offset_cm or 0.0) - (specs[0].bolt_offset_cm or 0.0)
        assert metrics[keys.SHIFT_CM] == pytest.approx(true_shift, abs=0.5)
        assert metrics[keys.P_VALUE] <= 0.05 and "consistent with one bolt" in verdict
    else:
        assert metrics[keys.P_VALUE] > 0.2 and "no match better than chance" in verdict


def _run_of_role(role: str) -> mlflow.entities.Run:
    runs = mlflow.search_runs(
        experiment_names=[tracking.WEAVE_EXPERIMENT],
        filter_string=f"tags.{tracking.TAG_ROLE} = '{role}'",
        output_format="list",
    )
    assert len(runs) == 1
    return runs[0]
