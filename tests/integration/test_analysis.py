"""The analysis on fabricated training runs: selection, grouping, digest check, statistics, report, figures."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import matplotlib
import mlflow
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from analysis import cli as analysis_cli
from analysis import evaluate, plots, report, runs, stats
from conftest import names_not_in_tracking, private_store, tracking_names
from thread_bench import tracking, workloads
from thread_bench.config import resolve
from thread_bench.data.prepared import PreparedDataset
from thread_bench.workloads.thread_density import baseline as fft
from thread_bench.workloads.thread_density import keys as thread_density_keys
from thread_bench.workloads.thread_density.baseline import fft_baseline_of
from thread_bench.workloads.thread_density.config import PROFILES, DataConfig
from thread_bench.workloads.thread_density.prepare import ensure_prepared, synthetic_corpus_dir

DIGEST = "d" * 64

# seaborn 0.13's boxplot passes matplotlib's deprecated ``vert``; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:vert. bool was deprecated:matplotlib.MatplotlibDeprecationWarning")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One private store for the module (creating an MLflow SQLite schema takes seconds)."""
    with private_store(tmp_path_factory.mktemp("analysis-store")) as uri:
        yield uri


@pytest.fixture
def experiment(store: str, request: pytest.FixtureRequest) -> str:
    """A fresh experiment per test in the module's store."""
    return str(request.node.name)


def fabricate_run(
    framework: str,
    seed: int,
    *,
    experiment: str,
    study: str | None = "s1",
    backend: str | None = None,
    digest: str = DIGEST,
    epochs: int = 4,
    epoch_time_s: float = 2.0,
    val_floor: float = 0.1,
    status: str = "FINISHED",
    params: dict[str, object] | None = None,
    logged_before_pass_times: bool = False,
) -> str:
    """A training run with the names training logs (docs/DESIGN.md §5), without a model.

    ``logged_before_pass_times``: without the steady-state pass times, like a run logged before training
    logged them.
    """
    mlflow.set_experiment(experiment)
    tags = {tracking.TAG_ROLE: tracking.ROLE_TRAIN, tracking.TAG_FRAMEWORK: framework}
    if study:
        tags[tracking.TAG_STUDY] = study
    rng = np.random.default_rng(seed)
    with mlflow.start_run(run_name=f"{framework}-{seed}", tags=tags) as run:
        mlflow.log_params(
            {
                "framework": framework,
                "backend": backend or framework,
                "seed": seed,
                "profile": "smoke",
                "dataset_digest": digest,
                "batch_size": 8,
                **(params or {}),
            }
        )
        val_losses, first_epoch_time_s = [], 0.0
        for epoch in range(epochs):
            train_loss = 1.0 / (epoch + 1) + 0.01 * rng.random()
            val_loss = val_floor + 0.5 / (epoch + 1) + 0.01 * rng.random()
            val_losses.append(val_loss)
            warmup = 3.0 if epoch == 0 else 1.0
            this_epoch_time_s = epoch_time_s * warmup * (1 + 0.05 * rng.random())
            first_epoch_time_s = first_epoch_time_s or this_epoch_time_s
            mlflow.log_metrics(
                {
                    tracking.TRAIN_LOSS: train_loss,
                    tracking.VAL_LOSS: val_loss,
                    tracking.EPOCH_TIME_S: this_epoch_time_s,
                    tracking.TRAIN_TIME_S: 0.9 * epoch_time_s * warmup,
                    tracking.VAL_TIME_S: 0.1 * epoch_time_s,
                    tracking.HOST_RSS_PEAK_BYTES: 1e9 + 1e6 * epoch,
                },
                step=epoch,
            )
        mlflow.log_metrics(
            {
                tracking.BEST_VAL_LOSS: min(val_losses),
                tracking.BEST_EPOCH: int(np.argmin(val_losses)),
                tracking.MIN_TRAIN_LOSS: 1.0 / epochs,
                tracking.EPOCHS_TRAINED: epochs,
                tracking.TOTAL_TRAIN_TIME_S: epochs * epoch_time_s + 2 * epoch_time_s,
                tracking.FIRST_EPOCH_TIME_S: first_epoch_time_s,
                tracking.MEDIAN_EPOCH_TIME_S: epoch_time_s,
                tracking.TRAIN_SAMPLES_PER_S: 8 / (0.9 * epoch_time_s),
                tracking.HOST_RSS_PEAK_BYTES: 1.5e9,
            }
        )
        if not logged_before_pass_times:
            mlflow.log_metrics(
                {tracking.MEDIAN_TRAIN_TIME_S: 0.9 * epoch_time_s, tracking.MEDIAN_VAL_TIME_S: 0.1 * epoch_time_s}
            )
        run_id = run.info.run_id
    if status != "FINISHED":
        mlflow.MlflowClient().set_terminated(run_id, status=status)
    return str(run_id)


