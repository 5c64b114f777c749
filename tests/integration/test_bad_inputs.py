"""Bad numbers stop a command before any run: parameters (finite, in range, seeds in [0, 2**32)) and labels."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import mlflow
import numpy as np
import pytest

from conftest import make_fake_prepared
from thread_bench import cpu_isa, keras_train, torch_train
from thread_bench.config import TrainConfig
from thread_bench.data import prepared
from thread_bench.workloads.thread_density.config import DataConfig, ModelConfig

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("cls", "values", "message"),
    [
        (TrainConfig, {"learning_rate": NAN}, "learning_rate must be a finite number, got nan"),
        (TrainConfig, {"learning_rate": INF}, "learning_rate must be a finite number, got inf"),
        (TrainConfig, {"min_delta": NAN}, "min_delta must be a finite number, got nan"),
        (TrainConfig, {"min_delta": INF}, "min_delta must be a finite number, got inf"),
        (TrainConfig, {"adam_epsilon": -1e-7}, "adam_epsilon must be > 0"),
        (TrainConfig, {"learning_rate": 1e300}, r"learning_rate must fit in float32, as the frameworks hold it"),
        (TrainConfig, {"adam_epsilon": 1e-50}, r"adam_epsilon must fit in float32, .* got 1e-50"),
        (TrainConfig, {"device_data_fraction": NAN}, "device_data_fraction must be a finite number"),
        (TrainConfig, {"seed": -1}, r"seed must be an integer in \[0, 2\*\*32\), got -1"),
        (TrainConfig, {"seed": 2**32}, r"seed must be an integer in \[0, 2\*\*32\), got 4294967296"),
        (TrainConfig, {"seed": 1.5}, r"seed must be an integer in \[0, 2\*\*32\), got 1.5"),
        (DataConfig, {"seed": -1}, r"the dataset's seed \(--data_seed of a training, --seed of preprocessing\)"),
        (DataConfig, {"max_rotation_deg": NAN}, "max_rotation_deg must be a finite number"),
        (DataConfig, {"val_fraction": INF}, "val_fraction must be a finite number"),
        (ModelConfig, {"batchnorm_eps": NAN}, "batchnorm_eps must be a finite number"),
        (ModelConfig, {"batchnorm_eps": 0.0}, "batchnorm_eps must be > 0"),
        (ModelConfig, {"batchnorm_eps": 1e-40}, "batchnorm_eps must fit in float32"),
        (ModelConfig, {"dropout": "0.1"}, "dropout must be a finite number, got '0.1'"),
    ],
)
def test_non_finite_and_out_of_range_values_are_refused(cls: type, values: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cls(**values)


def test_the_largest_seed_is_accepted() -> None:
    assert TrainConfig(seed=2**32 - 1).seed == 2**32 - 1
    assert DataConfig(seed=0).seed == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--learning_rate", "nan"], "learning_rate must be a finite number, got nan"),
        (["--learning_rate", "inf"], "learning_rate must be a finite number, got inf"),
        (["--min_delta", "nan"], "min_delta must be a finite number, got nan"),
        (["--seed", "-1"], r"seed must be an integer in [0, 2**32), got -1"),
        (["--seed", str(2**32)], r"seed must be an integer in [0, 2**32), got 4294967296"),
        (["--data_seed", "-1"], r"the dataset's seed (--data_seed of a training"),
        (["--adam_epsilon", "0"], "adam_epsilon must be > 0"),
        (["--learning_rate", "1e300"], "learning_rate must fit in float32, as the frameworks hold it (a magnitude"),
    ],
)
def test_bad_numbers_stop_a_training_before_any_run(
    tracking_store: str, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _refused_before_any_run(torch_train.main, argv, message, tracking_store, capsys)


def _refused_before_any_run(
    main: Callable[[list[str]], int], argv: list[str], message: str, store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The entry point exits 2 with ``message`` on one line, before it even opens the tracking store."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--profile", "smoke", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not Path(store.removeprefix("sqlite:///")).exists(), "the store was not even opened"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cpu_isa", "avx3"], "cpu_isa must be one of ['native', 'avx512', 'avx2', 'sse41'], got 'avx3'"),
        (["--cpu_isa", "avx512"], "cpu_isa=avx512: this processor lacks avx512f, avx512bw, avx512vl"),
        (["--cpu_isa", "avx2", "--precision", "bf16"], "cpu_isa=avx2 with precision=bf16: TensorFlow's oneDNN"),
    ],
)
def test_an_instruction_set_the_run_cannot_have_stops_it_before_any_run(
    tracking_store: str,
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On an AVX2 processor (so the refusal does not depend on this one's)."""
    avx2_processor = frozenset(cpu_isa.CAPS["avx2"].flags + cpu_isa.CAPS["sse41"].flags)
    monkeypatch.setattr(cpu_isa, "processor_flags", lambda: avx2_processor)
    monkeypatch.setattr(cpu_isa, "is_x86", lambda: True)
    _refused_before_any_run(keras_train.main, argv, message, tracking_store, capsys)


