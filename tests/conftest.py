"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest


@pytest.fixture
def tracking_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private MLflow store (SQLite + artifacts under tmp_path); the working directory is tmp_path too."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


def tracking_constants() -> dict[str, str]:
    """Every MLflow name ``thread_bench.tracking`` defines, by constant: its upper-case string constants, but
    the role values (tag values) and the default experiment."""
    from thread_bench import tracking

    return {
        name: value
        for name, value in vars(tracking).items()
        if name.isupper() and isinstance(value, str) and not name.startswith(("ROLE_", "DEFAULT_"))
    }


def tracking_names() -> set[str]:
    """The constants' names, and the names ``thread_bench.tracking``'s functions make from them (a class's
    accuracy, a framework's ping-pong scores)."""
    from thread_bench import frameworks, tracking

    made = {tracking.class_accuracy(split, label) for split in ("val", "test") for label in range(10)}
    quantities = [
        value for name, value in vars(tracking).items() if name.startswith("PINGPONG_") and "TEMPLATE" not in name
    ]
    made |= {tracking.pingpong_metric(framework, quantity) for framework in frameworks.NAMES for quantity in quantities}
    return set(tracking_constants().values()) | made


def names_not_in_tracking(run: mlflow.entities.Run) -> set[str]:
    """The params, metrics and tags ``run`` carries that ``thread_bench.tracking`` does not name, leaving out
    MLflow's own (``mlflow.*`` tags, ``system/*`` metrics)."""
    logged = set(run.data.params) | {m for m in run.data.metrics if not m.startswith("system/")}
    logged |= {tag for tag in run.data.tags if not tag.startswith("mlflow.")}
    return logged - tracking_names()


def make_fake_prepared(tmp_path: Path, n_train: int, n_val: int, n_test: int, size: int) -> Path:
    """A tiny prepared dataset in the layout of ``thread_bench.data.prepared`` (random stripes whose
    frequency is the label, so a model can learn something); returns its directory."""
    import json

    import numpy as np

    from thread_bench.data import prepared

    directory = tmp_path / "fake-prepared"
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    columns = np.arange(size)
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        labels = rng.uniform(6.0, 23.0, n).astype(np.float32)
        phases = rng.uniform(0, 2 * np.pi, n)
        waves = np.sin(2 * np.pi * labels[:, None] * columns[None, :] / (4.0 * size) * 4 + phases[:, None])
        images = np.repeat(((waves + 1) * 127.5).astype(np.uint8)[:, None, :], size, axis=1)
        arrays = {
            "images": images,
            "labels": labels,
            "density_h": rng.uniform(6.0, 23.0, n).astype(np.float32),
            "patch_index": np.arange(n, dtype=np.int32),
        }
        for name, array in arrays.items():
            np.save(directory / prepared.array_filename(split, name), array)
    manifest = {
        "format_version": prepared.FORMAT_VERSION,
        "key": "fake",
        "seed": 0,
        "settings": {"seed": 0, "input_size": size, "subpatches_per_patch": 1},
        "splits": {"train": {"n": n_train}, "val": {"n": n_val}, "test": {"n": n_test}},
    }
    manifest["content_digest"] = prepared.content_digest(directory, manifest)
    (directory / prepared.MANIFEST).write_text(json.dumps(manifest))
    return directory