def selected(experiment: str, study: str | None = "s1") -> pd.DataFrame:
    return runs.assign_groups(runs.search_training_runs(experiment, study=study))


def fake_evaluations(per_group_best: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "group": per_group_best["group"],
            "seed": per_group_best["seed"],
            "source_run_id": per_group_best["run_id"],
            tracking.TEST_LOSS: [0.12, 0.11][: len(per_group_best)],
            thread_density_keys.TEST_MAE_THREADS_PER_CM: [1.5, 1.4][: len(per_group_best)],
            tracking.PREDICT_TIME_S: [0.3, 0.2][: len(per_group_best)],
        }
    )


def test_selects_finished_training_runs_of_the_study(experiment: str) -> None:
    keep = [fabricate_run("keras", 0, experiment=experiment), fabricate_run("torch", 0, experiment=experiment)]
    fabricate_run("torch", 1, experiment=experiment, status="FAILED")
    fabricate_run("keras", 1, experiment=experiment, study="other")
    mlflow.set_experiment(experiment)
    with mlflow.start_run(tags={tracking.TAG_ROLE: tracking.ROLE_EVALUATION, tracking.TAG_STUDY: "s1"}):
        pass

    found = selected(experiment)

    assert sorted(found["run_id"]) == sorted(keep)
    assert list(found["group"]) == ["keras", "torch"]
    assert found["seed"].tolist() == [0, 0]
    assert len(selected(experiment, study=None)) == 3


def test_no_runs_is_a_clear_error(experiment: str) -> None:
    fabricate_run("torch", 0, experiment=experiment, status="FAILED")
    with pytest.raises(ValueError, match=rf"no FINISHED training runs found for experiment '{experiment}', study 's1'"):
        runs.search_training_runs(experiment, study="s1")
    with pytest.raises(ValueError, match=re.escape("did not finish: {'FAILED': 1}")):
        runs.search_training_runs(experiment, study="s1")
    with pytest.raises(ValueError, match="no experiment named 'missing'"):
        runs.search_training_runs("missing")


def test_groups_split_on_knobs_that_vary_within_a_framework(experiment: str) -> None:
    fabricate_run("keras", 0, experiment=experiment, backend="tensorflow")
    fabricate_run("keras", 1, experiment=experiment, backend="jax")
    fabricate_run("torch", 0, experiment=experiment)
    fabricate_run("torch", 1, experiment=experiment)

    groups = sorted(selected(experiment)["group"].unique())

    assert groups == ["keras (backend=jax)", "keras (backend=tensorflow)", "torch"]