@pytest.mark.parametrize("label", [0.0, float("nan")])
def test_a_given_dataset_with_an_impossible_label_is_refused(
    tracking_store: str, tmp_path: Path, label: float, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = make_fake_prepared(tmp_path, 16, 8, 8, 32)
    labels = np.load(directory / "train_labels.npy")
    labels[3] = label
    np.save(directory / "train_labels.npy", labels)  # the digest no longer matches either: fixed below
    manifest = prepared.read_manifest(directory)
    del manifest["content_digest"]
    manifest["content_digest"] = prepared.content_digest(directory, manifest)
    (directory / prepared.MANIFEST).write_text(json.dumps(manifest))

    with pytest.raises(SystemExit) as exit_info:
        torch_train.main(["--profile", "smoke", "--dataset", str(directory)])

    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "train_labels.npy: 1 value(s) outside the plausible 1-100 threads/cm, the first at index 3" in err
    assert "diverged" not in err and err.count("\n") == 1
    assert not Path(tracking_store.removeprefix("sqlite:///")).exists(), "the store was not even opened"


def test_a_diverging_training_ends_in_one_line_and_a_failed_run(
    tracking_store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A learning rate float32 holds but the model cannot take: the loss turns NaN in the first epoch."""
    directory = make_fake_prepared(tmp_path, 16, 8, 8, 32)

    status = torch_train.main(["--profile", "smoke", "--dataset", str(directory), "--learning_rate", "1e30"])

    assert status == 1
    ours = [line for line in capsys.readouterr().err.splitlines() if "mlflow" not in line]  # MLflow's INFO lines
    assert ours == [
        "python -m thread_bench.torch_train: train_loss is nan at epoch 0: training diverged (try a lower "
        "learning_rate); the run is marked FAILED"
    ]
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert run.info.status == "FAILED"


def test_a_damaged_image_found_by_a_preparation_worker_is_one_line_and_a_failed_run(
    tracking_store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The dataset is built by worker processes: a damaged PNG there used to reach a training's user as 73 lines
    (a RemoteTraceback and two tracebacks) where the preprocessing entry point gave one."""
    from corpus_helpers import write_grid_corpus

    corpus = write_grid_corpus(tmp_path / "corpus", n_paintings=4, patches_per_painting=2)  # 8 tasks: a pool
    (corpus / "p2_0.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # a header, then nothing
    argv = ["--profile", "smoke", "--source", str(corpus), "--subpatches_per_patch", "2", "--experiment", "damaged"]
    assert torch_train.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("python -m thread_bench.torch_train: error: ")
    assert "p2_0.png is not a readable PNG/TIFF image" in lines[-1] and lines[-1].endswith("the run is marked FAILED")
    assert not any("Traceback" in line for line in lines)
    runs = mlflow.search_runs(experiment_names=["damaged"], output_format="list")
    assert runs and {run.info.status for run in runs} == {"FAILED"}