def test_variants_form_groups_and_the_cost_of_determinism_is_reported_apart(experiment: str) -> None:
    variants = {
        "default": ({"deterministic": True, "channels_last": False}, 3.0),
        "nondeterministic": ({"deterministic": False, "channels_last": False}, 1.5),
        "tuned": ({"deterministic": False, "channels_last": True}, 1.0),
    }
    for variant, (knobs, epoch_time_s) in variants.items():
        for seed in range(2):
            params = {"variant": variant, "precision": "bf16", **knobs}
            fabricate_run("torch", seed, experiment=experiment, epoch_time_s=epoch_time_s, params=params)
    fabricate_run("keras", 0, experiment=experiment, params={"variant": "default", "deterministic": True})
    chosen = selected(experiment)
    # The knobs a variant sets are implied by its name.
    assert sorted(chosen["group"].unique()) == [
        "keras",
        "torch (variant=default)",
        "torch (variant=nondeterministic)",
        "torch (variant=tuned)",
    ]
    costs = report.determinism_costs(report.per_run_table(chosen, runs.load_histories(chosen)))
    # Only default vs nondeterministic differ in determinism alone (tuned also changes channels_last).
    (cost,) = costs.itertuples(index=False)
    assert (cost.framework, cost.deterministic, cost.nondeterministic) == (
        "torch",
        "torch (variant=default)",
        "torch (variant=nondeterministic)",
    )
    assert cost.low <= cost.ratio == pytest.approx(2.0, rel=0.06) and cost.ratio <= cost.high
    lines = "\n".join(report._determinism_lines(costs))
    assert "torch (variant=default) / torch (variant=nondeterministic)" in lines
    assert "not measured" in report._determinism_lines(costs.iloc[0:0])[0]


def test_best_run_per_group_has_the_lowest_validation_loss(experiment: str) -> None:
    worse = fabricate_run("keras", 0, experiment=experiment, val_floor=0.3)
    better = fabricate_run("keras", 1, experiment=experiment, val_floor=0.1)
    fabricate_run("torch", 0, experiment=experiment)

    best = runs.best_per_group(selected(experiment))

    assert list(best["group"]) == ["keras", "torch"]
    assert best.loc[best["group"] == "keras", "run_id"].item() == better != worse


def test_different_datasets_are_refused_naming_runs_and_digests(experiment: str) -> None:
    first = fabricate_run("keras", 0, experiment=experiment, digest="a" * 64)
    second = fabricate_run("torch", 0, experiment=experiment, digest="b" * 64)

    with pytest.raises(ValueError, match="different prepared datasets") as error:
        runs.require_single_dataset(selected(experiment))

    message = str(error.value)
    assert first in message and second in message and "aaaaaaaaaaaaaaaa" in message and "bbbbbbbbbbbbbbbb" in message


def test_report_has_a_column_per_framework_and_every_file(experiment: str, tmp_path: Path) -> None:
    for seed in range(3):
        fabricate_run("keras", seed, experiment=experiment, epoch_time_s=1.0)
        fabricate_run("torch", seed, experiment=experiment, epoch_time_s=2.0, epochs=5)
    chosen = selected(experiment)
    history = runs.load_histories(chosen)
    baseline = fft_baseline_of(0.2, 3.0, n_counted=10, n_failed=1, source="synthetic default")

    built = report.build_report(
        chosen, history, fake_evaluations(runs.best_per_group(chosen)), baseline, {"experiment": experiment}
    )
    written = report.write_report(built, tmp_path / "report")

    table = built.table
    assert list(table.columns) == ["unit", "keras", "torch"]
    assert table.loc["Runs (seeds)", "keras"] == 3
    assert table.loc["Average epochs trained", "torch"] == pytest.approx(5.0)
    assert table.loc["FFT baseline test loss (no learning)", "keras"] == 0.2
    # Steady state excludes the 3x slower first epoch.
    assert table.loc["Time per epoch (steady state)", "keras"] == pytest.approx(1.0, rel=0.06)
    assert table.loc["First epoch (warm-up)", "keras"] == pytest.approx(3.0, rel=0.06)
    assert np.isnan(table.loc["GPU memory, allocator peak", "keras"])
    comparison = built.comparisons.iloc[0]
    assert (comparison["a"], comparison["b"]) == ("keras", "torch")
    assert comparison["time_ratio_low"] <= comparison["time_ratio"] == pytest.approx(0.5, rel=0.06)
    assert comparison["time_ratio"] <= comparison["time_ratio_high"]
    names = {path.relative_to(tmp_path / "report").as_posix() for path in written}
    assert {"table.md", "table.csv", "table.html", "report.md", "statistics.csv", "comparisons.csv"} <= names
    assert (
        "determinism.csv" in names and "## The cost of determinism" in (tmp_path / "report" / "report.md").read_text()
    )
    assert {f"figures/{stem}.png" for stem in report.figures(built)} <= names
    markdown = (tmp_path / "report" / "table.md").read_text()
    assert "| quantity | keras | torch |" in re.sub(" +", " ", markdown)  # columns padded to one width
    assert "not measured" in markdown
    assert "![learning curves](figures/learning_curves.png)" in (tmp_path / "report" / "report.md").read_text()
    csv = pd.read_csv(tmp_path / "report" / "table.csv", index_col="quantity")
    assert float(csv.loc["Test loss of the best model", "torch"]) == pytest.approx(0.11)
    # The validation loss as a spread over the seeds, and verdicts only beyond it.
    losses = chosen.loc[chosen["group"] == "keras", tracking.BEST_VAL_LOSS]
    assert table.loc["Validation loss, mean over seeds", "keras"] == pytest.approx(losses.mean())
    assert table.loc["Validation loss, SD over seeds", "keras"] == pytest.approx(losses.std(ddof=1))
    assert table.loc["Validation loss, worst seed", "keras"] == pytest.approx(losses.max())
    summary = built.summary.set_index(["group", "metric"]).loc[("keras", tracking.BEST_VAL_LOSS)]
    assert (summary["mean"], summary["min"], summary["max"]) == pytest.approx(
        (losses.mean(), losses.min(), losses.max())
    )
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Verdicts" in text and "keras is 2.00x as fast as torch" in text
    assert comparison["loss_verdict"].startswith(f"{tracking.BEST_VAL_LOSS}: ") and comparison["loss_verdict"] in text


def test_the_html_report_embeds_every_figure_and_the_plots_people_look_for(experiment: str, tmp_path: Path) -> None:
    """report.html stands alone (MLflow's artifact viewer shows one file): every figure is inside it; and the
    figures include the groups on one axis, time against loss, memory over the run and predicted against true."""
    for seed in range(3):
        fabricate_run("keras", seed, experiment=experiment, epoch_time_s=1.0)
        fabricate_run("torch", seed, experiment=experiment, epoch_time_s=2.0)
    chosen = selected(experiment)
    rng = np.random.default_rng(0)
    truth = rng.uniform(10, 30, 50)
    predictions = pd.concat(
        [pd.DataFrame({"group": group, "seed": 0, "true": truth, "predicted": truth + rng.normal(0, 1, 50)})
         for group in ("keras", "torch")]
    )  # fmt: skip
    built = report.build_report(
        chosen, runs.load_histories(chosen), fake_evaluations(runs.best_per_group(chosen)), predictions=predictions
    )
    out = tmp_path / "report"
    written = {path.relative_to(out).as_posix() for path in report.write_report(built, out)}

    stems = set(report.figures(built))
    assert {"learning_curves_together", "time_vs_loss", "memory_over_run", "predicted_vs_true"} <= stems
    assert "predictions.csv" in written and "report.html" in written
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(stems)  # each figure, inside the page
    assert 'src="figures/' not in page and "<table>" in page and "<h2>Verdicts</h2>" in page
    assert "![" not in page  # rendered, not Markdown shown as text


def test_statistics_across_seeds_wait_for_enough_seeds(experiment: str, tmp_path: Path) -> None:
    for seed in range(2):
        fabricate_run("keras", seed, experiment=experiment)
        fabricate_run("torch", seed, experiment=experiment)
    chosen = selected(experiment)
    built = report.build_report(chosen, runs.load_histories(chosen), fake_evaluations(runs.best_per_group(chosen)))
    report.write_report(built, tmp_path)
    text = (tmp_path / "report.md").read_text()
    section = text.split("## Statistics across seeds")[1].split("##")[0]
    assert "Not computed: runs per group: keras 2, torch 2" in section and "at least 3 seeds" in section
    assert "Mann" not in section and "IQR" not in section


def test_the_report_reads_the_logged_times_and_older_runs_show_not_measured(experiment: str) -> None:
    fabricate_run("keras", 0, experiment=experiment, epoch_time_s=1.0)
    fabricate_run("torch", 0, experiment=experiment, epoch_time_s=2.0, logged_before_pass_times=True)
    chosen = selected(experiment)

    built = report.build_report(chosen, runs.load_histories(chosen), fake_evaluations(runs.best_per_group(chosen)))

    table = built.table
    assert table.loc["Time per training pass", "keras"] == pytest.approx(0.9)  # as logged, not recomputed
    assert table.loc["Time per validation pass", "keras"] == pytest.approx(0.1)
    assert np.isnan(table.loc["Time per training pass", "torch"]) and np.isnan(
        table.loc["Time per validation pass", "torch"]
    )
    assert table.loc["Time per epoch (steady state)", "torch"] == pytest.approx(2.0)
    lines = report.table_markdown(table).splitlines()
    (training_pass,) = [line for line in lines if line.startswith("| Time per training pass")]
    assert re.sub(" +", " ", training_pass) == "| Time per training pass | 0.9 s | not measured |"
    summary = built.summary.set_index(["group", "metric"])
    assert ("torch", tracking.MEDIAN_TRAIN_TIME_S) not in summary.index
    assert summary.loc[("keras", tracking.MEDIAN_TRAIN_TIME_S), "median"] == pytest.approx(0.9)


def test_a_run_without_a_metric_every_training_logs_is_refused(experiment: str) -> None:
    fabricate_run("keras", 0, experiment=experiment)
    raw = mlflow.search_runs(experiment_names=[experiment], output_format="pandas")
    assert isinstance(raw, pd.DataFrame)

    with pytest.raises(ValueError, match=f"without a {tracking.FIRST_EPOCH_TIME_S} metric"):
        runs.tidy(raw.drop(columns=[f"metrics.{tracking.FIRST_EPOCH_TIME_S}"]))


def test_a_metric_that_is_no_column_is_an_error_not_a_missing_value() -> None:
    frame = pd.DataFrame({"group": ["a", "b"], "time": [1.0, 2.0], "loss": [0.1, np.nan]})

    with pytest.raises(KeyError, match="'tme'"):
        stats.summarize(frame, ["time", "tme"])
    with pytest.raises(KeyError, match="'los'"):
        stats.compare_groups(frame, time_metric="time", loss_metric="los")
    # A column without a finite value in a group is "not measured" there.
    assert stats.summarize(frame, ["loss"])["group"].tolist() == ["a"]
    assert np.isnan(stats.compare_groups(frame, time_metric="time", loss_metric="loss")["p_value"].item())


def test_tables_are_written_by_pandas_with_every_cell_kept_whole() -> None:
    frame = pd.DataFrame({"a | b": ["x|y", "two\nlines"], "n": ["1e-3", "2"]})

    lines = report.markdown_table(frame).splitlines()

    assert len(lines) == 4  # header, rule, two rows: neither the pipe nor the newline split a cell
    assert "a \\| b" in lines[0] and "x\\|y" in lines[2] and "two lines" in lines[3]
    assert "1e-3" in lines[2]  # shown as given, not parsed into 0.001
    assert report.markdown_table(pd.DataFrame()) == "(no data)"
    table = pd.DataFrame({"unit": ["text"], "keras": ["<b>"]}, index=pd.Index(["Backend"], name="quantity"))
    html = report.table_html(table)
    assert 'class="dataframe thread-bench-comparison"' in html and "&lt;b&gt;" in html and "<th>keras</th>" in html


def test_plots_are_pure_functions_returning_figures(experiment: str) -> None:
    for seed in range(2):
        fabricate_run("keras", seed, experiment=experiment)
        fabricate_run("torch", seed, experiment=experiment)
    chosen = selected(experiment)
    history = runs.load_histories(chosen)
    per_run = report.per_run_table(chosen, history)
    backend_before = matplotlib.get_backend()

    made = [
        plots.learning_curves(history),
        plots.min_loss_vs_epochs(per_run),
        plots.training_times(per_run),
        plots.epochs_trained(per_run),
        plots.epoch_times(history),
        plots.losses(per_run),
        plots.memory(per_run),
        plots.prediction_time(fake_evaluations(runs.best_per_group(chosen))),
        plots.test_loss(
            fake_evaluations(runs.best_per_group(chosen)),
            baseline=fft_baseline_of(0.2, 3.0, n_counted=9, n_failed=1, source="x"),
        ),
    ]

    assert all(isinstance(figure, Figure) for figure in made)
    assert len(made[0].axes) >= 2  # a panel per framework
    assert matplotlib.get_backend() == backend_before


def test_median_iqr() -> None:
    assert stats.median_iqr([1.0, 2.0, 3.0, 4.0, np.nan]) == (2.5, 1.75, 3.25)
    assert all(np.isnan(stats.median_iqr([])))


def test_bootstrap_ratio_is_seeded_and_brackets_the_ratio() -> None:
    rng = np.random.default_rng(1)
    a, b = 2.0 + 0.1 * rng.standard_normal(10), 1.0 + 0.05 * rng.standard_normal(10)

    first = stats.bootstrap_ratio(a, b, seed=3)
    again = stats.bootstrap_ratio(a, b, seed=3)

    assert first == again
    assert first.low < first.ratio < first.high
    assert first.low > 1.8 and first.high < 2.2
    with pytest.raises(ValueError, match="needs values in both groups"):
        stats.bootstrap_ratio(a, [])
    # One run in a group: it enters as a constant; one in each: the interval collapses onto the ratio.
    single = stats.bootstrap_ratio(a, [1.0], seed=3)
    assert single.n_b == 1 and single.ratio == pytest.approx(a.mean()) and single.low < single.ratio < single.high
    assert stats.bootstrap_ratio([3.0], [1.5]) == stats.RatioInterval(2.0, 2.0, 2.0, stats.CONFIDENCE, 1, 1)


def test_mann_whitney_separated_groups() -> None:
    test = stats.mann_whitney([1.0, 2.0, 3.0, 4.0, 5.0], [6.0, 7.0, 8.0, 9.0, 10.0])

    assert test.statistic == 0.0 and test.effect == 0.0
    assert test.p_value == pytest.approx(2 / 252)  # exact: 2 of the C(10, 5) orderings are this extreme


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (7920.0, "s", "2.20 h"),
        (131.42, "s", "2.2 min"),
        (2.7, "s", "2.7 s"),
        (4.98 * 1024**3, "bytes", "4.98 GiB"),
        (0.01089, "loss", "10.89 × 10⁻³"),
        (float("nan"), "bytes", "not measured"),
        (60.1, "epochs", "60.1"),
    ],
)
def test_values_are_formatted_with_units(value: float, unit: str, text: str) -> None:
    assert report._format(value, unit) == text


@pytest.fixture(scope="module")
def smoke_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[PreparedDataset, DataConfig, Path]:
    root = tmp_path_factory.mktemp("data")
    config = resolve(DataConfig, "smoke", profiles=PROFILES)
    return ensure_prepared(config, root, workers=1).dataset, config, root


def run_params(config: DataConfig, dataset: PreparedDataset) -> dict[str, object]:
    """A training run's row as ``runs.tidy`` leaves it: the data params, as logged (strings)."""
    params = {f"params.{'data_seed' if k == 'seed' else k}": str(v) for k, v in dataclasses.asdict(config).items()}
    return {"run_id": "0" * 32, **params, f"params.{tracking.PARAM_DATASET_KEY}": dataset.manifest["key"]}


def test_dataset_is_found_in_the_data_root_or_rebuilt_from_the_params(
    store: str, smoke_dataset: tuple[PreparedDataset, DataConfig, Path], tmp_path: Path
) -> None:
    dataset, config, root = smoke_dataset
    run = run_params(config, dataset)

    found = runs.locate_dataset(run, dataset.digest, data_root=root)
    # One worker: for 12 patches, starting a process pool costs more than the work.
    rebuilt = runs.locate_dataset(run, dataset.digest, data_root=tmp_path / "elsewhere", workers=1)

    assert found.path == dataset.path
    assert rebuilt.digest == dataset.digest and rebuilt.path.is_relative_to(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match=r"--dataset .* has digest"):
        runs.locate_dataset(run, "f" * 64, dataset_dir=dataset.path)
    unknown = {**run, "params.source": str(tmp_path / "gone"), f"params.{tracking.PARAM_DATASET_KEY}": "nope"}
    with pytest.raises(FileNotFoundError, match=r"not found; tried: .*nope"):
        runs.locate_dataset(unknown, dataset.digest, data_root=root)


def test_a_damaged_dataset_is_passed_over_and_rebuilt(
    store: str, smoke_dataset: tuple[PreparedDataset, DataConfig, Path], tmp_path: Path
) -> None:
    import shutil

    dataset, config, _ = smoke_dataset
    root = tmp_path / "damaged-root"
    copy = root / "prepared" / dataset.path.name
    shutil.copytree(dataset.path, copy)
    images = copy / "train_images.npy"
    data = bytearray(images.read_bytes())
    data[-1] ^= 0xFF  # one flipped pixel: the content digest no longer matches
    images.write_bytes(bytes(data))

    found = runs.locate_dataset(run_params(config, dataset), dataset.digest, data_root=root, workers=1)

    assert found.digest == dataset.digest and found.path.is_relative_to(root)


def test_fft_baseline_uses_the_resolution_of_the_stored_images(
    smoke_dataset: tuple[PreparedDataset, DataConfig, Path],
) -> None:
    dataset, config, root = smoke_dataset
    corpus_dir = synthetic_corpus_dir(config, root)

    from_index, source = fft.stored_px_per_cm(dataset, dataset.test, corpus_dir)
    fallback, fallback_source = fft.stored_px_per_cm(dataset, dataset.test, None)
    baseline = workloads.get("thread_density").baseline(dataset, config, root)  # type: ignore[misc]

    # 200 px/cm sub-patches of crop_px=200 resized to input_size=32 px.
    assert np.allclose(from_index, 200.0 * config.input_size / config.crop_px)
    assert np.array_equal(from_index, fallback)
    assert (source, fallback_source) == ("corpus index", "synthetic default")
    assert fft.corpus_dir(config, root) == corpus_dir
    assert baseline.metrics[thread_density_keys.FFT_FAILED_SUBPATCHES] < len(dataset.test)
    assert baseline.note.endswith("resolution from the corpus index.")
    assert np.isfinite(baseline.test_loss) and baseline.metrics[thread_density_keys.FFT_TEST_MAE_THREADS_PER_CM] > 0


def test_evaluation_and_analysis_runs_log_only_names_defined_in_tracking(
    experiment: str, smoke_dataset: tuple[PreparedDataset, DataConfig, Path]
) -> None:
    dataset, _, _ = smoke_dataset
    n_test = len(dataset.test)
    evaluation = evaluate.Evaluation(
        predictions=np.full(n_test, 12.0, dtype=np.float32),
        test_loss=0.1,
        scores={thread_density_keys.TEST_MAE_THREADS_PER_CM: 1.2},
        predict_time_s=0.2,
        predict_first_time_s=0.5,
        predict_samples_per_s=n_test / 0.2,
        n_test=n_test,
        device="cpu",
    )
    source = {"run_id": "0" * 32, "framework": "torch", "backend": "torch", "group": "torch", "seed": 0}
    source |= {"dataset_digest": dataset.digest, tracking.BEST_VAL_LOSS: 0.1}
    settings = analysis_cli.AnalysisSettings(study="s1")
    extra = {tracking.PARAM_REPEATS: settings.repeats, tracking.PARAM_BATCH_SIZE: settings.batch_size}

    run_id = evaluate.log_evaluation(
        source,
        evaluation,
        dataset.test,
        uri="runs:/0/model",
        experiment=experiment,
        study="s1",
        workload=workloads.get("thread_density"),
        extra_params=extra,
    )

    assert names_not_in_tracking(mlflow.get_run(run_id)) == set()
    baseline = fft_baseline_of(0.2, 3.0, n_counted=10, n_failed=1, source="synthetic default")
    analysis_names = set(analysis_cli._analysis_params(settings, experiment, DIGEST))
    analysis_names |= set(analysis_cli._analysis_metrics(4, 2, baseline))
    assert analysis_names - tracking_names() == set()
